"""The guest owner's verbs of ``sevctl``, compatible with virtee's ``sevctl`` (v0.6.2).

``add_owner_commands`` registers, on the caller's sub-parsers:

``session [--name NAME] PDH-FILE POLICY``
    Writes ``NAME_godh.b64``, ``NAME_session.b64``, ``NAME_tek.bin``, ``NAME_tik.bin``
    (default NAME ``vm``); the key files get mode 0600. POLICY is decimal (as virtee) or
    ``0x`` hex. Unlike virtee's sevctl, the policy is MACed exactly as given: virtee's
    ``Policy::from(u32)`` drops reserved bits and re-encodes bits 16–31, so its session
    only matches real firmware for policies below 0x10000 (reference §16.9).
``measurement build``
    virtee's options: ``--api-major --api-minor --build-id --policy`` (int or hex),
    ``--tik`` (path or base64), ``--nonce | --launch-measure-blob`` (path or base64),
    ``--launch-digest`` (base64) or ``--firmware/--ovmf PATH [--kernel --initrd --cmdline]
    [--num-cpus N --vmsa-cpu0 F --vmsa-cpu1 F]``, ``--outfile``. Prints base64 of the
    48-byte ``MEASURE‖MNONCE``, or ``Wrote outfile: F``.
``secret build --tik --tek --launch-measure-blob --secret GUID:FILE… [--iv B64] HEADER PAYLOAD``
    Writes the 52-byte packet header and the encrypted OVMF secret table; prints
    ``Wrote header to: …`` and ``Wrote payload to: …``.
``verify [--sev FILE|DIR] [--oca FILE] [--ca FILE|DIR] [-q]``
    Prints the chain as virtee does (``PDH EP384 D256 <sha256>`` …, without colours) and
    exits 1 with ``SEV/CA certificate verification failed`` on a bad link. ``--sev`` is
    ``PDH‖PEK‖OCA‖CEK[‖ASK‖ARK]`` (``sevctl export [--full]``) or a directory of
    ``pdh.cert``… (sev-tool names); ``--ca`` is ``ASK‖ARK`` or a directory with
    ``ask.cert``/``ark.cert``. There are no built-in AMD roots: a simulated platform's CEK
    is signed by sevd's simulated root, which the owner passes (or pins) explicitly.
``validate [--mnonce B64] [--launch-digest B64] [--policy P] CHAIN REPORT``
    Checks a 208-byte attestation report against the chain's PEK (virtee ``sevctl
    validate``: silent on success); the options add freshness/digest/policy checks.

Each verb's ``func(args) -> int`` returns the exit status; errors are one line on stderr.
Imports only ``sevowner`` and ``sevd.formats``. Never prints or logs TEK/TIK.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

from sevowner.attestation import AttestationError, verify_attestation_report
from sevowner.chain import (
    CaChain,
    SevChain,
    check_chain,
    format_chain,
    load_ca_chain,
    load_sev_chain,
    split_sev_chain,
)
from sevowner.measurement import build_measurement, expected_launch_digest
from sevowner.secret import build_launch_secret
from sevowner.session import create_session, save_session

from sevd.formats.measure import DIGEST_LEN, MEASUREMENT_LEN
from sevd.formats.policy import PolicyFlag
from sevd.formats.sevcert import SEV_CERT_LEN, SevCert

__all__ = ["ChainFetcher", "OwnerError", "add_owner_commands"]

#: Returns the platform's chain (``PDH‖PEK‖OCA‖CEK[‖ASK‖ARK]``) when ``verify`` has no ``--sev``.
ChainFetcher = Callable[[argparse.Namespace], bytes]


class OwnerError(Exception):
    """A user-facing error of an owner verb (printed as one line, exit status 1)."""


# -- argument helpers (virtee measurement.rs parse_hex_or_int / parse_base64_or_path) -------


def parse_hex_or_int(name: str, value: str) -> int:
    """A u32 given as decimal or ``0x`` hex."""
    try:
        result = int(value[2:], 16) if value.lower().startswith("0x") else int(value, 10)
    except ValueError:
        raise OwnerError(f"{name}={value} value must be int or hex") from None
    if not 0 <= result <= 0xFFFF_FFFF:
        raise OwnerError(f"{name}={value} value must be int or hex")
    return result


def _parse_u8(name: str, value: str) -> int:
    result = parse_hex_or_int(name, value)
    if result > 0xFF:
        raise OwnerError(f"{name}={value} must fit in one byte")
    return result


def parse_base64_or_path(name: str, value: str) -> bytes:
    """The contents of the file ``value`` if it exists, else ``value`` decoded as base64."""
    path = Path(value)
    if path.is_file():
        try:
            return path.read_bytes()
        except OSError as exc:
            raise OwnerError(f"reading path {name}={value} failed: {exc.strerror}") from None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise OwnerError(f"failed to base64 decode {name}={value}") from None


def _b64(name: str, value: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise OwnerError(f"failed to base64 decode {name}") from None


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise OwnerError(f"failed to read {what} {path}: {exc.strerror}") from None


def _key(name: str, value: str) -> bytes:
    key = parse_base64_or_path(name, value)
    if len(key) != 16:
        raise OwnerError(f"{name} must be 16 bytes, got {len(key)}")
    return key


def _run(body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def func(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except (OwnerError, ValueError, OSError) as exc:
            print(f"sevctl: {exc}", file=sys.stderr)
            return 1

    func.__doc__ = body.__doc__
    return func


# -- session ---------------------------------------------------------------------------------


def _session(args: argparse.Namespace) -> int:
    """sevctl session [--name NAME] PDH-FILE POLICY"""
    policy = parse_hex_or_int("policy", args.policy)
    pdh = _read(args.pdh, "PDH file")
    try:
        session = create_session(pdh, policy)
    except ValueError as exc:
        raise OwnerError(
            f"could not start session based off of provided certificate: {exc}"
        ) from None
    save_session(session, args.name)
    return 0


# -- measurement build -----------------------------------------------------------------------


def _measurement_digest(args: argparse.Namespace, policy: int) -> bytes:
    if args.launch_digest is not None:
        digest = _b64("--launch-digest", args.launch_digest)
        if len(digest) != DIGEST_LEN:
            raise OwnerError(f"--launch-digest must decode to {DIGEST_LEN} bytes")
        return digest
    if args.firmware is None:
        raise OwnerError("One of --firmware or --launch-digest must be specified.")
    if args.kernel is None and (args.initrd is not None or args.cmdline is not None):
        raise OwnerError("--initrd and --cmdline need --kernel")
    firmware = _read(args.firmware, "firmware")
    kernel = _read(args.kernel, "kernel") if args.kernel else None
    initrd = _read(args.initrd, "initrd") if args.initrd else None
    vmsas: list[bytes] = []
    if policy & PolicyFlag.ES:
        if args.num_cpus is None:
            raise OwnerError("SEV-ES policy bit is set, CPU/VMSA info must be specified")
        if args.vmsa_cpu0 is None or args.vmsa_cpu1 is None:
            raise OwnerError("--num-cpus, --vmsa-cpu0, --vmsa-cpu1 must be specified together")
        vmsa1 = _read(args.vmsa_cpu1, "VMSA")
        vmsas = [_read(args.vmsa_cpu0, "VMSA")] + [vmsa1] * max(args.num_cpus - 1, 0)
    try:
        return expected_launch_digest(firmware, kernel, initrd, args.cmdline, vmsas)
    except ValueError as exc:
        raise OwnerError(str(exc)) from None


def _measurement_build(args: argparse.Namespace) -> int:
    """sevctl measurement build"""
    policy = parse_hex_or_int("--policy", args.policy)
    digest = _measurement_digest(args, policy)
    api_major = _parse_u8("--api-major", args.api_major)
    api_minor = _parse_u8("--api-minor", args.api_minor)
    build_id = _parse_u8("--build-id", args.build_id)
    tik = _key("--tik", args.tik)
    if args.nonce is not None:
        nonce = parse_base64_or_path("--nonce", args.nonce)
    elif args.launch_measure_blob is not None:
        blob = parse_base64_or_path("--launch-measure-blob", args.launch_measure_blob)
        if len(blob) != MEASUREMENT_LEN:
            raise OwnerError(f"--launch-measure-blob must be {MEASUREMENT_LEN} bytes")
        nonce = blob[DIGEST_LEN:]
    else:
        raise OwnerError("One of --nonce or --launch-measure-blob must be specified.")
    if len(nonce) != 16:
        raise OwnerError(f"the nonce must be 16 bytes, got {len(nonce)}")
    out = build_measurement(tik, api_major, api_minor, build_id, policy, digest, nonce)
    if args.outfile:
        Path(args.outfile).write_bytes(out)
        print(f"Wrote outfile: {args.outfile}")
    else:
        print(base64.b64encode(out).decode())
    return 0


# -- secret build ----------------------------------------------------------------------------


def _parse_secrets(values: list[str]) -> dict[uuid.UUID, bytes]:
    secrets: dict[uuid.UUID, bytes] = {}
    for value in values:
        guid_text, sep, filename = value.partition(":")
        if not sep:
            raise OwnerError("Unexpected --secret format (expected GUID:FILE)")
        try:
            guid = uuid.UUID(guid_text)
        except ValueError:
            raise OwnerError(f"failed to parse string as UUID: {guid_text}") from None
        secrets[guid] = _read(filename, "secret path")
    return secrets


def _secret_build(args: argparse.Namespace) -> int:
    """sevctl secret build"""
    tek = _key("--tek", args.tek)
    tik = _key("--tik", args.tik)
    secrets = _parse_secrets(args.secret)
    iv = _b64("--iv", args.iv) if args.iv is not None else None
    blob = parse_base64_or_path("--launch-measure-blob", args.launch_measure_blob)
    if len(blob) < DIGEST_LEN:
        raise OwnerError(f"--launch-measure-blob must hold at least {DIGEST_LEN} bytes")
    # As sevctl: the MAC takes the first 32 bytes (MEASURE) of the LAUNCH_MEASURE output.
    packet = build_launch_secret(tek, tik, blob[:DIGEST_LEN], secrets, iv=iv)
    Path(args.header_file).write_bytes(packet.header)
    print(f"Wrote header to: {args.header_file}")
    Path(args.payload_file).write_bytes(packet.payload)
    print(f"Wrote payload to: {args.payload_file}")
    return 0


# -- verify / validate -----------------------------------------------------------------------


def _load_chain(
    args: argparse.Namespace, fetch: ChainFetcher | None
) -> tuple[SevChain, CaChain | None]:
    if args.sev is not None:
        return load_sev_chain(args.sev)
    if fetch is None:
        raise OwnerError(
            "no --sev given: pass the platform's chain (PDH‖PEK‖OCA‖CEK[‖ASK‖ARK], e.g. "
            "sevd's full-chain export) or a directory of pdh/pek/oca/cek.cert"
        )
    return split_sev_chain(fetch(args))


def _make_verify(fetch: ChainFetcher | None) -> Callable[[argparse.Namespace], int]:
    def _verify(args: argparse.Namespace) -> int:
        """sevctl verify"""
        chain, ca = _load_chain(args, fetch)
        if args.oca is not None:
            chain.oca = SevCert.from_bytes(_read(args.oca, "OCA certificate"))
        if args.ca is not None:
            ca = load_ca_chain(args.ca)
        if not args.quiet:
            print(format_chain(chain, ca))
        failures = [r for r in check_chain(chain, ca) if not r.ok]
        if failures:
            detail = "; ".join(str(r) for r in failures)
            raise OwnerError(f"SEV/CA certificate verification failed ({detail})")
        return 0

    return _verify


def _pek_from(path: str) -> SevCert:
    p = Path(path)
    if p.is_dir():
        return SevCert.from_bytes(_read(p / "pek.cert", "PEK certificate"))
    data = _read(p, "SEV certificate chain")
    if len(data) == SEV_CERT_LEN:
        return SevCert.from_bytes(data)
    chain, _ = split_sev_chain(data)
    return chain.pek


def _validate(args: argparse.Namespace) -> int:
    """sevctl validate"""
    pek = _pek_from(args.chain)
    report_path = Path(args.report)
    if report_path.is_dir():
        report_path = report_path / "attestation_report.bin"
    report = _read(report_path, "attestation report")
    mnonce = parse_base64_or_path("--mnonce", args.mnonce) if args.mnonce else None
    digest = _b64("--launch-digest", args.launch_digest) if args.launch_digest else None
    policy = parse_hex_or_int("--policy", args.policy) if args.policy is not None else None
    try:
        verify_attestation_report(report, pek, mnonce=mnonce, launch_digest=digest, policy=policy)
    except AttestationError as exc:
        raise OwnerError(str(exc)) from None
    return 0


# -- registration ----------------------------------------------------------------------------


def add_owner_commands(
    subparsers: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    chain_fetcher: ChainFetcher | None = None,
) -> None:
    """Register ``session``, ``measurement build``, ``secret build``, ``verify`` and
    ``validate`` on ``subparsers``; each sets ``func(args) -> int``.

    ``chain_fetcher`` (optional) lets ``verify`` without ``--sev`` obtain the platform's
    chain, e.g. from sevd over its socket.
    """
    s = subparsers.add_parser(
        "session",
        help="create a launch session (GODH, session blob, TEK/TIK) for a PDH",
        description="Writes NAME_godh.b64, NAME_session.b64, NAME_tek.bin and NAME_tik.bin. "
        "Unlike virtee's sevctl, policy bits 16-31 are MACed as given.",
    )
    s.add_argument("--name", default="vm", help="file name prefix (default: vm)")
    s.add_argument("pdh", metavar="PDH-CERT-PATH", help="the platform's PDH certificate")
    s.add_argument("policy", metavar="POLICY", help="32-bit guest policy (decimal or 0x hex)")
    s.set_defaults(func=_run(_session))

    m = subparsers.add_parser("measurement", help="launch measurement tools")
    msub = m.add_subparsers(dest="measurement_cmd", required=True, metavar="CMD")
    mb = msub.add_parser("build", help="build the expected launch measurement")
    mb.add_argument("--api-major", required=True, help="SEV host API major (int or hex)")
    mb.add_argument("--api-minor", required=True, help="SEV host API minor (int or hex)")
    mb.add_argument("--build-id", required=True, help="SEV host build ID (int or hex)")
    mb.add_argument("--policy", required=True, help="SEV guest policy (int or hex)")
    mb.add_argument("--tik", required=True, help="tik data (path or base64)")
    mb.add_argument("--nonce", help="Expected nonce (path or base64)")
    mb.add_argument(
        "--launch-measure-blob",
        help="Extract nonce from output of LAUNCH_MEASURE, such as reported by qemu "
        "query-sev-launch-measure (path or base64)",
    )
    mb.add_argument("--launch-digest", help="Launch digest in base64")
    mb.add_argument("--firmware", "--ovmf", dest="firmware", help="Path to firmware/OVMF binary")
    mb.add_argument("--kernel", help="Path to kernel")
    mb.add_argument("--initrd", help="Path to initrd")
    mb.add_argument("--cmdline", help="Kernel commandline")
    mb.add_argument("--num-cpus", type=int, help="Number of virtual CPUs")
    mb.add_argument("--vmsa-cpu0", help="path to VMSA state for boot CPU")
    mb.add_argument("--vmsa-cpu1", help="path to VMSA state for additional CPUs")
    mb.add_argument("--outfile", help="Optionally write binary content to filename")
    mb.set_defaults(func=_run(_measurement_build))

    sec = subparsers.add_parser("secret", help="launch secret tools")
    ssub = sec.add_subparsers(dest="secret_cmd", required=True, metavar="CMD")
    sb = ssub.add_parser("build", help="build a LAUNCH_SECRET header and payload")
    sb.add_argument("--tik", required=True, help="tik data (path or base64)")
    sb.add_argument("--tek", required=True, help="tek data (path or base64)")
    sb.add_argument(
        "--launch-measure-blob",
        required=True,
        help="Output from LAUNCH_MEASURE (such as via qemu or libvirt), or `sevctl "
        "measurement build` (path or base64)",
    )
    sb.add_argument("--iv", help=argparse.SUPPRESS)  # deterministic IV, for tests (as virtee)
    sb.add_argument(
        "--secret",
        action="append",
        default=[],
        help="Secret values to inject. Format is UUID:/path/to/secret.txt",
    )
    sb.add_argument("header_file", metavar="header-file", help="Path to output secret header file")
    sb.add_argument(
        "payload_file", metavar="payload-file", help="Path to output secret payload file"
    )
    sb.set_defaults(func=_run(_secret_build))

    v = subparsers.add_parser("verify", help="verify the SEV/CA certificate chain")
    v.add_argument("--sev", help="Read SEV chain from specified file (or directory)")
    v.add_argument("--oca", help="Read OCA certificate from specified file")
    v.add_argument("--ca", help="Read CA chain (ASK‖ARK) from specified file (or directory)")
    v.add_argument("-q", "--quiet", action="store_true", help="Don't print the chain")
    v.set_defaults(func=_run(_make_verify(chain_fetcher)))

    va = subparsers.add_parser("validate", help="validate a legacy attestation report")
    va.add_argument("chain", metavar="SEV-CERT-CHAIN", help="PDH‖PEK‖OCA‖CEK, a PEK, or a dir")
    va.add_argument("report", metavar="ATTESTATION-REPORT", help="the 208-byte report")
    va.add_argument("--mnonce", help="the mnonce sent (path or base64)")
    va.add_argument("--launch-digest", help="expected launch digest (base64)")
    va.add_argument("--policy", help="expected guest policy (int or hex)")
    va.set_defaults(func=_run(_validate))
