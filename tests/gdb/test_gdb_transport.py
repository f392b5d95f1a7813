"""sevd.transports.gdb: QEMU's gdbserver device strings, the unix and loopback-TCP
listeners, one debugger at a time, closing."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gdb_fakes import FakeTarget

from sevd.protocol.gdb import encode_packet
from sevd.transports.gdb import (
    DEFAULT_DEVICE,
    GdbDevice,
    GdbDeviceError,
    parse_gdbserver_device,
    serve_gdb,
)


@pytest.fixture
def short_dir() -> Path:
    # unix socket paths are limited to 107 bytes
    return Path(tempfile.mkdtemp(prefix="sg", dir="/tmp"))


@pytest.mark.parametrize(("device", "parsed"), [
    (None, GdbDevice("tcp", host="127.0.0.1", port=1234)),
    ("tcp::1234", GdbDevice("tcp", host="127.0.0.1", port=1234)),
    ("tcp:127.0.0.1:4321", GdbDevice("tcp", host="127.0.0.1", port=4321)),
    ("tcp:localhost:1", GdbDevice("tcp", host="127.0.0.1", port=1)),
    ("tcp:LOCALHOST:1", GdbDevice("tcp", host="127.0.0.1", port=1)),
    ("tcp:127.1.2.3:1", GdbDevice("tcp", host="127.1.2.3", port=1)),
    ("tcp:[::1]:1234", GdbDevice("tcp", host="::1", port=1234)),
    ("tcp::0", GdbDevice("tcp", host="127.0.0.1", port=0)),
    ("tcp::1234,server=on,wait=off,nodelay=on", GdbDevice("tcp", host="127.0.0.1",
                                                          port=1234)),
    ("unix:/run/x.sock", GdbDevice("unix", path="/run/x.sock")),
    ("unix:/run/x.sock,server=on,wait=off", GdbDevice("unix", path="/run/x.sock")),
    ("unix:rel.sock,server,nowait", GdbDevice("unix", path="rel.sock")),
    ("none", None),
])
def test_parse(device: str | None, parsed: GdbDevice | None) -> None:
    assert parse_gdbserver_device(device) == parsed


def test_default_and_text_forms() -> None:
    assert DEFAULT_DEVICE == "tcp::1234"
    assert str(GdbDevice("tcp", host="127.0.0.1", port=5)) == "tcp:127.0.0.1:5"
    assert str(GdbDevice("tcp", host="::1", port=5)) == "tcp:[::1]:5"
    assert str(GdbDevice("unix", path="/a b")) == "unix:/a b"


@pytest.mark.parametrize(("device", "message"), [
    ("", "gdbstub: missing connection string"),
    ("tcp:0.0.0.0:1234", "loopback only"),
    ("tcp:192.168.1.10:1234", "loopback only"),
    ("tcp:[::]:1234", "loopback only"),
    ("tcp:example.com:1234", "loopback only"),
    ("tcp:1234", "needs a TCP port"),
    ("tcp:127.0.0.1:", "needs a TCP port"),
    ("tcp:127.0.0.1:65536", "needs a TCP port"),
    ("tcp:127.0.0.1:http", "needs a TCP port"),
    ("tcp::1234,server=off", "only listens"),
    ("tcp::1234,reconnect=1", "only listens"),
    ("tcp::1234,tls-creds=x", "unsupported option"),
    ("unix:", "names no socket path"),
    ("stdio", "unsupported device"),
    ("1234", "unsupported device"),
    ("udp::1234", "unsupported device"),
])
def test_refused(device: str, message: str) -> None:
    with pytest.raises(GdbDeviceError, match=message):
        parse_gdbserver_device(device)


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    payload: bytes, ack: bool = True) -> bytes:
    writer.write(encode_packet(payload))
    await writer.drain()
    assert await reader.readexactly(1) == b"+"
    data = await reader.readuntil(b"#")
    await reader.readexactly(2)
    if ack:
        writer.write(b"+")
    return data[1:-1]


async def _closed_by_server(reader: asyncio.StreamReader) -> bool:
    # A socket closed with unread input (our ack) may reset instead of ending cleanly.
    try:
        return await asyncio.wait_for(reader.read(), 5) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
async def unix_server(short_dir: Path) -> AsyncIterator[tuple[str, FakeTarget]]:
    target = FakeTarget()
    target.map(0x100000, b"hello")
    path = str(short_dir / "g.sock")
    server = await serve_gdb(f"unix:{path},server=on,wait=off", lambda: target)
    try:
        yield path, target
    finally:
        server.close()
        await server.wait_closed()


async def test_unix_listener(unix_server: tuple[str, FakeTarget]) -> None:
    path, _target = unix_server
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # the stub reads guest plaintext
    reader, writer = await asyncio.open_unix_connection(path)
    assert await _exchange(reader, writer, b"m100000,5") == b"hello".hex().encode()
    assert await _exchange(reader, writer, b"?") == b"T05thread:01;"
    writer.close()


async def test_one_debugger_at_a_time(unix_server: tuple[str, FakeTarget]) -> None:
    path, _ = unix_server
    r1, w1 = await asyncio.open_unix_connection(path)
    assert await _exchange(r1, w1, b"?") == b"T05thread:01;"
    r2, w2 = await asyncio.open_unix_connection(path)
    assert await asyncio.wait_for(r2.read(), 5) == b""  # closed at once
    w2.close()
    assert await _exchange(r1, w1, b"qC") == b"QC01"  # the first one is undisturbed
    w1.close()
    await w1.wait_closed()
    await asyncio.sleep(0.05)
    r3, w3 = await asyncio.open_unix_connection(path)  # free again
    assert await _exchange(r3, w3, b"?") == b"T05thread:01;"
    w3.close()


async def test_detach_closes_the_connection(unix_server: tuple[str, FakeTarget]) -> None:
    path, _ = unix_server
    reader, writer = await asyncio.open_unix_connection(path)
    assert await _exchange(reader, writer, b"D", ack=False) == b"OK"
    assert await _closed_by_server(reader)
    writer.close()


async def test_close_removes_the_socket_and_drops_the_debugger(short_dir: Path) -> None:
    path = str(short_dir / "c.sock")
    server = await serve_gdb(f"unix:{path}", FakeTarget)
    reader, writer = await asyncio.open_unix_connection(path)
    assert await _exchange(reader, writer, b"?") == b"T05thread:01;"
    assert server.connected
    server.close()
    await server.wait_closed()
    assert await _closed_by_server(reader)
    assert not os.path.exists(path)
    writer.close()


async def test_stale_socket_is_replaced_but_files_are_not(short_dir: Path) -> None:
    path = str(short_dir / "s.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # the file stays; nobody listens
    async with await serve_gdb(f"unix:{path}", FakeTarget) as server:
        assert server.address == f"unix:{path}"
        with pytest.raises(GdbDeviceError, match="in use"):
            await serve_gdb(f"unix:{path}", FakeTarget)
    regular = short_dir / "file"
    regular.write_text("x")
    with pytest.raises(GdbDeviceError, match="not a socket"):
        await serve_gdb(f"unix:{regular}", FakeTarget)
    with pytest.raises(GdbDeviceError, match="limit"):
        await serve_gdb("unix:/tmp/" + "x" * 120, FakeTarget)
    with pytest.raises(GdbDeviceError, match="'none' stops"):
        await serve_gdb("none", FakeTarget)


async def test_tcp_listener_on_loopback() -> None:
    async with await serve_gdb("tcp::0", FakeTarget) as server:
        assert server.device.host == "127.0.0.1"
        assert server.device.port > 0
        assert server.address == f"tcp:127.0.0.1:{server.device.port}"
        reader, writer = await asyncio.open_connection("127.0.0.1", server.device.port)
        sock = writer.get_extra_info("socket")
        assert sock.getpeername()[0] == "127.0.0.1"
        assert await _exchange(reader, writer, b"qAttached") == b"1"
        writer.close()


async def test_tcp_port_in_use_is_a_clear_error() -> None:
    async with await serve_gdb("tcp::0", FakeTarget) as server:
        with pytest.raises(GdbDeviceError, match=r"cannot listen on tcp:127\.0\.0\.1:"):
            await serve_gdb(f"tcp:127.0.0.1:{server.device.port}", FakeTarget)


async def test_a_failing_target_factory_closes_only_that_connection(
        short_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def factory() -> FakeTarget:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("debug refused")
        return FakeTarget()

    path = str(short_dir / "f.sock")
    async with await serve_gdb(f"unix:{path}", factory):
        reader, writer = await asyncio.open_unix_connection(path)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert "debug refused" in caplog.text
        reader, writer = await asyncio.open_unix_connection(path)
        assert await _exchange(reader, writer, b"?") == b"T05thread:01;"
        writer.close()


async def test_packets_split_across_reads(unix_server: tuple[str, FakeTarget]) -> None:
    path, _ = unix_server
    reader, writer = await asyncio.open_unix_connection(path)
    for byte in encode_packet(b"m100000,5"):
        writer.write(bytes((byte,)))
        await writer.drain()
        await asyncio.sleep(0)
    assert await reader.readexactly(1) == b"+"
    data = await reader.readuntil(b"#")
    assert data == b"$" + b"hello".hex().encode() + b"#"
    writer.close()


async def test_a_client_that_does_not_read_is_not_served_without_bound(
        unix_server: tuple[str, FakeTarget]) -> None:
    path, target = unix_server
    _reader, writer = await asyncio.open_unix_connection(path)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = encode_packet(b"m100000,800")  # 4 KiB of hex per reply
    sent = 0
    for _ in range(2000):  # ~8 MiB of replies if all were served
        writer.write(request)
        sent += 1
        try:
            await asyncio.wait_for(writer.drain(), 0.5)
        except TimeoutError:
            break  # the server stopped reading: back-pressure reached us
    reads = sum(1 for c in target.calls if c[0] == "read")
    assert reads < 1000, (reads, sent)
    writer.transport.abort()
