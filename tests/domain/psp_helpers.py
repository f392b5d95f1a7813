"""Helpers for the firmware tests: a guest owner's side of LAUNCH_START, and a builder of
guests in any state. (A module of its own so that test files can import it.)"""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec

from sevd.domain.psp import GuestState, SevFirmware
from sevd.formats.crypto import ecdh_z
from sevd.formats.session import build_session
from sevd.formats.sevcert import SevCert


def ready(fw: SevFirmware, flags: int = 0) -> SevFirmware:
    """INIT, then WBINVD + DF_FLUSH as Linux does right after INIT."""
    fw.init(flags)
    fw.wbinvd()
    fw.df_flush()
    return fw


@dataclass
class Owner:
    """A guest owner's side of LAUNCH_START: GODH key, TEK, TIK, and what it sends."""

    policy: int
    godh_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP384R1())
    )
    tek: bytes = b"T" * 16
    tik: bytes = b"I" * 16
    nonce: bytes = b"N" * 16
    wrap_iv: bytes = b"V" * 16

    @property
    def godh(self) -> bytes:
        return SevCert.new_godh(self.godh_key.public_key()).to_bytes()

    def session(self, pdh_cert: bytes, policy: int | None = None) -> bytes:
        pdh = SevCert.from_bytes(pdh_cert)
        z = ecdh_z(self.godh_key, pdh.public_key)
        pol = self.policy if policy is None else policy
        return build_session(z, self.nonce, self.wrap_iv, self.tek, self.tik, pol).to_bytes()


def pdh_of(fw: SevFirmware) -> bytes:
    return fw.pdh_cert_export()[0]


class Guests:
    """Builds guests in any state on one firmware, handing out clean ASIDs."""

    def __init__(self, fw: SevFirmware) -> None:
        self.fw = fw
        self._asids = fw.profile.sev_asids
        self._es_asids = fw.profile.es_asids
        #: the guest owner (or sender) whose TEK/TIK each session-launched guest uses
        self.owners: dict[int, Owner] = {}

    def asid(self, es: bool = False) -> int:
        """The next clean ASID of the right range (ES or not)."""
        for asid in self._es_asids if es else self._asids:
            if self.fw.asid_state(asid) == "clean":
                return asid
        raise AssertionError("no clean ASID left")

    def launch(self, policy: int = 0, *, activate: bool = True, **kwargs: object) -> int:
        handle = self.fw.launch_start(policy, **kwargs)  # type: ignore[arg-type]
        if activate:
            self.fw.activate(handle, self.asid(bool(policy & 4)))
        return handle

    def in_state(self, state: GuestState, policy: int = 0, *, activate: bool = True) -> int:
        fw = self.fw
        if state is GuestState.RUPDATE:
            owner = Owner(policy)
            handle = fw.receive_start(owner.godh, owner.session(pdh_of(fw)), policy)
            self.owners[handle] = owner
            if activate:
                fw.activate(handle, self.asid(bool(policy & 4)))
            return handle
        handle = self.launch(policy, activate=activate)
        if state is GuestState.LUPDATE:
            return handle
        fw.launch_measure(handle)
        if state is GuestState.LSECRET:
            return handle
        fw.launch_finish(handle)
        if state is GuestState.RUNNING:
            return handle
        fw.send_start(handle, pdh_of(fw))
        if state is GuestState.SUPDATE:
            return handle
        fw.send_finish(handle)
        assert state is GuestState.SENT
        return handle
