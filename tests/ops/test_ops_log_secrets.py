"""No guest secret in any log line at any level (issue #3): a full SEV launch — session from
files and inline, measurement, secret injection (also a tampered one), resume, attestation,
removal — runs against a daemon at --log-level debug, and everything it wrote is searched
for the guest owner's TEK and TIK and the secret's plaintext, in every spelling a log line
could carry them (raw text, hex, base64, Python bytes repr).

Not covered from outside: the VEK never leaves the simulated firmware, so it cannot be
searched for here; the firmware's own tests own that guarantee.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import shutil
import sys
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ops_support import ROOT, Sevd, short_tmpdir, spawn
from qemu.qmp import ExecuteError, QMPClient

SECRET = b"ops-test disk key: 6f1c2a9e"
GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")


def _sev_support() -> ModuleType:
    # tests/sev's helpers, loaded by path under a name of their own (every test folder's
    # modules share one namespace).
    name = "sevd_tests_sev_support_for_ops"
    if name not in sys.modules:
        sys.path.insert(0, str(ROOT / "tests" / "sev"))
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "sev" /
                                                      "sev_support.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def spellings(secret: bytes) -> set[str]:
    """How `secret` could appear in a line of text."""
    out = {secret.hex(), secret.hex().upper(), base64.b64encode(secret).decode(),
           base64.urlsafe_b64encode(secret).decode(), repr(secret)[2:-1]}
    if secret.isascii() and secret.decode().isprintable():
        out.add(secret.decode())
    # A base64 of a longer buffer that starts with the secret starts the same way (minus
    # the last, partial group).
    out.add(base64.b64encode(secret).decode()[:len(secret) // 3 * 4])
    return {s for s in out if len(s) >= 8}


async def launch(d: Sevd, sev: ModuleType, fw: Path) -> tuple[list[bytes], str]:
    """Run the owner's side twice; return the secrets used and a guest name (a marker)."""
    secrets: list[bytes] = []
    control = QMPClient("ops")
    await control.connect(d.control)
    try:
        for i, as_files in enumerate((True, False)):
            owner = await sev.Owner.for_host(control, policy=0x1)
            secrets += [owner.session.tek, owner.session.tik]
            name = f"secretlog{i}"
            files = owner.write_files(fw, name) if as_files else None
            info: Any = await control.execute("guest-add", {
                "name": name, "sev-guest": owner.sev_guest(files=files)})
            g = QMPClient("g")
            await g.connect(info["socket"])
            try:
                measure: Any = await g.execute("query-sev-launch-measure")
                measurement = sev.unb64(measure["data"])
                packet = owner.secret(measurement, {GUID: SECRET})
                # A tampered packet first: its refusal is logged somewhere, with no payload.
                bad: dict[str, Any] = dict(packet.qmp_arguments())
                header = bytearray(base64.b64decode(bad["packet-header"]))
                header[-1] ^= 1
                bad["packet-header"] = base64.b64encode(bytes(header)).decode()
                with pytest.raises(ExecuteError):
                    await g.execute("sev-inject-launch-secret", bad)
                await g.execute("sev-inject-launch-secret", packet.qmp_arguments())
                await g.execute("cont")
                await g.execute("human-monitor-command", {"command-line": "info sev"})
                await g.execute("query-sev-attestation-report",
                                {"mnonce": base64.b64encode(b"\x01" * 16).decode()})
            finally:
                await g.disconnect()
            await control.execute("guest-remove", {"name": name})
    finally:
        await control.disconnect()
    return secrets, "secretlog1"


def test_no_secret_in_debug_logs() -> None:
    sev = _sev_support()
    base = short_tmpdir()
    try:
        fw = sev.firmware_dir(base)
        d = spawn(base, "--log-level", "debug", "--set", f'paths.firmware_dirs=["{fw}"]')
        try:
            secrets, marker = asyncio.run(launch(d, sev, fw))
        finally:
            assert d.stop() == 0, d.log()
        text = d.log() + d.stdout()
        # The log did cover the flow (else finding nothing would prove nothing).
        assert marker in text and "DEBUG" in text
        for secret in [SECRET, *secrets]:
            assert len(secret) >= 16
            for form in spellings(secret):
                assert form not in text, f"a secret appears in the log as {form!r}"
        # The search itself finds what is there.
        assert any(form in text for form in spellings(marker.encode()))
    finally:
        shutil.rmtree(base, ignore_errors=True)
