"""Benchmark of HMP memory inspection through the debug path, beside a real QEMU.

One run, one client for every target: a minimal synchronous QMP client (a unix socket, one
JSON line out, JSON lines in until the reply) so that the client costs the same everywhere.

* **xp**: ``human-monitor-command`` ``xp /512xg 0x100000`` (4 KiB as 256 lines of two
  giants: a 14,592-character reply) in calls/s, on

  - sevd: a debuggable SEV guest (policy 0x0) launched with the owner's session, booted and
    stopped; 0x100000 is its private heartbeat page, so every call decrypts it through
    DBG_DECRYPT;
  - QEMU: ``qemu-system-x86_64`` 256 MiB, q35/TCG, ``-S``; plain memory (QEMU does no
    decryption), the same reply size;
  - floor: a trivial responder in this process that answers the negotiation and sends
    QEMU's exact reply, which is what the client and the socket cost by themselves.

  Target: sevd >= 2x QEMU's rate.
* **pmemsave**: 64 MiB from guest-physical 0 to a file, in MiB/s (median of
  ``--repeats``): sevd decrypts every private page of the range (16,384 pages but the
  2 MiB shared window), QEMU copies plain RAM of a 256 MiB guest. Target: sevd >= 0.5x
  QEMU's rate. The sevd dump is checked to hold the heartbeat in plaintext. Beside it,
  ``memsave`` of 64 MiB at virtual 0x100000 (no target): sevd translates through the
  firmware's page tables (C-bit cleared), QEMU at ``-S`` has paging off.

``--profile`` adds a cProfile of the ``xp`` command run in process (the daemon's own
command layer, dispatcher to reply bytes), the top functions by own time.

Run from the repository root::

    python bench/hmp.py [--seconds 3] [--rounds 3] [--repeats 5] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import identity

ROOT = Path(__file__).resolve().parents[1]
XP = "xp /512xg 0x100000"
PMEM_SIZE = 64 << 20
XP_TARGET = 2.0
PMEM_TARGET = 0.5
QEMU = shutil.which("qemu-system-x86_64")


# -- the client -------------------------------------------------------------------------------

class Client:
    """A synchronous QMP client: the same code path for every target."""

    def __init__(self, path: str, timeout: float = 60) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb", buffering=1 << 16)
        json.loads(self.file.readline())  # greeting
        self.execute("qmp_capabilities")

    def execute(self, name: str, arguments: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if arguments is not None:
            msg["arguments"] = arguments
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = json.loads(self.file.readline())
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"{name}: {reply['error']}")
            return reply["return"]

    def hmp(self, line: str) -> str:
        return str(self.execute("human-monitor-command", {"command-line": line}))

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def wait_connect(path: str, proc: subprocess.Popen[bytes] | None, what: str) -> Client:
    deadline = time.monotonic() + 30
    while True:
        try:
            return Client(path)
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise SystemExit(f"{what} is not listening on {path}") from None
            time.sleep(0.02)


# -- the targets ------------------------------------------------------------------------------


@contextmanager
def sevd_guest(work: Path) -> Iterator[tuple[Client, Path]]:
    """A daemon with a booted, stopped, debuggable SEV guest; its client and dump folder."""
    from qemu.qmp import QMPClient
    from sevowner.session import create_session

    state, dumps = work / "state", work / "dumps"
    state.mkdir(mode=0o700)
    ident = state / "platform-milan.identity"
    ident.write_bytes(identity("milan"))
    ident.chmod(0o600)
    log = open(work / "sevd.log", "wb")  # noqa: SIM115 - owned by the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "sevd", "--runtime-dir", str(work / "run"), "--state-dir",
         str(state), "--set", f'paths.dump_dir="{dumps}"', "--log-level", "warning"],
        stdout=log, stderr=log, cwd=work)

    async def launch() -> str:
        control = str(work / "run" / "sevd.sock")
        wait_connect(control, proc, "sevd").close()
        c = QMPClient("bench")
        await c.connect(control)
        caps: Any = await c.execute("query-sev-capabilities")
        session = create_session(base64.b64decode(caps["pdh"]), 0x0)
        info: Any = await c.execute("guest-add", {"name": "bench", "sev-guest": {
            "policy": 0x0, "cbitpos": caps["cbitpos"], "reduced-phys-bits": 1,
            "dh-cert": session.godh_b64, "session": session.session_b64}})
        await c.disconnect()
        return str(info["socket"])

    try:
        client = wait_connect(asyncio.run(launch()), proc, "the guest socket")
        client.execute("cont")
        client.execute("stop")  # the heartbeat stays still: every call reads the same page
        yield client, dumps
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


@contextmanager
def qemu(work: Path) -> Iterator[Client]:
    assert QEMU is not None
    sock = str(work / "qemu.sock")
    proc = subprocess.Popen(
        [QEMU, "-machine", "q35,accel=tcg", "-m", "256", "-display", "none", "-nodefaults",
         "-nic", "none", "-S", "-qmp", f"unix:{sock},server=on,wait=off"],
        cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        client = wait_connect(sock, proc, "QEMU")
        yield client
        client.close()
    finally:
        proc.kill()
        proc.wait(30)


@contextmanager
def floor(path: str, reply_text: str) -> Iterator[Client]:
    """A trivial responder: greeting, negotiation, then the same canned reply per line."""
    greeting = (json.dumps({"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22},
                                                "package": ""}, "capabilities": []}})
                + "\r\n").encode()
    canned = (json.dumps({"return": reply_text}) + "\r\n").encode()
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(greeting)
            first = True
            for _line in lines:
                conn.sendall(b'{"return": {}}\r\n' if first else canned)
                first = False

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    client = Client(path)
    try:
        yield client
    finally:
        client.close()
        server.close()
        t.join(5)


# -- measurements -----------------------------------------------------------------------------

def rate(client: Client, line: str, seconds: float, warmup: int = 200) -> float:
    """Calls per second of `line`, back to back for `seconds`."""
    for _ in range(warmup):
        client.hmp(line)
    n = 0
    start = time.perf_counter()
    end = start + seconds
    while True:
        for _ in range(50):
            client.hmp(line)
        n += 50
        now = time.perf_counter()
        if now >= end:
            return n / (now - start)


def dump_rate(client: Client, path: str, repeats: int, cmd: str = "pmemsave",
              val: int = 0) -> float:
    """Median MiB/s of a 64 MiB `cmd` (pmemsave or memsave) from `val` to `path`."""
    speeds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        client.execute(cmd, {"val": val, "size": PMEM_SIZE, "filename": path})
        speeds.append((PMEM_SIZE >> 20) / (time.perf_counter() - t0))
    return statistics.median(speeds)


def profile_xp(calls: int = 3000, top: int = 18) -> str:
    """cProfile of the xp command in process, through the same command layer."""
    import cProfile
    import io
    import pstats

    from sevowner.session import create_session

    from sevd.commands.app import App
    from sevd.commands.schema import Schema
    from sevd.daemon import builtin_firmware
    from sevd.domain.platform import SevPlatform

    async def run() -> str:
        app = App(Schema())
        app.platform = SevPlatform(identity("milan"), profile="milan")
        app.builtin_firmware = builtin_firmware()

        async def call(dispatcher: Any, name: str, args: dict[str, Any] | None) -> Any:
            reply = dispatcher.dispatch(None, name, args, False)
            return reply if isinstance(reply, str) else await reply

        # dispatch() gives the JSON text of the returned value
        caps = json.loads(await call(app.control, "query-sev-capabilities", None))
        session = create_session(base64.b64decode(caps["pdh"]), 0x0)
        await call(app.control, "guest-add", {"name": "p", "sev-guest": {
            "policy": 0, "cbitpos": caps["cbitpos"], "reduced-phys-bits": 1,
            "dh-cert": session.godh_b64, "session": session.session_b64}})
        guest = app.slots["p"].dispatcher
        await call(guest, "cont", None)
        await call(guest, "stop", None)
        args = {"command-line": XP}
        for _ in range(200):
            guest.dispatch(None, "human-monitor-command", args, False)
        t0 = time.perf_counter()
        for _ in range(calls):
            guest.dispatch(None, "human-monitor-command", args, False)
        per_call = (time.perf_counter() - t0) / calls * 1e6
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(calls):
            guest.dispatch(None, "human-monitor-command", args, False)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
        return f"in process, no profiler: {per_call:.1f} us per xp call\n" + out.getvalue()

    return asyncio.run(run())


def machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    qemu_version = "not installed"
    if QEMU is not None:
        qemu_version = subprocess.run([QEMU, "--version"], capture_output=True, text=True,
                                      check=True).stdout.splitlines()[0]
    return (f"{os.cpu_count()} CPUs, {model}; Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}; {qemu_version}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="per xp measurement")
    ap.add_argument("--rounds", type=int, default=3,
                    help="xp measurements per target, alternating; the median is kept")
    ap.add_argument("--repeats", type=int, default=5, help="pmemsave runs per target")
    ap.add_argument("--profile", action="store_true", help="cProfile the xp command")
    opts = ap.parse_args()
    if QEMU is None:
        print("qemu-system-x86_64 is not installed: no baseline", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="svh", dir="/tmp"))
    try:
        (work / "sevd").mkdir()
        with sevd_guest(work / "sevd") as (sevd, dumps), qemu(work) as q:
            ours, theirs = sevd.hmp(XP), q.hmp(XP)
            assert ours.startswith("0000000000100000: 0x3130424844564553 "), ours[:80]
            assert len(ours) == len(theirs), (len(ours), len(theirs))
            with floor(str(work / "floor.sock"), theirs) as fl:
                xp: dict[str, list[float]] = {"sevd": [], "qemu": [], "floor": []}
                for _ in range(opts.rounds):
                    for name, client in (("sevd", sevd), ("qemu", q), ("floor", fl)):
                        xp[name].append(rate(client, XP, opts.seconds))
            xp_rate = {k: statistics.median(v) for k, v in xp.items()}

            sevd_file, qemu_file = dumps / "bench.bin", work / "qemu-bench.bin"
            pm_sevd = dump_rate(sevd, "bench.bin", opts.repeats)
            dump = sevd_file.read_bytes()
            assert len(dump) == PMEM_SIZE and dump[0x100000:0x100008] == b"SEVDHB01"
            pm_qemu = dump_rate(q, str(qemu_file), opts.repeats)
            assert qemu_file.stat().st_size == PMEM_SIZE
            # memsave through the identity map (sevd) / with paging off (QEMU at -S)
            vm_sevd = dump_rate(sevd, "bench.bin", opts.repeats, "memsave", 0x100000)
            assert sevd_file.read_bytes()[:8] == b"SEVDHB01"
            vm_qemu = dump_rate(q, str(qemu_file), opts.repeats, "memsave", 0x100000)
            sevd_file.unlink()
            qemu_file.unlink()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    xp_ratio = xp_rate["sevd"] / xp_rate["qemu"]
    pm_ratio = pm_sevd / pm_qemu
    print(f"machine: {machine()}")
    print(f"command: python bench/hmp.py --seconds {opts.seconds:g} --rounds {opts.rounds} "
          f"--repeats {opts.repeats}")
    print()
    print("| measurement | sevd | QEMU 7.2 | sevd / QEMU | target |")
    print("|---|---|---|---|---|")
    print(f"| `{XP}` calls/s (SEV, decrypted / plain) | {xp_rate['sevd']:,.0f} "
          f"({1e6 / xp_rate['sevd']:.0f} us) | {xp_rate['qemu']:,.0f} "
          f"({1e6 / xp_rate['qemu']:.0f} us) | {xp_ratio:.2f}x | >= {XP_TARGET:g}x "
          f"{'met' if xp_ratio >= XP_TARGET else 'MISSED'} |")
    print(f"| `pmemsave` 64 MiB, MiB/s (SEV, decrypted / plain) | {pm_sevd:,.0f} | "
          f"{pm_qemu:,.0f} | {pm_ratio:.2f}x | >= {PMEM_TARGET:g}x "
          f"{'met' if pm_ratio >= PMEM_TARGET else 'MISSED'} |")
    print(f"| `memsave` 64 MiB at 0x100000, MiB/s (SEV through the walk / plain) | "
          f"{vm_sevd:,.0f} | {vm_qemu:,.0f} | {vm_sevd / vm_qemu:.2f}x | - |")
    print()
    print(f"floor (trivial responder, QEMU's reply, same client): {xp_rate['floor']:,.0f} "
          f"calls/s ({1e6 / xp_rate['floor']:.0f} us)")
    print("xp rounds (calls/s): " + "; ".join(
        f"{k} " + ", ".join(f"{v:,.0f}" for v in vals) for k, vals in xp.items()))
    if opts.profile:
        print()
        print(profile_xp())
    return 0 if xp_ratio >= XP_TARGET and pm_ratio >= PMEM_TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
