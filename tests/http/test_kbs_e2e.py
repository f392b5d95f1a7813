"""End to end, three processes: sevd, the key broker (`sevctl owner serve`), and a client
doing exactly what Kata's pre-attestation did (reference/users.md §2.2): read the host's
certificate chain, GetBundle, write the GODH and session files under the launch id, start
the VM paused with them, query-sev-launch-measure and query-sev, compute the expected digest,
GetSecret, sev-inject-launch-secret without gpa, cont. And the invalid-measurement path:
the broker refuses with a JSON error and the guest gets nothing."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from http_support import ROOT, free_port, short_tmpdir, start_daemon
from qemu.qmp import QMPClient
from sevkbs.client import KbsClient, KbsRefused

from sevd.formats.ovmf import sev_secret_area
from sevd.formats.secret import parse_secret_table

BUILTIN = ROOT / "sevd" / "data" / "sevd-builtin.fd"
KATA_GUID = uuid.UUID("e6f5a162-d67f-4750-a67c-5d065f2a9910")  # guest_pre_attestation_secret_guid
KEYSET = {"key-id-1": "aGVsbG8gZnJvbSB0aGUgb3duZXI=", "key-id-2": "bm90IGZvciB0aGUgaG9zdA=="}


@dataclass
class Setup:
    base: Path
    daemon: Any
    broker: subprocess.Popen[str]
    kbs: str

    @property
    def kata_dir(self) -> Path:
        return self.base / "kata"


def broker_config(folder: Path, ask_ark: bytes) -> Path:
    (folder / "ask_ark.cert").write_bytes(ask_ark)
    (folder / "OVMF.fd").write_bytes(BUILTIN.read_bytes())
    image = bytearray(BUILTIN.read_bytes())
    image[100] ^= 1
    (folder / "OVMF-other.fd").write_bytes(bytes(image))
    keys = ", ".join(f'"{k}" = "{v}"' for k, v in KEYSET.items())
    text = f"""
[trust]
ca = "ask_ark.cert"

[workloads.KEYSET-1]
policies = [0]
[[workloads.KEYSET-1.boot]]
firmware = "OVMF.fd"
[workloads.KEYSET-1.secrets]
"{KATA_GUID}" = {{ json = {{ {keys} }} }}

[workloads.KEYSET-OTHER]      # expects another firmware than the guest boots
policies = [0]
[[workloads.KEYSET-OTHER.boot]]
firmware = "OVMF-other.fd"
[workloads.KEYSET-OTHER.secrets]
"{KATA_GUID}" = {{ text = "must never reach the guest" }}
"""
    path = folder / "kbs.toml"
    path.write_text(text)
    return path


async def certificates(control: str) -> dict[str, str]:
    c = QMPClient("kata")
    await c.connect(control)
    try:
        return dict(await c.execute("query-sev-certificates"))
    finally:
        await c.disconnect()


@pytest.fixture
def setup() -> Iterator[Setup]:
    import asyncio

    base = short_tmpdir()
    kata = base / "kata"
    kata.mkdir()
    d = start_daemon(base, "--set", f'paths.firmware_dirs=["{kata}"]')
    certs = asyncio.run(certificates(d.control))
    owner = base / "owner"
    owner.mkdir()
    cfg = broker_config(owner, base64.b64decode(certs["ask"]) + base64.b64decode(certs["ark"]))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sevctl", "owner", "serve", "--config",
                             str(cfg), "--listen", f"tcp:127.0.0.1:{port}", "--log-level",
                             "debug"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(ROOT))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("sevkbs listening on http://127.0.0.1:"), line + (
        proc.stderr.read() if proc.stderr else "")
    try:
        yield Setup(base, d, proc, line.split()[-1])
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
        assert d.stop() == 0
        shutil.rmtree(base, ignore_errors=True)


async def kata_launch(s: Setup, name: str, keyset: str) -> tuple[QMPClient, str]:
    """Kata's setupSEVGuestPreAttestation + sevGuestPreAttestation, up to GetSecret.
    Returns the guest's QMP client and what GetSecret answered (or raises KbsRefused)."""
    certs = await certificates(s.daemon.control)
    # sev_cert_chain: `sevctl export --full` (PDH‖PEK‖OCA‖CEK‖ASK‖ARK), base64-encoded.
    chain = b"".join(base64.b64decode(certs[k]) for k in ("pdh", "pek", "oca", "cek", "ask",
                                                          "ark"))
    async with KbsClient(s.kbs) as kbs:
        bundle = await kbs.get_bundle(base64.b64encode(chain).decode(), 0)
        folder = s.kata_dir / bundle["LaunchId"]
        folder.mkdir()
        (folder / "godh").write_text(bundle["GuestOwnerPublicKey"])  # written verbatim
        (folder / "session").write_text(bundle["LaunchBlob"])
        control = QMPClient("kata-control")
        await control.connect(s.daemon.control)
        try:
            info = await control.execute("guest-add", {"name": name, "sev-guest": {
                "policy": 0, "cbitpos": 51, "reduced-phys-bits": 1,
                "dh-cert-file": str(folder / "godh"), "session-file": str(folder / "session")}})
        finally:
            await control.disconnect()
        g = QMPClient("kata-govmm")
        await g.connect(info["socket"])
        measure = (await g.execute("query-sev-launch-measure"))["data"]
        sev = await g.execute("query-sev")
        # sev.CalculateLaunchDigest: SHA-256 of the firmware for a plain SEV guest.
        fw_digest = hashlib.sha256((s.kata_dir.parent / "owner" / "OVMF.fd").read_bytes())
        try:
            secret = await kbs.get_secret({
                "LaunchMeasurement": measure, "LaunchId": bundle["LaunchId"],
                "Policy": sev["policy"], "ApiMajor": sev["api-major"],
                "ApiMinor": sev["api-minor"], "BuildId": sev["build-id"],
                "FwDigest": base64.b64encode(fw_digest.digest()).decode(),
                "LaunchDescription": "shim launch",
                "SecretRequests": [{"Guid": str(KATA_GUID), "Format": "JSON",
                                    "SecretType": "bundle", "Id": keyset}]})
        except KbsRefused:
            await g.disconnect()
            raise
    return g, json.dumps(secret)


async def secret_area(g: QMPClient, daemon: Any, name: str) -> bytes:
    gpa, size = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
    await g.execute("pmemsave", {"val": gpa, "size": size, "filename": name})
    return (daemon.state_dir / "dumps" / name).read_bytes()


async def test_kata_pre_attestation_through_the_broker(setup: Setup) -> None:
    g, answer = await kata_launch(setup, "kata1", "KEYSET-1")
    secret = json.loads(answer)
    try:
        assert await g.execute("sev-inject-launch-secret", {
            "packet-header": secret["LaunchSecretHeader"],
            "secret": secret["LaunchSecretData"]}) == {}
        assert await g.execute("cont") == {}
        assert (await g.execute("query-sev"))["state"] == "running"
        # Inside the guest (efi_secret would expose it under coco/efi_secret/<GUID>):
        table = parse_secret_table(await secret_area(g, setup.daemon, "kata1.bin"))
        assert json.loads(table[KATA_GUID]) == KEYSET
    finally:
        await g.disconnect()
    _assert_no_secret_in_broker_log(setup)


async def test_invalid_measurement_releases_nothing(setup: Setup) -> None:
    with pytest.raises(KbsRefused) as e:
        await kata_launch(setup, "kata2", "KEYSET-OTHER")
    # FwDigest is the guest's real firmware: not an expected digest of KEYSET-OTHER.
    assert (e.value.status, e.value.code) == (403, "DigestNotAllowed")
    with pytest.raises(KbsRefused) as e:
        await _launch_without_fw_digest(setup, "kata3", "KEYSET-OTHER")
    assert (e.value.status, e.value.code) == (403, "MeasurementMismatch")
    assert e.value.message.startswith("Measurement Verification Failed:")
    # The guest waits in launch-secret with an untouched secret area; the host cannot ask
    # again with the same launch.
    g = QMPClient("check")
    await g.connect(setup.daemon.guest_socket("kata3"))
    try:
        assert (await g.execute("query-sev"))["state"] == "launch-secret"
        # The hypervisor's view of the secret area: never written (LAUNCH_SECRET writes it).
        gpa, size = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
        stored = await g.execute("x-sevd-query-memory", {"gpa": gpa, "size": size})
        assert not any(base64.b64decode(stored["data"]))
    finally:
        await g.disconnect()
    _assert_no_secret_in_broker_log(setup)


async def _launch_without_fw_digest(s: Setup, name: str, keyset: str) -> None:
    """As kata_launch, but the client sends no FwDigest (simple-kbs clients may not)."""
    certs = await certificates(s.daemon.control)
    chain = b"".join(base64.b64decode(certs[k]) for k in ("pdh", "pek", "oca", "cek", "ask",
                                                          "ark"))
    async with KbsClient(s.kbs) as kbs:
        bundle = await kbs.get_bundle(base64.b64encode(chain).decode(), 0)
        control = QMPClient("kata-control")
        await control.connect(s.daemon.control)
        try:
            info = await control.execute("guest-add", {"name": name, "sev-guest": {
                "policy": 0, "cbitpos": 51, "reduced-phys-bits": 1,
                "dh-cert": bundle["GuestOwnerPublicKey"], "session": bundle["LaunchBlob"]}})
        finally:
            await control.disconnect()
        g = QMPClient("kata-govmm")
        await g.connect(info["socket"])
        try:
            measure = (await g.execute("query-sev-launch-measure"))["data"]
            sev = await g.execute("query-sev")
        finally:
            await g.disconnect()
        request = {"LaunchMeasurement": measure, "LaunchId": bundle["LaunchId"],
                   "Policy": sev["policy"], "ApiMajor": sev["api-major"],
                   "ApiMinor": sev["api-minor"], "BuildId": sev["build-id"],
                   "SecretRequests": [{"Guid": str(KATA_GUID), "Id": keyset}]}
        try:
            await kbs.get_secret(request)
        finally:
            with pytest.raises(KbsRefused) as again:
                await kbs.get_secret(request)
            assert again.value.code == "LaunchNotFound"


def _assert_no_secret_in_broker_log(s: Setup) -> None:
    s.broker.terminate()
    s.broker.wait(10)
    assert s.broker.stderr is not None
    log = s.broker.stderr.read()
    assert "bundle: launch" in log
    for value in [*KEYSET.values(), *KEYSET, "must never reach the guest"]:
        assert value not in log
