"""sevctl's virtee-compatible platform verbs against a real daemon: `ok` (virtee's report
layout, values from the simulated CPUID), `show`, `rotate` (the PDH changes), `generate` +
`provision` (ownership taken with the owner's OCA, verified through the chain), `reset`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

DaemonProc = Any  # tests/conftest.py DaemonProc (conftest modules shadow each other by name)


def sevctl(daemon: DaemonProc, *args: str, cwd: Path | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "sevctl", "--socket", daemon.control, *args],
                       capture_output=True, text=True, timeout=30, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    if check:
        assert r.returncode == 0, (args, r.stderr)
    return r


def test_ok_reports_the_simulated_cpuid(daemon: DaemonProc) -> None:
    lines = sevctl(daemon, "ok").stdout.splitlines()
    assert lines[0] == "[ PASS ] - AMD CPU"
    assert "[ PASS ]     - C-bit location: 51" in lines
    assert "[ PASS ]     - Number of encrypted guests supported simultaneously: 509" in lines
    assert "[ PASS ]     - Minimum ASID value for SEV-enabled, SEV-ES disabled guest: 100" \
        in lines
    assert "[ PASS ]     - Encrypted State (SEV-ES)" in lines
    assert "[ SKIP ]     - Encrypted State (SEV-ES)" in sevctl(daemon, "ok", "sev").stdout


def test_ok_fails_without_a_daemon(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "sevctl", "--socket", str(tmp_path / "no.sock"),
                        "ok"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "[ FAIL ] - AMD CPU" in r.stdout and "[ SKIP ]   - Microcode support" in r.stdout
    assert r.stderr == "sevctl: One or more tests in sevctl-ok reported a failure\n"


def test_show(daemon: DaemonProc) -> None:
    assert sevctl(daemon, "show", "version").stdout == "1.51.3\n"
    assert sevctl(daemon, "show", "guests").stdout == "0\n"
    assert sevctl(daemon, "show", "flags").stdout == "es\n"
    ident = sevctl(daemon, "show", "identifier").stdout.strip()
    assert len(ident) == 128 and ident == ident.upper()


def pdh(daemon: DaemonProc) -> str:
    caps = json.loads(sevctl(daemon, "--json", "qmp", "query-sev-capabilities").stdout)
    return str(caps["pdh"])


def test_rotate_generate_provision_reset(daemon: DaemonProc, tmp_path: Path) -> None:
    before = pdh(daemon)
    sevctl(daemon, "rotate")
    assert pdh(daemon) != before

    sevctl(daemon, "generate", "oca.cert", "oca.key", cwd=tmp_path)
    assert (tmp_path / "oca.key").stat().st_mode & 0o777 == 0o600
    sevctl(daemon, "provision", "oca.cert", "oca.key", cwd=tmp_path)
    assert sevctl(daemon, "show", "flags").stdout == "owned\nes\n"
    # The platform's chain now runs through the owner's OCA, and verifies with it.
    out = sevctl(daemon, "verify", "--oca", "oca.cert", cwd=tmp_path).stdout
    assert out.splitlines()[2].split()[1] == "OCA"
    r = sevctl(daemon, "provision", "oca.cert", "oca.key", cwd=tmp_path, check=False)
    assert r.returncode == 1 and "Platform is already owned" in r.stderr

    sevctl(daemon, "reset")
    assert sevctl(daemon, "show", "flags").stdout == "es\n"
