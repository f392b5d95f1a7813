"""The pre-attestation flow driven only with sevctl, as a shell user or a CI script would:
session files (virtee-compatible), `guest add --session`, the measurement checked with
`measurement build`, a secret built with `secret build` and injected over `sevctl qmp`, then
`cont`. The owner's key files stay 0600 and never reach the daemon."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from sevd.daemon import builtin_firmware

DaemonProc = Any  # tests/conftest.py DaemonProc (conftest modules shadow each other by name)


def sevctl(daemon: DaemonProc, cwd: Path, *args: str) -> str:
    r = subprocess.run([sys.executable, "-m", "sevctl", "--socket", daemon.control, *args],
                       capture_output=True, text=True, timeout=30, cwd=cwd,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


def test_whole_flow_with_sevctl(daemon: DaemonProc, tmp_path: Path) -> None:
    caps = json.loads(sevctl(daemon, tmp_path, "--json", "qmp", "query-sev-capabilities"))
    (tmp_path / "pdh.cert").write_bytes(base64.b64decode(caps["pdh"]))
    sevctl(daemon, tmp_path, "session", "--name", "vm1", "pdh.cert", "0")
    for f in ("vm1_tek.bin", "vm1_tik.bin"):
        assert (tmp_path / f).stat().st_mode & 0o777 == 0o600

    sevctl(daemon, tmp_path, "guest", "add", "vm1", "--session", "vm1", "--policy", "0")
    sev = json.loads(sevctl(daemon, tmp_path, "--json", "qmp", "--guest", "vm1", "query-sev"))
    assert (sev["state"], sev["policy"]) == ("launch-secret", 0)
    blob = json.loads(sevctl(daemon, tmp_path, "--json", "qmp", "--guest", "vm1",
                             "query-sev-launch-measure"))["data"]

    # The owner rebuilds the measurement from the firmware it expects and the guest's nonce.
    (tmp_path / "fw.fd").write_bytes(builtin_firmware())
    expected = sevctl(daemon, tmp_path, "measurement", "build",
                      "--api-major", str(sev["api-major"]), "--api-minor", str(sev["api-minor"]),
                      "--build-id", str(sev["build-id"]), "--policy", "0", "--tik",
                      "vm1_tik.bin", "--launch-measure-blob", blob, "--firmware", "fw.fd")
    assert expected.strip() == blob

    (tmp_path / "secret.txt").write_text("hunter2")
    sevctl(daemon, tmp_path, "secret", "build", "--tik", "vm1_tik.bin", "--tek", "vm1_tek.bin",
           "--launch-measure-blob", blob,
           "--secret", "736869e5-84f0-4973-92ec-06879ce3da0b:secret.txt", "hdr.bin", "data.bin")
    # virtee writes the packet as binary files; QMP takes them as base64.
    header = (tmp_path / "hdr.bin").read_bytes()
    assert len(header) == 52
    args = {"packet-header": base64.b64encode(header).decode(),
            "secret": base64.b64encode((tmp_path / "data.bin").read_bytes()).decode()}
    sevctl(daemon, tmp_path, "qmp", "--guest", "vm1", "sev-inject-launch-secret",
           json.dumps(args))
    sevctl(daemon, tmp_path, "qmp", "--guest", "vm1", "cont")
    sev = json.loads(sevctl(daemon, tmp_path, "--json", "qmp", "--guest", "vm1", "query-sev"))
    assert sev["state"] == "running"
    # The secret is in guest memory in plaintext for the guest (debug path: policy 0 allows
    # it), and the hypervisor's view of the same bytes is ciphertext.
    text = sevctl(daemon, tmp_path, "hmp", "--guest", "vm1", "xp /32c 0x807000")
    assert "'h' 'u' 'n' 't' 'e' 'r' '2'" in text
    raw = json.loads(sevctl(daemon, tmp_path, "--json", "qmp", "--guest", "vm1",
                            "x-sevd-query-memory", json.dumps({"gpa": 0x807000, "size": 4096})))
    assert b"hunter2" not in base64.b64decode(raw["data"])
    assert not any(Path(daemon.state_dir).rglob("*tek*"))
    assert os.listdir(tmp_path)  # the owner's files stay with the owner
