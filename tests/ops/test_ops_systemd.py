"""The units in systemd/ and sevd.systemd: `systemd-analyze verify`, the sysusers entry,
what the units promise each other and the daemon, sd_notify addressing, and socket
activation — through `systemd-socket-activate` and through a socket held across a restart,
as sevd.socket holds it."""

from __future__ import annotations

import configparser
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ops_support import ROOT, Client, Sevd, short_tmpdir, spawn, wait_for

from sevd import systemd
from sevd.config import default_dirs

UNITS = ROOT / "systemd"
ACTIVATE = shutil.which("systemd-socket-activate")
ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture
def base() -> Iterator[Path]:
    b = short_tmpdir()
    yield b
    shutil.rmtree(b, ignore_errors=True)


def unit(name: str) -> configparser.RawConfigParser:
    p = configparser.RawConfigParser(strict=False, delimiters=("=",))
    p.optionxform = str  # type: ignore[assignment,method-assign]
    p.read(UNITS / name)
    return p


# -- the unit files --------------------------------------------------------------------------


def installed_copy(dest: Path, **replace: str) -> None:
    """The units as installed, with ExecStart= at this environment's entry point."""
    entry = Path(sys.executable).parent / "sevd"
    assert entry.exists(), f"{entry}: install the package (pip install -e .)"
    for name in ("sevd.service", "sevd.socket"):
        text = (UNITS / name).read_text()
        text = text.replace("ExecStart=/usr/local/bin/sevd", f"ExecStart={entry}")
        for old, new in replace.items():
            text = text.replace(old, new)
        (dest / name).write_text(text)


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (scripts/test-deps.sh)")
def test_systemd_analyze_verify(base: Path) -> None:
    installed_copy(base)
    r = subprocess.run([str(ANALYZE), "verify", "sevd.socket", "sevd.service"], cwd=base,
                       capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (scripts/test-deps.sh)")
def test_systemd_analyze_verify_can_fail(base: Path) -> None:
    # The counter-test: verify does catch a broken unit, so the test above means something.
    installed_copy(base, **{"Type=notify": "Type=notifyy"})
    r = subprocess.run([str(ANALYZE), "verify", "sevd.socket", "sevd.service"], cwd=base,
                       capture_output=True, text=True, timeout=60)
    assert "notifyy" in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
def test_sysusers_creates_the_user_and_group(base: Path) -> None:
    (base / "etc").mkdir()
    r = subprocess.run(["systemd-sysusers", f"--root={base}", str(UNITS / "sevd.sysusers")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    passwd = (base / "etc" / "passwd").read_text().splitlines()
    user = next(line.split(":") for line in passwd if line.startswith("sevd:"))
    assert user[5:] == ["/var/lib/sevd", "/usr/sbin/nologin"]
    assert int(user[2]) < 1000  # a system user
    assert any(line.startswith("sevd:") for line in (base / "etc" / "group").read_text()
               .splitlines())


def test_units_agree_with_each_other_and_the_daemon() -> None:
    service, sock = unit("sevd.service"), unit("sevd.socket")
    s, k = service["Service"], sock["Socket"]
    assert s["Type"] == "notify"
    assert s["User"] == s["Group"] == k["SocketGroup"] == "sevd"
    assert "u     sevd" in (UNITS / "sevd.sysusers").read_text()
    # The socket unit listens where the daemon's default control socket is under systemd.
    runtime, _ = default_dirs({"RUNTIME_DIRECTORY": f"/run/{s['RuntimeDirectory']}"}, 999)
    assert k["ListenStream"] == f"{runtime}/sevd.sock"
    assert k["FileDescriptorName"] == "control"
    assert (k["Accept"], k["SocketMode"]) == ("no", "0660")
    assert int(k["Backlog"]) >= 1000
    # A stop must not delete the directory holding the socket the socket unit listens on.
    assert s["RuntimeDirectoryPreserve"] == "yes"
    assert "StateDirectory" in s and "WatchdogSec" in s
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
                       "RestrictAddressFamilies": "AF_UNIX"}.items():
        assert s[key] == value, key
    assert "@system-service" in (UNITS / "sevd.service").read_text()
    # PrivateUsers= would map every peer to the overflow uid and defeat SO_PEERCRED checks.
    assert "PrivateUsers" not in s


# -- sd_notify addressing --------------------------------------------------------------------


def test_notifier_addresses(base: Path) -> None:
    path = str(base / "n")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    n = systemd.Notifier(path)
    assert n.send("READY=1", "STATUS=ok")
    assert rx.recv(100) == b"READY=1\nSTATUS=ok"
    abstract = f"@sevd-notify-{base.name}"
    rx2 = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx2.bind("\0" + abstract[1:])
    rx2.settimeout(2)
    assert systemd.Notifier(abstract).send("WATCHDOG=1")
    assert rx2.recv(100) == b"WATCHDOG=1"
    rx.close()
    rx2.close()
    assert not n.send("READY=1")  # the listener is gone: no exception, just False
    n.close()
    for off in (None, "", "vsock:2:1234", "relative/path"):
        quiet = systemd.Notifier(off)
        assert not quiet.enabled and not quiet.send("READY=1")


def test_watchdog_interval() -> None:
    pid = os.getpid()
    assert systemd.watchdog_interval({}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "junk"}) is None
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "2000000",
                                      "WATCHDOG_PID": str(pid)}) == 2.0
    assert systemd.watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None


def test_supervisor_period() -> None:
    quiet = systemd.Notifier(None)
    s = systemd.Supervisor(lambda: "", notifier=quiet)
    assert s.watchdog is None and s.period == systemd.STATUS_PERIOD
    s.watchdog = 0.5
    assert s.period == 0.25  # half the watchdog timeout, as sd_watchdog_enabled(3) advises
    s.watchdog = 30
    assert s.period == systemd.STATUS_PERIOD  # and STATUS= stays fresh


def test_listen_fds_ignores_another_pid_and_unsets() -> None:
    env = {"LISTEN_PID": "1", "LISTEN_FDS": "1", "LISTEN_FDNAMES": "control", "OTHER": "x"}
    assert systemd.listen_fds(env) == []
    assert env == {"OTHER": "x"}  # never passed on to anything this process starts


# -- socket activation -----------------------------------------------------------------------

# Runs `python -m sevd ...` with the descriptor argv[1] as fd 3 and LISTEN_* set for the
# exec'd process (whose pid is this one's), as systemd passes a socket unit's socket.
EXEC_WITH_FD = """
import os, sys
fd = int(sys.argv[1])
os.dup2(fd, 3)
if fd != 3:
    os.close(fd)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES=sys.argv[2])
os.execv(sys.argv[3], sys.argv[3:])
"""

PROBE = """
import json, os, sys
from sevd import systemd
items = systemd.listen_fds()
out = {"left": sorted(k for k in os.environ if k.startswith("LISTEN_")),
       "items": [[i.name, i.path, i.sock.fileno(), os.get_inheritable(i.sock.fileno())]
                 for i in items]}
try:
    s = systemd.take_socket(items, sys.argv[1], sys.argv[2])
    out["took"] = None if s is None else s.getsockname()
except systemd.ActivationError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def probe(held: socket.socket, fdname: str, want_name: str, want_path: str) -> dict[str, object]:
    import json

    r = subprocess.run([sys.executable, "-c", EXEC_WITH_FD, str(held.fileno()), fdname,
                        sys.executable, "-c", PROBE, want_name, want_path],
                       pass_fds=(held.fileno(),), capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    result: dict[str, object] = json.loads(r.stdout)
    return result


def listener(path: Path, kind: int = socket.SOCK_STREAM) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, kind)
    s.bind(str(path))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    return s


def test_take_socket_by_name_or_path(base: Path) -> None:
    held = listener(base / "ctl.sock")
    try:
        out = probe(held, "control", "control", "/elsewhere")
        assert out["left"] == []
        assert out["items"] == [["control", str(base / "ctl.sock"), 3, False]]  # CLOEXEC
        assert out["took"] == str(base / "ctl.sock")
        assert probe(held, "unknown", "control", str(base / "ctl.sock"))["took"] == \
            str(base / "ctl.sock")
        assert probe(held, "other", "control", "/elsewhere")["took"] is None
    finally:
        held.close()


def test_take_socket_refuses_the_wrong_kind(base: Path) -> None:
    dgram = listener(base / "d.sock", socket.SOCK_DGRAM)
    try:
        out = probe(dgram, "control", "control", "/x")
        assert "is not a listening unix stream socket" in str(out["error"])
    finally:
        dgram.close()


def activated(base: Path, path: Path, *args: str, fdname: str | None = "control") -> Sevd:
    """sevd under systemd-socket-activate, which execs it on the first connection."""
    assert ACTIVATE is not None
    cmd = [ACTIVATE, "-l", str(path)] + ([f"--fdname={fdname}"] if fdname else [])
    d = spawn(base, *args, cmd=cmd, wait=False)
    # Not path.exists(): a previous run's file stays; the activator says when it listens.
    wait_for(lambda: f"Listening on {path}" in d.log(), d.proc, d.log)
    return d


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")
def test_systemd_socket_activate(base: Path) -> None:
    path = base / "act.sock"  # outside the runtime dir, as /run/sevd.sock could be
    d = activated(base, path)
    try:
        activator_pid = d.proc.pid
        with Client.negotiated(str(path)) as c:  # this connection starts the daemon
            assert "return" in c.cmd("query-version")
            info = c.cmd("guest-add", {"name": "vm1"})["return"]
        assert info["socket"] == d.guest_socket("vm1")  # the rest it binds itself
        with Client.negotiated(d.guest_socket("vm1")) as g:
            assert "return" in g.cmd("query-status")
        assert d.proc.pid == activator_pid  # exec'd in place, LISTEN_PID matched
        assert f"listening on {path}" in d.stdout()
        assert "inherited from the service manager (fd 3)" in d.log()
        assert not os.path.exists(d.control)  # no second control socket was bound
        inode = os.stat(path).st_ino
    finally:
        assert d.stop() == 0, d.log()
    # The socket belongs to the activator (systemd): still there, the same file.
    assert os.stat(path).st_ino == inode
    assert not os.path.exists(d.guest_socket("vm1"))
    # A second activation, this time matched by path (no LISTEN_FDNAMES), adopts it again.
    d2 = activated(base, path, "--socket", str(path), fdname=None)
    try:
        with Client.negotiated(str(path)) as c:
            assert "return" in c.cmd("query-version")
        assert "inherited from the service manager" in d2.log()
    finally:
        assert d2.stop() == 0, d2.log()


@pytest.mark.skipif(ACTIVATE is None, reason="systemd-socket-activate missing")
def test_an_unmatched_inherited_socket_is_named_in_the_log(base: Path) -> None:
    path = base / "other.sock"
    d = activated(base, path, fdname="metrics")
    try:
        c = socket.socket(socket.AF_UNIX)
        c.connect(str(path))  # starts the daemon, which does not want this socket
        wait_for(lambda: os.path.exists(d.control), d.proc, d.log)
        log = d.log()
        assert "ignoring inherited socket fd 3 (name metrics" in log
        with Client.negotiated(d.control) as ctl:  # it bound its own control socket
            assert "return" in ctl.cmd("query-version")
        c.close()
    finally:
        assert d.stop() == 0, d.log()


def test_restart_through_a_held_socket(base: Path) -> None:
    # What sevd.socket does across `systemctl restart sevd`: the listening socket stays
    # open in the service manager, so clients that connect while no daemon runs are queued
    # and served by the next one.
    path = base / "held.sock"
    held = listener(path)
    held.listen(2048)

    def run() -> Sevd:
        cmd = [sys.executable, "-c", EXEC_WITH_FD, str(held.fileno()), "control"]
        d = spawn(base, cmd=cmd, wait=False, pass_fds=(held.fileno(),))
        wait_for(lambda: "listening on" in d.stdout(), d.proc, d.log)
        return d

    first = run()
    try:
        with Client.negotiated(str(path)) as c:
            assert "return" in c.cmd("query-version")
    finally:
        assert first.stop() == 0, first.log()
    assert path.exists()
    waiting = Client(str(path))  # connects although no daemon runs: queued in the backlog
    second = run()
    try:
        assert "QMP" in waiting.message()
        assert waiting.cmd("qmp_capabilities") == {"return": {}}
        assert "return" in waiting.cmd("query-version")
        waiting.close()
    finally:
        assert second.stop() == 0, second.log()
        held.close()
