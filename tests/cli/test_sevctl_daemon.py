"""sevctl against a real daemon: guest verbs, raw QMP and HMP, --json, exit statuses,
socket discovery ($SEVD_SOCKET, --socket), and the verbs that fetch from sevd (export,
verify without --sev)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DaemonProc = Any  # tests/conftest.py DaemonProc (conftest modules shadow each other by name)

SEVCTL = [sys.executable, "-m", "sevctl"]


def run(daemon: DaemonProc, *args: str, socket: bool = True, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--socket", daemon.control] if socket else []
    return subprocess.run([*SEVCTL, *extra, *args], capture_output=True, text=True, timeout=30,
                          env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL)


def test_guest_verbs_and_human_output(daemon: DaemonProc) -> None:
    r = run(daemon, "guest", "add", "vm1", "--memory", "512M", "--cpus", "2")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"guest vm1 added (prelaunch), monitor socket {daemon.guest_socket('vm1')}\n"
    r = run(daemon, "guest", "list")
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "MEMORY", "CPUS", "SOCKET"]
    assert lines[1].split() == ["vm1", "prelaunch", "512", "MiB", "2", daemon.guest_socket("vm1")]
    r = run(daemon, "hmp", "--guest", "vm1", "info status")
    assert r.stdout == "VM status: paused (prelaunch)\n"
    assert run(daemon, "qmp", "--guest", "vm1", "cont").returncode == 0
    r = run(daemon, "--json", "qmp", "--guest", "vm1", "query-status")
    assert json.loads(r.stdout) == {"running": True, "singlestep": False, "status": "running"}
    r = run(daemon, "guest", "remove", "vm1")
    assert r.stdout == "guest vm1 removed\n"
    assert json.loads(run(daemon, "--json", "guest", "list").stdout) == []


def test_errors_are_one_line_and_nonzero(daemon: DaemonProc, tmp_path: Path) -> None:
    run(daemon, "guest", "add", "vm1")
    r = run(daemon, "guest", "add", "vm1")
    assert r.returncode == 1
    assert r.stderr == "sevctl: guest-add: GenericError: Guest 'vm1' already exists\n"
    r = run(daemon, "qmp", "no-such-command")
    assert (r.returncode, r.stderr) == (
        1, "sevctl: no-such-command: CommandNotFound: The command no-such-command has not "
           "been found\n")
    r = run(daemon, "qmp", "query-status", "{not json")
    assert r.returncode == 1 and r.stderr.startswith("sevctl: arguments are not JSON")
    r = run(daemon, "hmp", "--guest", "nope", "info status")
    assert (r.returncode, r.stderr) == (1, "sevctl: no guest named 'nope'\n")
    r = subprocess.run([*SEVCTL, "--socket", str(tmp_path / "none.sock"), "guest", "list"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2
    assert r.stderr.startswith(f"sevctl: cannot connect to {tmp_path / 'none.sock'}")
    assert len(r.stderr.splitlines()) == 1


def test_socket_from_environment(daemon: DaemonProc) -> None:
    r = run(daemon, "hmp", "info version", socket=False, env={"SEVD_SOCKET": daemon.control})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("9.2.0sevd ")


def test_export_and_verify_from_sevd(daemon: DaemonProc, tmp_path: Path) -> None:
    r = run(daemon, "export", "--full", str(tmp_path / "chain.bin"))
    assert r.returncode == 0, r.stderr
    certs = json.loads(run(daemon, "--json", "qmp", "query-sev-certificates").stdout)
    expected = b"".join(base64.b64decode(certs[k])
                        for k in ("pdh", "pek", "oca", "cek", "ask", "ark"))
    assert (tmp_path / "chain.bin").read_bytes() == expected
    r = run(daemon, "verify")
    assert r.returncode == 0, r.stderr
    assert [line.split()[1] if line.startswith(" ") else line.split()[0]
            for line in r.stdout.splitlines()[:6]] == ["PDH", "PEK", "OCA", "CEK", "ASK", "ARK"]


@pytest.mark.parametrize("verb", ["export", "firmware export"])
def test_exports_write_files(daemon: DaemonProc, tmp_path: Path, verb: str) -> None:
    out = tmp_path / "out.bin"
    r = run(daemon, *verb.split(), str(out))
    assert r.returncode == 0, r.stderr
    data = out.read_bytes()
    if verb == "export":
        assert len(data) == 4 * 2084
    else:
        from sevd.daemon import builtin_firmware
        assert data == builtin_firmware()
