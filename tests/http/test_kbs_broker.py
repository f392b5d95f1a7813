"""The key broker's rules, in process: a real simulated platform (sevd's App) plays the host,
sevkbs plays the guest owner. Bundle → LAUNCH_START with it → measurement → secret →
LAUNCH_SECRET, and every refusal: wrong measurement, policy, launch id, chain, digest,
workload, firmware; configuration errors; and nothing secret in any log line."""

from __future__ import annotations

import base64
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from http_support import ROOT, add_guest, make_app, qmp
from sevkbs.broker import Broker, KbsError
from sevkbs.config import ConfigError, load_config, parse_config
from sevkbs.server import MAX_REQUEST
from sevkbs.server import make_app as make_kbs_app

from sevd.commands.app import App
from sevd.formats.ovmf import sev_secret_area
from sevd.formats.secret import parse_secret_table

BUILTIN = ROOT / "sevd" / "data" / "sevd-builtin.fd"
KATA_GUID = uuid.UUID("e6f5a162-d67f-4750-a67c-5d065f2a9910")
OTHER_GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
KEY = "k3y-MATERIAL-do-not-log-0123456789"
TEXT = "second-secret-never-logged"


def full_chain(app: App) -> str:
    """`sevctl export --full`: PDH‖PEK‖OCA‖CEK‖ASK‖ARK, base64 (Kata's sev_cert_chain)."""
    c = app.query("query-sev-certificates")
    raw = b"".join(base64.b64decode(c[k]) for k in ("pdh", "pek", "oca", "cek", "ask", "ark"))
    return base64.b64encode(raw).decode()


def write_config(folder: Path, app: App, extra: str = "", workload: str = "") -> Path:
    c = app.query("query-sev-certificates")
    (folder / "ask_ark.cert").write_bytes(base64.b64decode(c["ask"]) +
                                          base64.b64decode(c["ark"]))
    (folder / "fw.fd").write_bytes(BUILTIN.read_bytes())
    text = f"""
listen = "tcp:127.0.0.1:0"
{extra}
[trust]
ca = "ask_ark.cert"

[workloads.KEYSET-1]
policies = [0, 1]
{workload}
[[workloads.KEYSET-1.boot]]
firmware = "fw.fd"
[workloads.KEYSET-1.secrets]
"{KATA_GUID}" = {{ json = {{ key1 = "{KEY}" }} }}
"{OTHER_GUID}" = {{ text = "{TEXT}" }}
"""
    path = folder / "kbs.toml"
    path.write_text(text)
    return path


@pytest.fixture
def host() -> App:
    return make_app()


@pytest.fixture
def broker(host: App, tmp_path: Path) -> Broker:
    return Broker(load_config(write_config(tmp_path, host)))


async def launch(host: App, broker: Broker, name: str, policy: int = 0) -> dict[str, Any]:
    """What Kata does up to the measurement: bundle, guest-add paused with it, query."""
    bundle = broker.get_bundle({"CertificateChain": full_chain(host), "Policy": policy})
    await add_guest(host, name, **{"sev-guest": {
        "policy": policy, "cbitpos": 51, "reduced-phys-bits": 1,
        "dh-cert": bundle["GuestOwnerPublicKey"], "session": bundle["LaunchBlob"]}})
    sev = await qmp(host, name, "query-sev")
    measure = await qmp(host, name, "query-sev-launch-measure")
    return {"LaunchMeasurement": measure["data"], "LaunchId": bundle["LaunchId"],
            "Policy": sev["policy"], "ApiMajor": sev["api-major"], "ApiMinor": sev["api-minor"],
            "BuildId": sev["build-id"], "FwDigest": "", "LaunchDescription": "shim launch",
            "SecretRequests": [{"Guid": str(KATA_GUID), "Format": "JSON",
                                "SecretType": "bundle", "Id": "KEYSET-1"}]}


def secret_table(host: App, name: str) -> dict[uuid.UUID, bytes]:
    """The guest's secret area, read through the debug path (DBG_DECRYPT)."""
    from sevd.domain.debug import DebugAccess

    gpa, size = sev_secret_area(BUILTIN.read_bytes()) or (0, 0)
    data = DebugAccess(host.slots[name].guest).read_phys(gpa, size)
    assert data is not None
    return parse_secret_table(data)


def refused(fn: Any, *args: Any) -> KbsError:
    with pytest.raises(KbsError) as e:
        fn(*args)
    return e.value


# -- the good path ------------------------------------------------------------------------------

async def test_bundle_measure_secret_inject(host: App, broker: Broker) -> None:
    req = await launch(host, broker, "ok1")
    req["SecretRequests"].append({"Guid": str(OTHER_GUID), "Format": "binary",
                                  "SecretType": "key", "Id": "KEYSET-1"})
    resp = broker.get_secret(req)
    assert set(resp) == {"LaunchSecretHeader", "LaunchSecretData"}
    assert len(base64.b64decode(resp["LaunchSecretHeader"])) == 52
    await qmp(host, "ok1", "sev-inject-launch-secret", {
        "packet-header": resp["LaunchSecretHeader"], "secret": resp["LaunchSecretData"]})
    await qmp(host, "ok1", "cont")
    table = secret_table(host, "ok1")
    assert json.loads(table[KATA_GUID]) == {"key1": KEY}
    assert table[OTHER_GUID] == TEXT.encode()
    # One release per launch.
    assert refused(broker.get_secret, req).code == "LaunchNotFound"
    assert broker.released == 1


async def test_fw_digest_when_it_is_an_expected_one(host: App, broker: Broker) -> None:
    import hashlib

    req = await launch(host, broker, "fd1")
    req["FwDigest"] = base64.b64encode(hashlib.sha256(BUILTIN.read_bytes()).digest()).decode()
    assert "LaunchSecretHeader" in broker.get_secret(req)


async def test_es_workload_digest_with_vmsas(host: App, tmp_path: Path) -> None:
    """An SEV-ES workload: the digest covers the VMSAs of its vCPUs (Kata's policy 7)."""
    path = write_config(tmp_path, host)
    text = path.read_text().replace("policies = [0, 1]", "policies = [7]").replace(
        'firmware = "fw.fd"', 'firmware = "fw.fd"\ncpus = 2\nvcpu_type = "EPYC-Milan"')
    path.write_text(text)
    broker = Broker(load_config(path))
    bundle = broker.get_bundle({"CertificateChain": full_chain(host), "Policy": 7})
    await add_guest(host, "es7", cpus=2, **{"sev-guest": {
        "policy": 7, "cbitpos": 51, "reduced-phys-bits": 1,
        "dh-cert": bundle["GuestOwnerPublicKey"], "session": bundle["LaunchBlob"]}})
    sev = await qmp(host, "es7", "query-sev")
    req = {"LaunchMeasurement": (await qmp(host, "es7", "query-sev-launch-measure"))["data"],
           "LaunchId": bundle["LaunchId"], "Policy": 7, "ApiMajor": sev["api-major"],
           "ApiMinor": sev["api-minor"], "BuildId": sev["build-id"],
           "SecretRequests": [{"Guid": str(KATA_GUID), "Id": "KEYSET-1"}]}
    resp = broker.get_secret(req)
    await qmp(host, "es7", "sev-inject-launch-secret", {
        "packet-header": resp["LaunchSecretHeader"], "secret": resp["LaunchSecretData"]})


# -- refusals: nothing is released ----------------------------------------------------------------

async def test_wrong_measurement_is_refused_and_ends_the_launch(host: App, tmp_path: Path
                                                                ) -> None:
    path = write_config(tmp_path, host)
    other = tmp_path / "other.fd"
    image = bytearray(BUILTIN.read_bytes())
    image[0] ^= 0xFF
    other.write_bytes(bytes(image))  # not what the guest booted
    path.write_text(path.read_text().replace('firmware = "fw.fd"', 'firmware = "other.fd"'))
    broker = Broker(load_config(path))
    req = await launch(host, broker, "bad1")
    e = refused(broker.get_secret, req)
    assert (e.status, e.code) == (403, "MeasurementMismatch")
    assert e.message.startswith("Measurement Verification Failed:")
    assert refused(broker.get_secret, req).code == "LaunchNotFound"
    assert broker.released == 0


async def test_tampered_measurement_api_or_policy(host: App, broker: Broker) -> None:
    req = await launch(host, broker, "t1")
    blob = bytearray(base64.b64decode(req["LaunchMeasurement"]))
    blob[0] ^= 1
    e = refused(broker.get_secret, {**req, "LaunchMeasurement": base64.b64encode(blob).decode()})
    assert e.code == "MeasurementMismatch"
    req = await launch(host, broker, "t2")
    # A host lying about the firmware version: the MAC covers it.
    assert refused(broker.get_secret, {**req, "BuildId": req["BuildId"] + 1}
                   ).code == "MeasurementMismatch"
    req = await launch(host, broker, "t3")
    e = refused(broker.get_secret, {**req, "Policy": 1})
    assert (e.status, e.code) == (403, "PolicyMismatch")
    assert e.message.startswith("Policy validation failed:")


async def test_policy_not_allowed(host: App, broker: Broker) -> None:
    e = refused(broker.get_bundle, {"CertificateChain": full_chain(host), "Policy": 0x20})
    assert (e.status, e.code) == (403, "PolicyNotAllowed")


async def test_unknown_launch_id(host: App, broker: Broker) -> None:
    req = await launch(host, broker, "u1")
    lid = str(uuid.uuid4())
    e = refused(broker.get_secret, {**req, "LaunchId": lid})
    assert (e.status, e.code, e.message) == (404, "LaunchNotFound",
                                             f"Launch ID not found. UUID: {lid}")


async def test_fw_digest_not_expected(host: App, broker: Broker) -> None:
    req = await launch(host, broker, "d1")
    e = refused(broker.get_secret, {**req, "FwDigest": base64.b64encode(bytes(32)).decode()})
    assert (e.status, e.code) == (403, "DigestNotAllowed")


async def test_unknown_workload_or_secret(host: App, broker: Broker) -> None:
    req = await launch(host, broker, "w1")
    e = refused(broker.get_secret, {**req, "SecretRequests": [
        {"Guid": str(KATA_GUID), "Id": "KEYSET-9"}]})
    assert (e.status, e.code) == (404, "UnknownWorkload")
    e = refused(broker.get_secret, {**req, "SecretRequests": [
        {"Guid": str(uuid.uuid4()), "Id": "KEYSET-1"}]})
    assert (e.status, e.code) == (404, "UnknownSecret")


async def test_firmware_bounds(host: App, tmp_path: Path) -> None:
    for workload, code in (("min_api = [2, 0]", "FirmwareTooOld"),
                           ("build_ids = [99]", "FirmwareBuildNotAllowed")):
        broker = Broker(load_config(write_config(tmp_path, host, workload=workload)))
        req = await launch(host, broker, f"fb{code}")
        assert refused(broker.get_secret, req).code == code


@pytest.mark.parametrize(("req", "text"), [
    ({}, "missing field CertificateChain"),
    ({"CertificateChain": "!!", "Policy": 0}, "field CertificateChain is not base64"),
    ({"CertificateChain": "AAAA", "Policy": "0"}, "field Policy must be an integer"),
    ({"CertificateChain": "AAAA", "Policy": -1}, "unsigned 32-bit"),
    ({"CertificateChain": "AAAA", "Policy": 0}, "Certificate chain is malformed"),
])
def test_malformed_bundle_requests(broker: Broker, req: dict[str, Any], text: str) -> None:
    e = refused(broker.get_bundle, req)
    assert e.status == 400 and text in e.message


async def test_malformed_secret_requests(host: App, broker: Broker) -> None:
    req = await launch(host, broker, "m1")
    for bad, text in (({"LaunchMeasurement": "AAAA"}, "must be 48 bytes"),
                      ({"SecretRequests": []}, "nothing to release"),
                      ({"SecretRequests": [{"Guid": "x", "Id": "KEYSET-1"}]}, "not a GUID"),
                      ({"ApiMajor": 256}, "unsigned 8-bit")):
        e = refused(broker.get_secret, {**req, **bad})
        assert e.status == 400 and text in e.message
    assert "LaunchSecretHeader" in broker.get_secret(req)  # the launch is still open


async def test_chain_of_another_root_is_refused(host: App, tmp_path: Path) -> None:
    other = make_app("genoa")  # a platform under a different (simulated) AMD root
    broker = Broker(load_config(write_config(tmp_path, host)))
    e = refused(broker.get_bundle, {"CertificateChain": full_chain(other), "Policy": 0})
    assert (e.status, e.code) == (403, "CertificateChainRejected")
    assert "not the pinned root" in e.message
    # A chain whose PDH was swapped (a man in the middle's key) breaks the PEK → PDH link.
    raw = bytearray(base64.b64decode(full_chain(host)))
    pdh_other = base64.b64decode(other.query("query-sev-capabilities")["pdh"])
    raw[:len(pdh_other)] = pdh_other
    e = refused(broker.get_bundle, {"CertificateChain": base64.b64encode(raw).decode(),
                                    "Policy": 0})
    assert e.code == "CertificateChainRejected" and "PEK → PDH" in e.message


async def test_unpinned_mode_accepts_any_consistent_chain(host: App, tmp_path: Path) -> None:
    other = make_app("genoa")
    path = write_config(tmp_path, host)
    path.write_text(path.read_text().replace('ca = "ask_ark.cert"', "allow_unpinned = true"))
    broker = Broker(load_config(path))
    assert "LaunchId" in broker.get_bundle({"CertificateChain": full_chain(other),
                                            "Policy": 0})


async def test_launches_expire_and_are_bounded(host: App, tmp_path: Path) -> None:
    now = [0.0]
    cfg = load_config(write_config(tmp_path, host, extra="launch_ttl = 10\nmax_launches = 2"))
    broker = Broker(cfg, clock=lambda: now[0])
    chain = full_chain(host)
    ids = [broker.get_bundle({"CertificateChain": chain, "Policy": 0})["LaunchId"]
           for _ in range(3)]
    assert broker.open_launches == 2  # the oldest was dropped
    now[0] = 11
    broker.get_bundle({"CertificateChain": chain, "Policy": 0})
    assert broker.open_launches == 1
    assert ids  # (ids are random UUIDs)


# -- configuration --------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "problem"), [
    ('[workloads.a]\n', "trust.ca: missing"),
    ('bogus = 1\n[trust]\nallow_unpinned = true\n', "bogus: unknown key"),
    ('listen = "tcp:0.0.0.0:44444"\n[trust]\nallow_unpinned = true\n', "not a loopback"),
    ('[trust]\nallow_unpinned = true\n', "workloads: none defined"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\ndigests = ["AAAA"]\n',
     "a launch digest is 32 bytes"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\n', "no expected launch digest"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\ndigests = ["' + "00" * 32 + '"]\n'
     '[workloads.a.secrets]\nnot-a-guid = { text = "x" }\n', "not a GUID"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\ndigests = ["' + "00" * 32 + '"]\n'
     f'[workloads.a.secrets]\n"{KATA_GUID}" = {{ text = "x", file = "y" }}\n',
     "expected exactly one of"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\npolicies = [-1]\n', "32-bit policy"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\n[[workloads.a.boot]]\n'
     'firmware = "missing.fd"\n', "cannot read"),
    ('[trust]\nallow_unpinned = true\n[workloads.a]\n[[workloads.a.boot]]\n'
     'firmware = "fw.fd"\ncpus = 2\nvcpu_type = "Pentium"\n', "unknown model"),
])
def test_config_errors(tmp_path: Path, text: str, problem: str) -> None:
    (tmp_path / "fw.fd").write_bytes(BUILTIN.read_bytes())
    with pytest.raises(ConfigError) as e:
        parse_config(text, base=tmp_path, source="kbs.toml")
    assert problem in str(e.value) and str(e.value).startswith("kbs.toml")
    assert KEY not in str(e.value)


def test_workload_repr_hides_secrets(host: App, tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, host))
    assert KEY not in repr(cfg) and TEXT not in repr(cfg)


# -- the HTTP server ----------------------------------------------------------------------------

async def test_server_routes_and_errors(host: App, broker: Broker) -> None:
    async with TestClient(TestServer(make_kbs_app(broker))) as c:
        r = await c.post("/keybroker.KeyBrokerService/GetBundle",
                         json={"CertificateChain": full_chain(host), "Policy": 0})
        assert r.status == 200 and set(await r.json()) == {
            "GuestOwnerPublicKey", "LaunchBlob", "LaunchId"}
        r = await c.post("/v1/secret", json={"LaunchId": "x"})
        assert r.status == 400 and (await r.json())["Code"] == "InvalidRequest"
        r = await c.post("/v1/bundle", data=b"not json")
        assert r.status == 400 and (await r.json())["Message"] == "the body is not JSON"
        r = await c.post("/v1/bundle", json=[1])
        assert r.status == 400
        r = await c.post("/v1/bundle", data=b"x" * (MAX_REQUEST + 1))
        assert r.status == 413
        r = await c.get("/v1/bundle")
        assert r.status == 405
        r = await c.get("/healthz")
        assert (await r.json())["workloads"] == ["KEYSET-1"]


async def test_nothing_secret_is_logged(host: App, broker: Broker,
                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    req = await launch(host, broker, "log1")
    resp = broker.get_secret(req)
    req2 = await launch(host, broker, "log2")
    bad = bytearray(base64.b64decode(req2["LaunchMeasurement"]))
    bad[5] ^= 0xFF
    with pytest.raises(KbsError):
        broker.get_secret({**req2, "LaunchMeasurement": base64.b64encode(bad).decode()})
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "secret released" in logged and "Measurement Verification Failed" in logged
    forbidden = [KEY, TEXT, resp["LaunchSecretData"], resp["LaunchSecretHeader"]]
    for launch_ in list(broker._launches.values()):
        forbidden += [launch_.session.tek.hex(), launch_.session.tik.hex(),
                      base64.b64encode(launch_.session.tek).decode(),
                      base64.b64encode(launch_.session.tik).decode()]
    for item in forbidden:
        assert item not in logged
