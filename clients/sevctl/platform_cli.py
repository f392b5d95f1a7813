"""virtee-compatible platform verbs of sevctl, answered by sevd instead of /dev/sev:
`ok`, `show`, `rotate`, `reset`, `generate`, `provision`.

Scripts written for virtee's sevctl keep working against a simulated host: the same verb
names, arguments and output formats (`ok` prints `[ PASS ] - …` lines with the same test
names and nesting), with the values read from sevd's simulated platform.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sevctl.qmpclient import CliError, Connection
from sevd.formats.sevcert import Algo, SevCert, Usage

_INDENT = 2


async def _platform(socket: str) -> dict[str, Any]:
    async with Connection(socket) as c:
        return dict(await c.execute("query-sev-platform"))


async def ok(args: argparse.Namespace) -> int:
    """`sevctl ok [sev|es]`: virtee's probe report, for the simulated host."""
    try:
        p = await _platform(args.socket)
    except CliError as e:
        p = {"error": str(e)}
    gen = args.generation
    mask = {"sev": 1, "es": 3, None: 3}[gen]
    cpuid = p.get("cpuid", {})
    eax, ebx = cpuid.get("eax", 0), cpuid.get("ebx", 0)
    reachable = "error" not in p
    Check = tuple[str, int, Callable[[], tuple[bool, str | None]], list[Any]]

    def bit(n: int) -> Callable[[], tuple[bool, str | None]]:
        return lambda: (bool(eax & (1 << n)), None)

    def value(v: int) -> Callable[[], tuple[bool, str | None]]:
        return lambda: (True, str(v))

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    socket_msg = f"sevd control socket {args.socket}"
    tree: list[Check] = [
        ("AMD CPU", 1, lambda: (reachable, None), [
            ("Microcode support", 1, lambda: (reachable, None), []),
            ("Secure Memory Encryption (SME)", 1, bit(0), []),
            ("Secure Encrypted Virtualization (SEV)", 1, bit(1), [
                ("Encrypted State (SEV-ES)", 2, bit(3), []),
                ("Physical address bit reduction", 1, value((ebx >> 6) & 0x3F), []),
                ("C-bit location", 1, value(ebx & 0x3F), []),
                ("Number of encrypted guests supported simultaneously", 1,
                 value(cpuid.get("ecx", 0)), []),
                ("Minimum ASID value for SEV-enabled, SEV-ES disabled guest", 1,
                 value(cpuid.get("edx", 0)), []),
                ("SEV enabled in KVM", 1, lambda: (reachable, "enabled"), []),
                ("Reading /dev/sev", 1, lambda: (reachable, f"{socket_msg} readable"), []),
                ("Writing /dev/sev", 1, lambda: (reachable, f"{socket_msg} writable"), []),
            ]),
            ("Page flush MSR", 1, bit(2), []),
        ]),
        ("KVM supported", 1, lambda: (reachable, "API version: 12"), []),
        ("memlock limit", 1, lambda: (True, f"Soft: {soft} | Hard: {hard}"), []),
    ]
    lines: list[str] = []

    def emit(stat: str, level: int, name: str, msg: str | None = None) -> None:
        lines.append(f"[ {stat:^4} ] {'':{level}}- {name}{': ' + msg if msg else ''}")

    def skip(checks: list[Check], level: int) -> None:
        for name, _, _, sub in checks:
            emit("SKIP", level, name)
            skip(sub, level + _INDENT)

    def run(checks: list[Check], level: int) -> bool:
        passed = True
        for name, gen_mask, fn, sub in checks:
            if gen_mask & mask != gen_mask:
                emit("SKIP", level, name)
                skip(sub, level + _INDENT)
                continue
            good, msg = fn()
            emit("PASS" if good else "FAIL", level, name, msg)
            if good:
                passed = run(sub, level + _INDENT) and passed
            else:
                passed = False
                skip(sub, level + _INDENT)
        return passed

    passed = run(tree, 0)
    if not args.quiet:
        print("\n".join(lines))
    if not passed:
        raise CliError("One or more tests in sevctl-ok reported a failure")
    return 0


async def show(args: argparse.Namespace) -> int:
    """`sevctl show {flags|guests|identifier|version}` (virtee's output formats)."""
    p = await _platform(args.socket)
    if args.what == "flags":
        flags = [name for name, on in (("owned", p["owner"] == "external"),
                                       ("es", p["config-es"])) if on]
        if flags:
            print("\n".join(flags))
    elif args.what == "guests":
        print(p["guest-count"])
    elif args.what == "identifier":
        async with Connection(args.socket) as c:
            caps = await c.execute("query-sev-capabilities")
        print(base64.b64decode(caps["cpu0-id"]).hex().upper())
    else:
        print(f"{p['api-major']}.{p['api-minor']}.{p['build-id']}")
    return 0


async def _simple(args: argparse.Namespace, command: str) -> int:
    async with Connection(args.socket) as c:
        await c.execute(command)
    return 0


async def rotate(args: argparse.Namespace) -> int:
    """`sevctl rotate`: PDH_GEN."""
    return await _simple(args, "sev-pdh-generate")


async def reset(args: argparse.Namespace) -> int:
    """`sevctl reset`: PLATFORM_RESET."""
    return await _simple(args, "sev-platform-reset")


async def generate(args: argparse.Namespace) -> int:
    """`sevctl generate CERT KEY`: a self-signed OCA certificate and its key (0600)."""
    key = ec.generate_private_key(ec.SECP384R1())
    cert = SevCert.new(Usage.OCA, Algo.ECDSA_SHA256, key.public_key())
    cert.sign(key, Usage.OCA)
    with open(args.cert, "wb") as f:
        f.write(cert.to_bytes())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(args.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(args.key, 0o600)
    return 0


async def provision(args: argparse.Namespace) -> int:
    """`sevctl provision CERT KEY`: PEK_CSR, signed with the owner's OCA key,
    PEK_CERT_IMPORT — the platform becomes owned by that OCA."""
    try:
        with open(args.cert, "rb") as f:
            oca = f.read()
        with open(args.key, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError) as e:
        raise CliError(f"cannot read the OCA: {e}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CliError("the OCA key must be an EC key")
    async with Connection(args.socket) as c:
        csr = base64.b64decode((await c.execute("sev-pek-csr"))["data"])
        pek = SevCert.from_bytes(csr)
        pek.sign(key, Usage.OCA)
        await c.execute("sev-pek-cert-import", {
            "pek-cert": base64.b64encode(pek.to_bytes()).decode(),
            "oca-cert": base64.b64encode(oca).decode()})
    return 0


def add_platform_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    o = sub.add_parser("ok", help="probe the (simulated) host's SEV support")
    o.add_argument("generation", nargs="?", choices=("sev", "es"))
    o.add_argument("-q", "--quiet", action="store_true")
    o.set_defaults(run=ok)
    s = sub.add_parser("show", help="platform flags, guest count, identifier or version")
    s.add_argument("what", choices=("flags", "guests", "identifier", "version"))
    s.set_defaults(run=show)
    sub.add_parser("rotate", help="generate a new PDH (PDH_GEN)").set_defaults(run=rotate)
    sub.add_parser("reset", help="reset the platform (PLATFORM_RESET)").set_defaults(run=reset)
    g = sub.add_parser("generate", help="generate a self-signed OCA certificate and key")
    g.add_argument("cert")
    g.add_argument("key")
    g.set_defaults(run=generate)
    p = sub.add_parser("provision", help="take ownership with an OCA (PEK_CSR, PEK_CERT_IMPORT)")
    p.add_argument("cert")
    p.add_argument("key")
    p.set_defaults(run=provision)
