"""Status codes: QEMU's texts, and every legacy code reachable by a real trigger."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from psp_helpers import Guests, Owner, pdh_of, ready

from sevd.domain.psp import (
    GuestState,
    HostConditions,
    PlatformIdentity,
    SevError,
    SevFirmware,
    SevStatus,
    status_text,
)
from sevd.domain.psp.profiles import MILAN
from sevd.formats.sevcert import Algo, SevCert, Usage

QEMU_TEXTS = {
    1: "Platform state is invalid",
    2: "Guest state is invalid",
    3: "Platform configuration is invalid",
    4: "Buffer too small",
    5: "Platform is already owned",
    6: "Certificate is invalid",
    7: "Policy is not allowed",
    8: "Guest is not active",
    9: "Invalid address",
    10: "Bad signature",
    11: "Bad measurement",
    12: "ASID is already owned",
    13: "Invalid ASID",
    14: "WBINVD is required",
    15: "DF_FLUSH is required",
    16: "Guest handle is invalid",
    17: "Invalid command",
    18: "Guest is active",
    19: "Hardware error",
    20: "Hardware unsafe",
    21: "Feature not supported",
    22: "Invalid parameter",
    23: "Required firmware resource depleted",
    24: "Part-specific integrity check failure",
}


def test_texts_are_qemus() -> None:
    assert {s.value: s.text for s in SevStatus if s} == QEMU_TEXTS
    assert status_text(0) == ""
    assert status_text(25) == status_text(0x1234) == status_text(-1) == "unknown error"


def test_sev_error_carries_status_and_lengths() -> None:
    err = SevError(4, "LAUNCH_MEASURE", required_length=48)
    assert err.status is SevStatus.INVALID_LENGTH and err.required_length == 48
    assert err.lengths == {"len": 48}
    assert str(err) == "LAUNCH_MEASURE: INVALID_LENGTH (fw_error=4 'Buffer too small')"
    with pytest.raises(ValueError):
        SevError(0)


# -- every status has a natural trigger ------------------------------------------------------

Trigger = Callable[[Callable[..., SevFirmware]], object]


def _owner_import(make_fw: Callable[..., SevFirmware], malformed: bool) -> None:
    fw = make_fw()
    key = ec.generate_private_key(ec.SECP384R1())
    oca = SevCert.new(Usage.OCA, Algo.ECDSA_SHA256, key.public_key())
    oca.sign(key, Usage.OCA)
    if malformed:
        oca.set_signature(2, Usage.INVALID, Algo.ECDSA_SHA256, b"")
    pek = SevCert.from_bytes(fw.pek_csr())
    pek.sign(key, Usage.OCA)
    fw.pek_cert_import(pek.to_bytes(), oca.to_bytes())
    fw.pek_cert_import(pek.to_bytes(), oca.to_bytes())


def _es_invalid_param(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw(es=True)
    handle = Guests(fw).in_state(GuestState.SUPDATE, policy=0x4)
    fw.send_update_vmsa(handle, 0)


def _corrupt_store(identity: PlatformIdentity) -> None:
    raw = bytearray(identity.to_bytes())
    assert identity.store.pek_cert is not None
    raw[bytes(raw).index(identity.store.pek_cert) + 8] ^= 1
    SevFirmware(PlatformIdentity.from_bytes(bytes(raw))).init()


def _hw(make_fw: Callable[..., SevFirmware], unsafe: bool) -> None:
    fw = make_fw(init=False)
    if unsafe:
        ready(fw)
        handle = Guests(fw).in_state(GuestState.LSECRET)
        fw.host = HostConditions(memory_controller_healthy=False)
        fw.launch_finish(handle)
    else:
        fw.host = HostConditions(memory_encryption_enabled=False)
        fw.init()


def _tampered_session(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw()
    owner = Owner(0)
    session = bytearray(owner.session(pdh_of(fw)))
    session[-1] ^= 1
    fw.launch_start(0, dh_cert=owner.godh, session=bytes(session))


def _bad_godh(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw()
    owner = Owner(0)
    cert = SevCert.from_bytes(owner.godh)
    cert.pubkey_usage = Usage.OCA
    fw.launch_start(0, dh_cert=cert.to_bytes(), session=owner.session(pdh_of(fw)))


def _asid_owned(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw()
    a, b = fw.launch_start(0), fw.launch_start(0)
    fw.activate(a, 100)
    fw.activate(b, 100)


def _dirty(make_fw: Callable[..., SevFirmware], wbinvd: bool) -> None:
    fw = make_fw(init=False)
    fw.init()
    if wbinvd:
        fw.df_flush()
    fw.activate(fw.launch_start(0), 100)


def _resource_limit(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw(prof=replace(MILAN, handle_limit=1))
    fw.launch_start(0)
    fw.launch_start(0)


def _fw_guest_call(
    state: GuestState,
    call: Callable[[SevFirmware, int], object],
    *,
    policy: int = 0,
    profile: str = "milan",
) -> Trigger:
    def trigger(make_fw: Callable[..., SevFirmware]) -> object:
        fw = make_fw(profile)
        return call(fw, Guests(fw).in_state(state, policy))

    return trigger


TRIGGERS: dict[SevStatus, Trigger] = {
    SevStatus.INVALID_PLATFORM_STATE: lambda mk: mk().launch_measure(1),
    SevStatus.INVALID_GUEST_STATE: _fw_guest_call(
        GuestState.LUPDATE, lambda fw, h: fw.launch_finish(h)
    ),
    SevStatus.INVALID_CONFIG: lambda mk: mk(init=False).init(2),
    SevStatus.INVALID_LENGTH: _fw_guest_call(
        GuestState.LUPDATE, lambda fw, h: fw.launch_measure(h, length=0)
    ),
    SevStatus.ALREADY_OWNED: lambda mk: _owner_import(mk, malformed=False),
    SevStatus.INVALID_CERTIFICATE: _bad_godh,
    SevStatus.POLICY_FAILURE: _fw_guest_call(
        GuestState.RUNNING, lambda fw, h: fw.dbg_decrypt(h, 0, 16), policy=0x1
    ),
    SevStatus.INACTIVE: lambda mk: (lambda fw: fw.launch_update_data(fw.launch_start(0), 0, 16))(
        mk()
    ),
    SevStatus.INVALID_ADDRESS: _fw_guest_call(
        GuestState.RUNNING, lambda fw, h: fw.dbg_decrypt(h, 8, 16)
    ),
    SevStatus.BAD_SIGNATURE: lambda mk: _owner_import(mk, malformed=True),
    SevStatus.BAD_MEASUREMENT: _tampered_session,
    SevStatus.ASID_OWNED: _asid_owned,
    SevStatus.INVALID_ASID: lambda mk: (lambda fw: fw.activate(fw.launch_start(0), 0))(mk()),
    SevStatus.WBINVD_REQUIRED: lambda mk: (lambda fw: (fw.init(), fw.df_flush()))(mk(init=False)),
    SevStatus.DFFLUSH_REQUIRED: lambda mk: _dirty(mk, wbinvd=False),
    SevStatus.INVALID_GUEST: lambda mk: mk().guest_info(0),
    SevStatus.INVALID_COMMAND: _fw_guest_call(
        GuestState.RUNNING, lambda fw, h: fw.attestation(h, bytes(16)), profile="naples"
    ),
    SevStatus.ACTIVE: _fw_guest_call(GuestState.RUNNING, lambda fw, h: fw.decommission(h)),
    SevStatus.HWERROR_PLATFORM: lambda mk: _hw(mk, unsafe=False),
    SevStatus.HWERROR_UNSAFE: lambda mk: _hw(mk, unsafe=True),
    SevStatus.UNSUPPORTED: lambda mk: mk().launch_start(0x4),
    SevStatus.INVALID_PARAM: _es_invalid_param,
    SevStatus.RESOURCE_LIMIT: _resource_limit,
    SevStatus.SECURE_DATA_INVALID: lambda mk: _corrupt_store(mk(init=False)._identity),
}


def test_every_status_is_reachable() -> None:
    assert set(TRIGGERS) == set(SevStatus) - {SevStatus.SUCCESS}


@pytest.mark.parametrize("status", sorted(TRIGGERS), ids=lambda s: s.name)
def test_trigger(make_fw: Callable[..., SevFirmware], status: SevStatus) -> None:
    with pytest.raises(SevError) as err:
        TRIGGERS[status](make_fw)
    assert err.value.status is status
