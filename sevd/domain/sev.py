"""One guest's SEV context and its launch, in the order QEMU and KVM drive the firmware.

`SevGuest.launch()` is what QEMU does between `-object sev-guest` and machine-init-done:
LAUNCH_START (with the guest owner's GODH and session when given), ACTIVATE on an ASID
chosen by the host, the firmware image and the kernel-hashes table through
LAUNCH_UPDATE_DATA (plaintext measured, then encrypted in place), one VMSA per vCPU through
LAUNCH_UPDATE_VMSA for SEV-ES, then LAUNCH_MEASURE. `finish()` is the first `cont`
(LAUNCH_FINISH). QEMU's own checks and error texts are the commands layer's; this module is
the machine: it raises the firmware's `SevError` and `AsidExhausted`.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Callable
from dataclasses import dataclass

from sevd.domain.errors import DomainError
from sevd.domain.machine import Machine
from sevd.domain.platform import AsidExhausted, SevPlatform
from sevd.domain.psp import SevError
from sevd.formats import ovmf
from sevd.formats.policy import GuestPolicy, PolicyFlag
from sevd.formats.vmsa import cpu_signature, vmsa_pages


class SevState(enum.StrEnum):
    """QEMU's SevState; the order gives the number QEMU prints in "(LSECRET) %x"."""

    UNINIT = "uninit"
    LAUNCH_UPDATE = "launch-update"
    LAUNCH_SECRET = "launch-secret"
    RUNNING = "running"
    SEND_UPDATE = "send-update"
    RECEIVE_UPDATE = "receive-update"

    @property
    def number(self) -> int:
        return list(SevState).index(self)


# The vCPU model QEMU would be given on each generation (CPUID Fn0000_0001 EAX goes into
# the SEV-ES VMSA's RDX; sev-snp-measure's --vcpu-type names).
VCPU_TYPES = {
    "naples": ("EPYC", cpu_signature(23, 1, 2)),
    "rome": ("EPYC-Rome", cpu_signature(23, 49, 0)),
    "milan": ("EPYC-Milan", cpu_signature(25, 1, 1)),
    "genoa": ("EPYC-Genoa", cpu_signature(25, 17, 0)),
}


@dataclass
class SevSpec:
    """The sev-guest object's properties (QEMU names, DESIGN §4) and the RFC's policy."""

    cbitpos: int
    reduced_phys_bits: int
    policy: int = 0x1
    handle: int = 0
    kernel_hashes: bool = False
    dh_cert: bytes | None = None
    session: bytes | None = None


@dataclass
class LaunchInputs:
    firmware: bytes
    kernel: bytes | None = None
    initrd: bytes | None = None
    append: str | None = None


StateListener = Callable[["SevState", "SevState"], None]


class LaunchError(Exception):
    """A launch step failed: `step` names it as QEMU's messages do, `cause` says why."""

    def __init__(self, step: str, cause: SevError | AsidExhausted) -> None:
        super().__init__(step)
        self.step = step
        self.cause = cause


class SevGuest:
    """The SEV side of one guest: firmware handle, ASID, state, measurement."""

    def __init__(self, platform: SevPlatform, machine: Machine, spec: SevSpec,
                 on_state: StateListener | None = None) -> None:
        self.platform = platform
        self.machine = machine
        self.spec = spec
        self.policy = GuestPolicy.from_int(spec.policy)
        self.es = PolicyFlag.ES in self.policy.flags
        self.handle = 0
        self.asid = 0
        self.state = SevState.UNINIT
        self.measurement: bytes | None = None
        self.secret_area: tuple[int, int] | None = None
        self._on_state = on_state

    @property
    def fw(self):  # type: ignore[no-untyped-def]
        return self.platform.fw

    @property
    def debug_allowed(self) -> bool:
        """What `info sev` calls debug: the policy lets the firmware decrypt for the host."""
        return PolicyFlag.NODBG not in self.policy.flags

    @property
    def key_sharing(self) -> bool:
        return PolicyFlag.NOKS not in self.policy.flags

    def _set(self, state: SevState) -> None:
        old, self.state = self.state, state
        if self._on_state is not None and old is not state:
            self._on_state(old, state)

    def launch(self, inputs: LaunchInputs) -> None:
        """Everything up to LAUNCH_MEASURE; on failure nothing is left behind.

        Raises LaunchError for firmware and ASID failures, DomainError for QEMU's own
        checks. A failing LAUNCH_MEASURE is not fatal (QEMU only reports it): the guest stays
        in launch-update without a measurement.
        """
        fw = self.fw
        share = self.spec.handle
        try:
            # KVM_SEV_INIT binds the VM to an ASID first; key-sharing guests share theirs.
            asid = fw.guest_info(share).asid if share else self.platform.reserve(self.es)
            self.asid = asid
        except SevError as e:  # the shared handle does not exist
            raise LaunchError("launch-start", e) from None
        except AsidExhausted as e:
            raise LaunchError("init", e) from None
        try:
            self.handle = fw.launch_start(self.spec.policy, handle=share,
                                          dh_cert=self.spec.dh_cert, session=self.spec.session,
                                          memory=self.machine.store)
            self.platform.bind(self.handle, asid)
        except SevError as e:
            self.destroy()
            raise LaunchError("launch-start", e) from None
        self._set(SevState.LAUNCH_UPDATE)
        try:
            self._load(inputs)
        except SevError as e:
            self.destroy()
            raise LaunchError("update", e) from None
        except BaseException:
            self.destroy()
            raise
        try:
            self.measurement = fw.launch_measure(self.handle)
        except SevError:
            return
        self._set(SevState.LAUNCH_SECRET)

    def _load(self, inputs: LaunchInputs) -> None:
        fw, m = self.fw, self.machine
        image = inputs.firmware
        # The loader copies the image, then the firmware measures and encrypts it in place.
        m.store.write(m.firmware_base, image)
        fw.launch_update_data(self.handle, m.firmware_base, len(image))
        self.secret_area = ovmf.sev_secret_area(image)
        if self.spec.kernel_hashes and inputs.kernel is not None:
            area = ovmf.sev_hashes_table_area(image)
            if area is None:
                raise DomainError("SEV: kernel specified but guest firmware has no hashes "
                                  "table GUID")
            base, size = area
            if not base or size < ovmf.HASHES_TABLE_LEN:
                raise DomainError("SEV: guest firmware hashes table area is invalid "
                                  f"(base=0x{base:x} size=0x{size:x})")
            table = ovmf.build_hashes_table(inputs.kernel, inputs.initrd, inputs.append)
            m.store.write(base, table)
            fw.launch_update_data(self.handle, base, len(table))
        if self.es:
            sig = VCPU_TYPES[self.platform.profile.name][1]
            ap_eip = ovmf.sev_es_reset_eip(image) or 0
            for i, page in enumerate(vmsa_pages(len(m.vcpus), ap_eip, sig)):
                gpa = m.vmsa_base + i * 4096
                m.store.write(gpa, page)
                try:
                    fw.launch_update_vmsa(self.handle, gpa)
                except SevError as e:  # QEMU reports this step apart from the pflash one
                    raise LaunchError("update-vmsa", e) from None

    def inject_secret(self, header: bytes, secret: bytes, gpa: int) -> None:
        self.fw.launch_secret(self.handle, header, gpa, secret)

    def finish(self) -> None:
        """The first transition to running: LAUNCH_FINISH."""
        self.fw.launch_finish(self.handle)
        self._set(SevState.RUNNING)

    def attestation(self, mnonce: bytes) -> bytes:
        return bytes(self.fw.attestation(self.handle, mnonce))

    def destroy(self) -> None:
        """DEACTIVATE, DECOMMISSION, free the ASID: the firmware zeroes the keys."""
        fw = self.fw
        if self.handle:
            with contextlib.suppress(SevError):
                fw.deactivate(self.handle)
            with contextlib.suppress(SevError):
                fw.decommission(self.handle)
        if self.asid:
            self.platform.release(self.handle, self.asid)
        self.handle = self.asid = 0
        self._set(SevState.UNINIT)
