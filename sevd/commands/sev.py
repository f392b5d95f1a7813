"""QEMU's SEV commands (target/i386/sev.c as of 9.2) and sevd's platform commands.

This module is QEMU's side of SEV: the checks QEMU makes before it asks KVM and the
firmware, and the exact texts it reports — including how a firmware failure is printed
(`ret=%d fw_error=%d '%s'`). The firmware itself is sevd.domain.psp; what KVM adds (ASIDs)
is sevd.domain.platform.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from sevd.commands.registry import GUEST, HOST, Ctx, command
from sevd.domain.errors import DomainError
from sevd.domain.platform import AsidExhausted, SevPlatform
from sevd.domain.psp import Command, InitFlag, SevError, SevStatus
from sevd.domain.psp.guest import PlatformState
from sevd.domain.psp.status import status_text
from sevd.domain.sev import LaunchError, SevSpec, SevState
from sevd.formats.policy import GuestPolicy, PolicyFlag

EIO = -5  # what KVM returns for a firmware failure (sev-dev.c: -EIO), QEMU prints it as ret
MAX_MEMORY_READ = 16 << 20

_B64 = {c: i for i, c in enumerate(
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_B64["="] = 0  # GLib ranks '=' as a digit of value 0, then drops the bytes it pads
_STRICT_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?\Z")


def g_base64_decode(text: str) -> bytes:
    """GLib's g_base64_decode(): invalid characters are skipped, a partial group dropped.

    QEMU decodes every base64 argument with it, so "!!" is not an error but zero bytes.
    Canonical base64 (what every client sends) takes binascii's fast path, which gives
    the same bytes; anything else follows GLib's g_base64_decode_step() character by
    character: each group of four emits its first byte, the second unless the group's
    third character is '=', the third unless its fourth is.
    """
    if _STRICT_B64.match(text):
        return binascii.a2b_base64(text)
    out = bytearray()
    v = i = 0
    last = ["", ""]
    for ch in text:
        rank = _B64.get(ch)
        if rank is None:
            continue
        last[1], last[0] = last[0], ch
        v = (v << 6 | rank) & 0xFFFFFF
        i += 1
        if i == 4:
            out.append(v >> 16)
            if last[1] != "=":
                out.append(v >> 8 & 0xFF)
            if last[0] != "=":
                out.append(v & 0xFF)
            i = 0
    return bytes(out)


def fw_error(e: SevError) -> str:
    """`fw_error=%d '%s'`, as QEMU prints a firmware status in most messages."""
    return f"fw_error={int(e.status)} '{status_text(int(e.status))}'"


def fw_err(e: SevError) -> str:
    """`fw_err=%d (%s)`, as QEMU prints it in the capability and attestation messages."""
    return f"fw_err={int(e.status)} ({status_text(int(e.status))})"


def platform(ctx: Ctx) -> SevPlatform:
    p = ctx.app.platform
    if p is None:
        raise DomainError("SEV is not enabled in KVM")
    return p


# -- guest-add: the sev-guest object ----------------------------------------------------------

NO_SEV_DEVICE = "sev_common_kvm_init: Failed to open /dev/sev 'No such file or directory'"


def sev_spec(ctx: Ctx, args: dict[str, Any]) -> SevSpec:
    """Build the sev-guest object from guest-add arguments, with sev_common_kvm_init()'s
    checks and texts."""
    plat = ctx.app.platform
    if plat is None:
        # A host without SEV (profile none): QEMU cannot open the SEV device.
        raise DomainError(NO_SEV_DEVICE)
    prof = plat.profile
    where = "sev_common_kvm_init"
    cbitpos = args.get("cbitpos", 0)  # QEMU's default, which the check then refuses
    if cbitpos != prof.cbitpos:
        raise DomainError(f"{where}: cbitpos check failed, host '{prof.cbitpos}' "
                          f"requested '{cbitpos}'")
    rpb = args["reduced-phys-bits"]
    if not 1 <= rpb <= 63:
        raise DomainError(f"{where}: reduced_phys_bits check failed, it should be in the "
                          f"range of 1 to 63, requested '{rpb}'")
    policy = args.get("policy", 0x1)
    if PolicyFlag.ES in GuestPolicy.from_int(policy).flags and not prof.es:
        raise DomainError(f"{where}: guest policy requires SEV-ES, but host SEV-ES support "
                          "unavailable")
    spec = SevSpec(cbitpos=cbitpos, reduced_phys_bits=rpb, policy=policy,
                   handle=args.get("handle", 0), kernel_hashes=args.get("kernel-hashes", False))
    spec.dh_cert = _blob(ctx, args, "dh-cert")
    spec.session = _blob(ctx, args, "session")
    return spec


def _blob(ctx: Ctx, args: dict[str, Any], key: str) -> bytes | None:
    inline, path = args.get(key), args.get(f"{key}-file")
    if inline is not None and path is not None:
        raise DomainError(f"sev-guest: '{key}' and '{key}-file' cannot be used together")
    if path is not None:
        data = ctx.app.read_file(path)
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise DomainError(f"SEV: Failed to read '{path}' (not base64 text)") from None
        return g_base64_decode(text)
    if inline is not None:
        return g_base64_decode(inline)
    return None


def launch_error_text(e: LaunchError) -> str:
    """How QEMU reports a failed launch step (its init aborts; sevd's guest-add fails)."""
    cause = e.cause
    if isinstance(cause, AsidExhausted):
        # KVM_SEV_INIT cannot get an ASID: -EBUSY, no firmware error.
        return f"sev_common_kvm_init: failed to initialize ret={cause.errno} fw_error=0 ''"
    if e.step == "launch-start":
        return ("sev_common_kvm_init: failed to create encryption context "
                f"(sev_launch_start: LAUNCH_START ret={EIO} {fw_error(cause)})")
    if e.step == "update-vmsa":
        # sev_launch_get_measure(): the VMSAs are measured at machine-init-done.
        return f"sev_launch_update_vmsa: LAUNCH_UPDATE_VMSA ret={EIO} {fw_error(cause)}"
    return (f"SEV: Failed to encrypt pflash rom (sev_launch_update_data: LAUNCH_UPDATE "
            f"ret={EIO} {fw_error(cause)})")


def launch_finish_text(e: SevError) -> str:
    return f"sev_launch_finish: LAUNCH_FINISH ret={EIO} {fw_error(e)}"


# -- guest scope: QEMU's commands -------------------------------------------------------------

@command("query-sev", GUEST)
def query_sev(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    s = ctx.the_guest.sev
    if s is None:
        # SEV compiled in but not used: enabled false, zeroed fields (sev_get_info()).
        return {"enabled": False, "api-major": 0, "api-minor": 0, "build-id": 0,
                "state": "uninit", "sev-type": "sev", "policy": 0, "handle": 0}
    prof = s.platform.profile
    return {"enabled": True, "api-major": prof.api_major, "api-minor": prof.api_minor,
            "build-id": prof.build, "state": s.state.value, "sev-type": "sev",
            "policy": s.spec.policy, "handle": s.handle}


@command("query-sev-launch-measure", GUEST)
def query_sev_launch_measure(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    s = ctx.the_guest.sev
    if s is None or s.measurement is None or s.state.number < SevState.LAUNCH_SECRET.number:
        raise DomainError("SEV launch measurement is not available")
    return {"data": base64.b64encode(s.measurement).decode()}


@command("sev-inject-launch-secret", GUEST)
def sev_inject_launch_secret(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    g = ctx.the_guest
    s = g.sev
    if s is None:
        raise DomainError("SEV not enabled for guest")
    gpa = args.get("gpa")
    if gpa is None:
        if s.secret_area is None:
            raise DomainError("SEV: no secret area found in OVMF, gpa must be specified.")
        gpa = s.secret_area[0]
    gpa &= (1 << 64) - 1  # uint64: QEMU wraps negative values
    if s.state is not SevState.LAUNCH_SECRET:
        raise DomainError(f"SEV: Not in correct state. (LSECRET) {s.state.number:x}")
    header = g_base64_decode(args["packet-header"])
    if not header:
        raise DomainError("SEV: Failed to decode sequence header")
    data = g_base64_decode(args["secret"])
    if not data:
        raise DomainError("SEV: Failed to decode data")
    # gpa2hva(): the whole range must be guest RAM.
    region = g.machine.region_at(gpa)
    if region is None:
        raise DomainError(f"SEV: Failed to calculate guest address: No memory is mapped "
                          f"at address 0x{gpa:x}")
    if region.kind not in ("ram", "rom"):  # gpa2hva(): RAM, ROM and ROMD (pflash) pass
        raise DomainError(f"SEV: Failed to calculate guest address: Memory at address "
                          f"0x{gpa:x} is not RAM")
    if gpa + len(data) > region.end:
        raise DomainError(f"SEV: Failed to calculate guest address: Size of memory region "
                          f"at 0x{gpa:x} exceeded.")
    try:
        s.inject_secret(header, data, gpa)
    except SevError as e:
        raise DomainError(f"SEV: failed to inject secret ret={EIO} {fw_error(e)}") from None
    return {}


@command("query-sev-attestation-report", GUEST)
def query_sev_attestation_report(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    s = ctx.the_guest.sev
    if s is None:
        raise DomainError("SEV is not enabled")
    mnonce = g_base64_decode(args["mnonce"])
    if len(mnonce) != 16:
        raise DomainError(f"SEV: mnonce must be 16 bytes (got {len(mnonce)})")
    try:
        # QEMU first queries the length (the firmware answers INVALID_LENGTH), then asks.
        s.fw.attestation(s.handle, mnonce, 0)
    except SevError as e:
        if e.status != SevStatus.INVALID_LENGTH:
            raise DomainError("SEV: Failed to query the attestation report length "
                              f"ret={EIO} {fw_err(e)}") from None
    try:
        report = s.attestation(mnonce)
    except SevError as e:
        raise DomainError(f"SEV: Failed to get attestation report ret={EIO} {fw_err(e)}: "
                          "Input/output error") from None
    return {"data": base64.b64encode(report).decode()}


@command("query-sev-capabilities")
def query_sev_capabilities(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    plat = platform(ctx)
    fw = plat.fw
    pdh, chain = _length_query(fw.pdh_cert_export, "SEV: Failed to export PDH cert",
                               pdh_len=0, certs_len=0)
    cpu0 = _length_query(fw.get_id, "SEV: Failed to get ID", length=0)
    return {"pdh": base64.b64encode(pdh).decode(), "cert-chain": base64.b64encode(chain).decode(),
            "cpu0-id": base64.b64encode(cpu0[:64]).decode(),
            "cbitpos": plat.profile.cbitpos, "reduced-phys-bits": 1}


def _length_query(call: Any, what: str, **zero: int) -> Any:
    """QEMU's two-step firmware calls: a length query (INVALID_LENGTH expected), then the
    call itself; any other failure is reported as `what ret=%d fw_err=%d (%s)`."""
    try:
        call(**zero)
    except SevError as e:
        if e.status != SevStatus.INVALID_LENGTH:
            raise DomainError(f"{what} ret={EIO} {fw_err(e)}") from None
    try:
        return call()
    except SevError as e:
        raise DomainError(f"{what} ret={EIO} {fw_err(e)}") from None


@command("x-sevd-query-memory", GUEST)
def x_sevd_query_memory(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    g = ctx.the_guest
    gpa, size = args["gpa"], args["size"]
    if not 0 <= size <= MAX_MEMORY_READ:
        raise DomainError(f"Invalid size {size}: it must be 0 to {MAX_MEMORY_READ} bytes")
    if size == 0:
        return {"data": ""}
    if gpa < 0 or (size and not _covered(g.machine, gpa, size)):
        raise DomainError(f"Range 0x{gpa & ((1 << 64) - 1):x}+{size} is outside guest memory")
    return {"data": base64.b64encode(g.machine.store.read(gpa, size)).decode()}


def _covered(machine: Any, gpa: int, size: int) -> bool:
    """Whether RAM/ROM regions cover all of [gpa, gpa+size), adjacent ones included (the
    firmware ends at 4 GiB where high RAM begins)."""
    addr, end = gpa, gpa + size
    while addr < end:
        region = machine.region_at(addr)
        if region is None:
            return False
        addr = region.end
    return True


# -- host scope: the platform -----------------------------------------------------------------

_STATE = {PlatformState.UNINIT: "uninit", PlatformState.INIT: "init",
          PlatformState.WORKING: "working"}


@command("query-sev-platform", HOST)
def query_sev_platform(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    plat = platform(ctx)
    try:
        st = plat.fw.platform_status()
    except SevError as e:
        raise DomainError(f"PLATFORM_STATUS failed: {fw_error(e)}") from None
    prof = plat.profile
    c = prof.cpuid
    es, sev = prof.es_asids, prof.sev_asids
    return {
        "profile": prof.name, "api-major": st.api_major, "api-minor": st.api_minor,
        "build-id": st.build, "state": _STATE[st.state],
        "owner": "external" if st.owner else "self", "config-es": st.config_es,
        "guest-count": st.guest_count, "cbitpos": prof.cbitpos,
        "reduced-phys-bits": prof.phys_addr_reduction, "es": prof.es,
        "attestation": prof.attestation,
        "cpuid": {"eax": c.eax, "ebx": c.ebx, "ecx": c.ecx, "edx": c.edx},
        "asids": {"es-min": es.start if es else 0, "es-max": es.stop - 1 if es else 0,
                  "es-used": plat.asids_used(True),
                  "sev-min": sev.start, "sev-max": sev.stop - 1,
                  "sev-used": plat.asids_used(False)},
    }


@command("query-sev-certificates", HOST)
def query_sev_certificates(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    plat = platform(ctx)
    fw = plat.fw
    try:
        pdh, chain = fw.pdh_cert_export()
    except SevError as e:
        raise DomainError(f"PDH_CERT_EXPORT failed: {fw_error(e)}") from None
    n = len(pdh)
    b64 = base64.b64encode
    roots = fw.amd_root_chain()  # ASK ‖ ARK, AMD CA format
    ask, ark = _split_roots(roots)
    return {"pdh": b64(pdh).decode(), "pek": b64(chain[:n]).decode(),
            "oca": b64(chain[n:2 * n]).decode(), "cek": b64(fw.kds_cek()).decode(),
            "ask": b64(ask).decode(), "ark": b64(ark).decode()}


def _split_roots(chain: bytes) -> tuple[bytes, bytes]:
    from sevd.formats.amdca import AmdCaCert
    n = AmdCaCert.encoded_length(chain)  # from_bytes takes exactly one certificate
    return chain[:n], chain[n:]


def _platform_op(ctx: Ctx, name: str, op: Any, *a: Any) -> dict[str, Any]:
    try:
        op(*a)
    except SevError as e:
        raise DomainError(f"{name} failed: {fw_error(e)}") from None
    ctx.app.identity_changed()
    return {}


@command("sev-pdh-generate", HOST)
def sev_pdh_generate(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    return _platform_op(ctx, "PDH_GEN", platform(ctx).fw.pdh_gen)


@command("sev-pek-generate", HOST)
def sev_pek_generate(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    return _platform_op(ctx, "PEK_GEN", platform(ctx).fw.pek_gen)


@command("sev-platform-reset", HOST)
def sev_platform_reset(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    plat = platform(ctx)
    fw = plat.fw

    def reset() -> None:
        # Linux's SEV_FACTORY_RESET (sev_ioctl_do_reset): refused while guests exist
        # (WORKING); from INIT it SHUTDOWNs first, since PLATFORM_RESET needs UNINIT. The
        # platform is INITed again, as the kernel does before the next command needing it.
        if fw.state is PlatformState.WORKING:
            raise SevError(SevStatus.INVALID_PLATFORM_STATE)
        if fw.state is PlatformState.INIT:
            fw.shutdown()
        try:
            fw.platform_reset()
        finally:
            fw.init(int(InitFlag.ES) if plat.profile.es else 0)

    return _platform_op(ctx, "PLATFORM_RESET", reset)


@command("sev-pek-csr", HOST)
def sev_pek_csr(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    try:
        csr = platform(ctx).fw.pek_csr()
    except SevError as e:
        raise DomainError(f"PEK_CSR failed: {fw_error(e)}") from None
    return {"data": base64.b64encode(csr).decode()}


@command("sev-pek-cert-import", HOST)
def sev_pek_cert_import(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    try:
        pek = base64.b64decode(args["pek-cert"], validate=True)
        oca = base64.b64decode(args["oca-cert"], validate=True)
    except (binascii.Error, ValueError):  # ValueError: characters outside ASCII
        raise DomainError("pek-cert and oca-cert must be base64") from None
    return _platform_op(ctx, "PEK_CERT_IMPORT", platform(ctx).fw.pek_cert_import, pek, oca)


def _command_enum(name: str) -> Command:
    return Command[name.upper().replace("-", "_")]


@command("sev-fault-inject", HOST)
def sev_fault_inject(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    fw = platform(ctx).fw
    handle = None
    if "guest" in args:
        slot = ctx.app.slots.get(args["guest"])
        if slot is None or slot.guest.sev is None or not slot.guest.sev.handle:
            raise DomainError(f"Guest '{args['guest']}' not found or has no SEV handle")
        handle = slot.guest.sev.handle
    try:
        fw.faults.arm(_command_enum(args["command"]), args["status"], args.get("count", 1),
                      handle)
    except ValueError as e:
        raise DomainError(str(e)) from None
    return {}


@command("query-sev-faults", HOST)
def query_sev_faults(ctx: Ctx, args: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    names = {slot.guest.sev.handle: n for n, slot in ctx.app.slots.items()
             if slot.guest.sev is not None}
    for rule in platform(ctx).fw.faults.rules():
        item: dict[str, Any] = {"command": rule.command.name.lower().replace("_", "-"),
                                "status": int(rule.status), "count": rule.remaining}
        if rule.handle is not None:
            item["guest"] = names.get(rule.handle, f"handle {rule.handle}")
        out.append(item)
    return out


@command("sev-fault-clear", HOST)
def sev_fault_clear(ctx: Ctx, args: dict[str, Any]) -> dict[str, Any]:
    cmd = args.get("command")
    platform(ctx).fw.faults.clear(_command_enum(cmd) if cmd else None)
    return {}
