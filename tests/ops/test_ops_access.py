"""SO_PEERCRED access control: with `[access] allow_uids/allow_gids` set, a peer outside
them gets no greeting, one QMP error line, and the end of the connection, and the refusal is
logged with its pid and uid; root is always allowed. Tests run as root, so the refused
client is a forked child that drops to nobody (65534) before it connects."""

from __future__ import annotations

import json
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import NOBODY, Client, Sevd, drop_privileges, short_tmpdir, spawn

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to fork other uids")


def as_nobody(path: str, uid: int = NOBODY, gid: int = NOBODY) -> tuple[int, bytes, bool]:
    """Connect to `path` as uid/gid in a forked child: (child pid, first line, closed after)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            drop_privileges(uid, gid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            s.connect(path)
            data = b""
            while b"\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
            line, _, rest = data.partition(b"\n")
            s.settimeout(0.5)
            try:
                closed = not rest and s.recv(4096) == b""
            except TimeoutError:
                closed = False
            os.write(w, json.dumps([line.decode() + "\n", closed]).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed to connect"
    line, closed = json.loads(out)
    return pid, line.encode(), closed


@pytest.fixture
def base() -> Iterator[Path]:
    b = short_tmpdir()
    b.chmod(0o755)  # nobody must reach the sockets: only the access list may stop it
    yield b
    shutil.rmtree(b, ignore_errors=True)


def start(base: Path, *args: str) -> Sevd:
    d = spawn(base, "--set", "qmp.socket_mode=0666", *args)
    for sub in (d.run_dir, d.run_dir / "guests"):
        sub.chmod(0o755)
    return d


DENIED = (b'{"error": {"class": "GenericError", "desc": "Access denied: uid 65534 is not '
          b'allowed on this socket"}}\r\n')


def test_refused_peer_gets_one_error_line_and_is_logged(base: Path) -> None:
    d = start(base, "--set", "access.allow_uids=[1000]")
    try:
        pid, line, closed = as_nobody(d.control)
        assert (line, closed) == (DENIED, True)
        d.wait_log(f"refused connection on {d.control} from pid={pid} uid={NOBODY} "
                   f"gid={NOBODY}")
        # Guest sockets enforce the same list.
        with Client.negotiated(d.control) as c:  # root is always allowed
            c.cmd("guest-add", {"name": "vm1"})
        _, line, closed = as_nobody(d.guest_socket("vm1"))
        assert (line, closed) == (DENIED, True)
    finally:
        assert d.stop() == 0


@pytest.mark.parametrize("setting", ["access.allow_uids=[1000, 65534]",
                                     "access.allow_gids=[65534]"])
def test_listed_peer_is_greeted(base: Path, setting: str) -> None:
    d = start(base, "--set", setting)
    try:
        _, line, closed = as_nobody(d.control)
        assert b'"QMP"' in line and not closed
        assert "refused" not in d.log()
    finally:
        assert d.stop() == 0


def test_gid_list_does_not_admit_other_groups(base: Path) -> None:
    d = start(base, "--set", "access.allow_gids=[100]")
    try:
        _, line, closed = as_nobody(d.control)
        assert (line, closed) == (DENIED, True)
        _, line, _ = as_nobody(d.control, uid=NOBODY, gid=100)  # primary group 100: allowed
        assert b'"QMP"' in line
    finally:
        assert d.stop() == 0


def test_no_lists_means_the_file_mode_decides(base: Path) -> None:
    d = start(base)
    try:
        _, line, _ = as_nobody(d.control)
        assert b'"QMP"' in line
    finally:
        assert d.stop() == 0
    # With the default 0660 mode (owner root, group root) nobody cannot even connect.
    d = spawn(base)
    try:
        d.run_dir.chmod(0o755)
        with pytest.raises(AssertionError, match="failed to connect"):
            as_nobody(d.control)
    finally:
        assert d.stop() == 0
