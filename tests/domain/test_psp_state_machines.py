"""Every (platform state, command) and (guest state, command) pair gives AMD's answer.

Allowed platform states: reference §3 (ASPFW ``sev_mcmd.c``); guest states and transitions:
reference §4 (ASPFW ``sev_guest.c state_tbl_sev``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from psp_helpers import Guests, Owner, pdh_of, ready

from sevd.domain.psp import (
    GuestState,
    PlatformIdentity,
    PlatformState,
    SevError,
    SevFirmware,
    SevStatus,
)
from sevd.formats.secret import encrypt_packet, encrypt_secret
from sevd.formats.sevcert import Algo, SevCert, Usage

U, I, W = PlatformState.UNINIT, PlatformState.INIT, PlatformState.WORKING  # noqa: E741
ANY = frozenset(PlatformState)
OK = SevStatus.SUCCESS


@dataclass
class Ctx:
    fw: SevFirmware
    guests: Guests
    #: one bound guest per guest state (WORKING only)
    handle: dict[GuestState, int]
    #: an LUPDATE guest without an ASID (WORKING only)
    unbound: int


def _prepare(identity: PlatformIdentity, state: PlatformState) -> Ctx:
    fw = SevFirmware(identity, seed=b"states")
    guests = Guests(fw)
    handles: dict[GuestState, int] = {}
    unbound = 0
    if state is not U:
        ready(fw)
    if state is W:
        for gs in GuestState:
            if gs is not GuestState.UNINIT:
                handles[gs] = guests.in_state(gs)
        unbound = guests.launch(0, activate=False)
    assert fw.state is state
    return Ctx(fw, guests, handles, unbound)


def _h(ctx: Ctx, state: GuestState) -> int:
    return ctx.handle.get(state, 1)


def _pek_import(ctx: Ctx) -> None:
    fw = ctx.fw
    if fw.state is U:
        fw.pek_cert_import(bytes(2084), bytes(2084))
        return
    oca_key = ec.generate_private_key(ec.SECP384R1())
    oca = SevCert.new(Usage.OCA, Algo.ECDSA_SHA256, oca_key.public_key())
    oca.sign(oca_key, Usage.OCA)
    pek = SevCert.from_bytes(fw.pek_csr())
    pek.sign(oca_key, Usage.OCA)
    fw.pek_cert_import(pek.to_bytes(), oca.to_bytes())


def _receive_start(ctx: Ctx) -> None:
    owner = Owner(0)
    pdh = pdh_of(ctx.fw) if ctx.fw.state is not U else None
    session = owner.session(pdh) if pdh else bytes(128)
    ctx.fw.receive_start(owner.godh, session, 0)


def _launch_secret(ctx: Ctx, handle: int) -> None:
    fw = ctx.fw
    try:
        info = fw.guest_info(handle)
    except SevError:
        info = None
    if info is not None and info.measurement is not None and info.state is GuestState.LSECRET:
        header, payload = encrypt_secret(
            bytes(16), bytes(16), bytes(16), b"s" * 16, info.measurement[:32]
        )
        fw.launch_secret(handle, header.to_bytes(), 0x1000, payload)
    else:
        fw.launch_secret(handle, bytes(52), 0x1000, bytes(16))


def _receive_update(ctx: Ctx, handle: int, vmsa: bool = False) -> None:
    owner = ctx.guests.owners.get(handle, Owner(0))
    header, packet = encrypt_packet(owner.tek, owner.tik, bytes(16), b"r" * 32)
    if vmsa:
        ctx.fw.receive_update_vmsa(handle, header.to_bytes(), 0x2000, packet)
    else:
        ctx.fw.receive_update_data(handle, header.to_bytes(), 0x2000, packet)


def _df_flush(fw: SevFirmware) -> None:
    fw.wbinvd()
    fw.df_flush()


# command -> (allowed platform states, outcome once past the platform check, invoke)
Invoke = Callable[[Ctx], object]
PLATFORM_TABLE: dict[str, tuple[frozenset[PlatformState], SevStatus, Invoke]] = {
    "init": (frozenset({U}), OK, lambda c: c.fw.init()),
    "shutdown": (ANY, OK, lambda c: c.fw.shutdown()),
    "platform_reset": (frozenset({U}), OK, lambda c: c.fw.platform_reset()),
    "platform_status": (ANY, OK, lambda c: c.fw.platform_status()),
    "pek_gen": (frozenset({I}), OK, lambda c: c.fw.pek_gen()),
    "pek_csr": (frozenset({I, W}), OK, lambda c: c.fw.pek_csr()),
    "pek_cert_import": (frozenset({I}), OK, _pek_import),
    "pdh_gen": (frozenset({I, W}), OK, lambda c: c.fw.pdh_gen()),
    "pdh_cert_export": (frozenset({I, W}), OK, lambda c: c.fw.pdh_cert_export()),
    "get_id": (ANY, OK, lambda c: c.fw.get_id()),
    "df_flush": (ANY, OK, lambda c: _df_flush(c.fw)),
    "launch_start": (frozenset({I, W}), OK, lambda c: c.fw.launch_start(0)),
    "receive_start": (frozenset({I, W}), OK, _receive_start),
    "guest_status": (frozenset({I, W}), OK, lambda c: c.fw.guest_status(1)),
    "decommission": (frozenset({W}), OK, lambda c: c.fw.decommission(c.unbound or 1)),
    "activate": (
        frozenset({W}),
        OK,
        lambda c: c.fw.activate(c.unbound or 1, c.guests.asid() if c.unbound else 100),
    ),
    "deactivate": (frozenset({W}), OK, lambda c: c.fw.deactivate(_h(c, GuestState.LUPDATE))),
    "launch_update_data": (
        frozenset({W}),
        OK,
        lambda c: c.fw.launch_update_data(_h(c, GuestState.LUPDATE), 0, 16),
    ),
    "launch_update_vmsa": (
        frozenset({W}),
        SevStatus.UNSUPPORTED,  # the WORKING set-up's guests are not SEV-ES
        lambda c: c.fw.launch_update_vmsa(_h(c, GuestState.LUPDATE), 0),
    ),
    "launch_measure": (
        frozenset({W}),
        OK,
        lambda c: c.fw.launch_measure(_h(c, GuestState.LUPDATE)),
    ),
    "launch_secret": (
        frozenset({W}),
        OK,
        lambda c: _launch_secret(c, _h(c, GuestState.LSECRET)),
    ),
    "launch_finish": (
        frozenset({W}),
        OK,
        lambda c: c.fw.launch_finish(_h(c, GuestState.LSECRET)),
    ),
    "attestation": (
        frozenset({W}),
        OK,
        lambda c: c.fw.attestation(_h(c, GuestState.LSECRET), bytes(16)),
    ),
    "send_start": (
        frozenset({W}),
        OK,
        lambda c: c.fw.send_start(_h(c, GuestState.RUNNING), pdh_of(c.fw)),
    ),
    "send_update_data": (
        frozenset({W}),
        OK,
        lambda c: c.fw.send_update_data(_h(c, GuestState.SUPDATE), 0, 16),
    ),
    "send_update_vmsa": (
        frozenset({W}),
        SevStatus.UNSUPPORTED,
        lambda c: c.fw.send_update_vmsa(_h(c, GuestState.SUPDATE), 0),
    ),
    "send_finish": (frozenset({W}), OK, lambda c: c.fw.send_finish(_h(c, GuestState.SUPDATE))),
    "send_cancel": (frozenset({W}), OK, lambda c: c.fw.send_cancel(_h(c, GuestState.SUPDATE))),
    "receive_update_data": (
        frozenset({W}),
        OK,
        lambda c: _receive_update(c, _h(c, GuestState.RUPDATE)),
    ),
    "receive_update_vmsa": (
        frozenset({W}),
        SevStatus.UNSUPPORTED,
        lambda c: _receive_update(c, _h(c, GuestState.RUPDATE), vmsa=True),
    ),
    "receive_finish": (
        frozenset({W}),
        OK,
        lambda c: c.fw.receive_finish(_h(c, GuestState.RUPDATE)),
    ),
    "dbg_decrypt": (
        frozenset({W}),
        OK,
        lambda c: c.fw.dbg_decrypt(_h(c, GuestState.RUNNING), 0, 16),
    ),
    "dbg_encrypt": (
        frozenset({W}),
        OK,
        lambda c: c.fw.dbg_encrypt(_h(c, GuestState.RUNNING), 0, bytes(16)),
    ),
}


def _outcome(fn: Callable[[], object]) -> SevStatus | int:
    try:
        fn()
    except SevError as err:
        return err.status
    return OK


def test_platform_table_covers_every_command() -> None:
    methods = {
        name for name in dir(SevFirmware) if hasattr(getattr(SevFirmware, name), "sev_command")
    }
    assert methods == set(PLATFORM_TABLE)


@pytest.mark.parametrize("state", [U, I, W], ids=lambda s: s.name)
@pytest.mark.parametrize("command", sorted(PLATFORM_TABLE))
def test_platform_state_x_command(
    identity: PlatformIdentity, state: PlatformState, command: str
) -> None:
    allowed, working_outcome, invoke = PLATFORM_TABLE[command]
    ctx = _prepare(identity, state)
    expected = working_outcome if state in allowed else SevStatus.INVALID_PLATFORM_STATE
    assert _outcome(lambda: invoke(ctx)) == expected


def test_platform_transitions(identity: PlatformIdentity) -> None:
    fw = SevFirmware(identity)
    assert fw.state is U
    ready(fw)
    assert fw.state is I
    guests = Guests(fw)
    a = guests.launch(0, activate=False)
    assert fw.state is W
    owner = Owner(0)
    b = fw.receive_start(owner.godh, owner.session(pdh_of(fw)), 0)
    fw.decommission(a)
    assert fw.state is W
    fw.decommission(b)
    assert fw.state is I  # the last DECOMMISSION returns the platform to INIT
    guests.launch(0)
    fw.shutdown()
    assert fw.state is U and fw.guests() == []
    assert fw.platform_status().guest_count == 0


# -- guest states ---------------------------------------------------------------------------

G = GuestState
GUEST_STATES = [G.LUPDATE, G.LSECRET, G.RUNNING, G.SUPDATE, G.RUPDATE, G.SENT]
ALL_G = frozenset(GUEST_STATES)

GInvoke = Callable[[Ctx, int], object]
# command -> (allowed guest states, outcome when allowed, state after, invoke)
GUEST_TABLE: dict[str, tuple[frozenset[GuestState], SevStatus, GuestState | None, GInvoke]] = {
    "launch_update_data": (
        frozenset({G.LUPDATE}),
        OK,
        G.LUPDATE,
        lambda c, h: c.fw.launch_update_data(h, 0, 32),
    ),
    "launch_update_vmsa": (
        frozenset({G.LUPDATE}),
        SevStatus.UNSUPPORTED,
        G.LUPDATE,
        lambda c, h: c.fw.launch_update_vmsa(h, 0),
    ),
    "launch_measure": (
        frozenset({G.LUPDATE}),
        OK,
        G.LSECRET,
        lambda c, h: c.fw.launch_measure(h),
    ),
    "launch_secret": (frozenset({G.LSECRET}), OK, G.LSECRET, _launch_secret),
    "launch_finish": (
        frozenset({G.LSECRET}),
        OK,
        G.RUNNING,
        lambda c, h: c.fw.launch_finish(h),
    ),
    "attestation": (
        frozenset({G.LSECRET, G.RUNNING, G.SUPDATE, G.SENT}),
        OK,
        None,
        lambda c, h: c.fw.attestation(h, bytes(16)),
    ),
    "send_start": (
        frozenset({G.RUNNING}),
        OK,
        G.SUPDATE,
        lambda c, h: c.fw.send_start(h, pdh_of(c.fw)),
    ),
    "send_update_data": (
        frozenset({G.SUPDATE}),
        OK,
        G.SUPDATE,
        lambda c, h: c.fw.send_update_data(h, 0, 16),
    ),
    "send_finish": (frozenset({G.SUPDATE}), OK, G.SENT, lambda c, h: c.fw.send_finish(h)),
    "send_cancel": (frozenset({G.SUPDATE}), OK, G.RUNNING, lambda c, h: c.fw.send_cancel(h)),
    "receive_update_data": (frozenset({G.RUPDATE}), OK, G.RUPDATE, _receive_update),
    "receive_finish": (
        frozenset({G.RUPDATE}),
        OK,
        G.RUNNING,
        lambda c, h: c.fw.receive_finish(h),
    ),
    "activate": (
        ALL_G - {G.SENT},
        OK,
        None,
        lambda c, h: (c.fw.deactivate(h), c.fw.activate(h, c.guests.asid())),
    ),
    "deactivate": (ALL_G, OK, None, lambda c, h: c.fw.deactivate(h)),
    "decommission": (
        ALL_G,
        OK,
        G.UNINIT,
        lambda c, h: (c.fw.deactivate(h), c.fw.decommission(h)),
    ),
    "guest_status": (ALL_G, OK, None, lambda c, h: c.fw.guest_status(h)),
    "dbg_decrypt": (ALL_G, OK, None, lambda c, h: c.fw.dbg_decrypt(h, 0, 16)),
    "dbg_encrypt": (ALL_G, OK, None, lambda c, h: c.fw.dbg_encrypt(h, 0, bytes(16))),
}


@pytest.mark.parametrize("state", GUEST_STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("command", sorted(GUEST_TABLE))
def test_guest_state_x_command(identity: PlatformIdentity, state: GuestState, command: str) -> None:
    allowed, outcome, after, invoke = GUEST_TABLE[command]
    fw = ready(SevFirmware(identity, seed=b"guest states"))
    ctx = Ctx(fw, Guests(fw), {}, 0)
    handle = ctx.guests.in_state(state)
    expected = outcome if state in allowed else SevStatus.INVALID_GUEST_STATE
    assert _outcome(lambda: invoke(ctx, handle)) == expected
    final = fw.guest_status(handle).state
    if expected is OK and after is not None:
        assert final is after
    elif expected is not OK:
        assert final is state  # a failed command changes nothing


def test_guest_status_of_unknown_handle_is_success_with_state_zero(fw: SevFirmware) -> None:
    for handle in (0, 1, 1025):
        status = fw.guest_status(handle)
        assert (status.state, status.asid, status.policy) == (GuestState.UNINIT, 0, 0)
