"""Verification of a platform's certificate chain, as the guest owner does before a launch.

The links (reference/sev-firmware.md §7.3; virtee/sevctl ``verify``)::

    ARK (self-signed) ⬑ ASK ⬑ CEK ⬑ PEK ⬏ OCA (self-signed)
                                    PEK ⬑ PDH

ARK → ASK use the AMD CA format (RSA-PSS); the ASK signs the CEK with RSA-PSS into a SEV
certificate slot; OCA, CEK and PEK sign with ECDSA P-384/SHA-256. Every signature must sit in
a slot naming the signer's usage; the PEK's two signatures may be in either slot (§16.7).

Trust comes from the roots the caller passes: AMD's real ARK/ASK (which verify real
machines' chains) or the simulated root that sevd exports (real AMD roots can never sign a
simulated CEK; DESIGN §6). :func:`verify_chain` raises :class:`ChainError` naming every
failing link; :func:`format_chain` prints the chain the way virtee's ``sevctl verify`` does.

Imports only ``sevd.formats`` and ``cryptography``; must not import daemon code.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sevd.formats.amdca import AmdCaCert, parse_ca_chain, verify_sev_cert
from sevd.formats.sevcert import SEV_CERT_LEN, SevCert, Usage

__all__ = [
    "CaChain",
    "ChainError",
    "LinkResult",
    "SevChain",
    "ca_cert_line",
    "check_chain",
    "format_chain",
    "load_ca_chain",
    "load_sev_chain",
    "sev_cert_line",
    "split_sev_chain",
    "verify_chain",
]

LEGEND = " • = self signed, ⬑ = signs, •̷ = invalid self sign, ⬑̸ = invalid signs"


@dataclass
class SevChain:
    """The platform part of a chain: PDH, PEK, OCA, CEK."""

    pdh: SevCert
    pek: SevCert
    oca: SevCert
    cek: SevCert

    def to_bytes(self) -> bytes:
        """``PDH‖PEK‖OCA‖CEK`` (virtee ``sev::Chain``, ``sevctl export``)."""
        return b"".join(c.to_bytes() for c in (self.pdh, self.pek, self.oca, self.cek))


@dataclass
class CaChain:
    """The AMD part of a chain: ASK and ARK."""

    ask: AmdCaCert
    ark: AmdCaCert

    def to_bytes(self) -> bytes:
        """``ASK‖ARK`` (AMD's ``ask_ark_<gen>.cert``, virtee ``ca::Chain``)."""
        return self.ask.to_bytes() + self.ark.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> CaChain:
        certs = parse_ca_chain(data)
        if len(certs) != 2:
            raise ValueError(f"a CA chain is ASK‖ARK, found {len(certs)} certificates")
        return cls.from_certs(certs)

    @classmethod
    def from_certs(cls, certs: list[AmdCaCert]) -> CaChain:
        by_usage = {c.key_usage: c for c in certs}
        if set(by_usage) != {Usage.ASK, Usage.ARK}:
            raise ValueError("a CA chain needs one ASK and one ARK")
        return cls(ask=by_usage[Usage.ASK], ark=by_usage[Usage.ARK])


@dataclass(frozen=True)
class LinkResult:
    """One checked link: ``signer`` signs ``subject`` (equal names: a self-signature)."""

    signer: str
    subject: str
    ok: bool
    reason: str = ""

    def __str__(self) -> str:
        link = (
            f"{self.signer} self-signature"
            if self.signer == self.subject
            else f"{self.signer} → {self.subject}"
        )
        return f"{link}: {'ok' if self.ok else self.reason or 'signature does not verify'}"


class ChainError(ValueError):
    """A chain did not verify; ``failures`` lists the failing links."""

    def __init__(self, failures: list[LinkResult]) -> None:
        self.failures = failures
        super().__init__("certificate chain does not verify: " + "; ".join(map(str, failures)))


def split_sev_chain(data: bytes) -> tuple[SevChain, CaChain | None]:
    """Parse ``PDH‖PEK‖OCA‖CEK`` optionally followed by ``ASK‖ARK`` (``sevctl export
    [--full]``)."""
    size = 4 * SEV_CERT_LEN
    if len(data) < size:
        raise ValueError(
            f"a SEV chain file is PDH‖PEK‖OCA‖CEK ({size} bytes), got {len(data)} bytes"
        )
    certs = [SevCert.from_bytes(data[i : i + SEV_CERT_LEN]) for i in range(0, size, SEV_CERT_LEN)]
    chain = SevChain(*certs)
    ca = CaChain.from_bytes(data[size:]) if len(data) > size else None
    return chain, ca


def load_sev_chain(path: str | Path) -> tuple[SevChain, CaChain | None]:
    """A chain from a file (``PDH‖PEK‖OCA‖CEK[‖ASK‖ARK]``) or from a directory of
    ``pdh.cert``, ``pek.cert``, ``oca.cert``, ``cek.cert`` [``ask.cert``, ``ark.cert``]
    (sev-tool's names)."""
    p = Path(path)
    if not p.is_dir():
        return split_sev_chain(p.read_bytes())
    chain = SevChain(
        *(SevCert.from_bytes((p / f"{n}.cert").read_bytes()) for n in ("pdh", "pek", "oca", "cek"))
    )
    ca = None
    if (p / "ask.cert").exists() and (p / "ark.cert").exists():
        ca = CaChain(
            ask=AmdCaCert.from_bytes((p / "ask.cert").read_bytes()),
            ark=AmdCaCert.from_bytes((p / "ark.cert").read_bytes()),
        )
    return chain, ca


def load_ca_chain(path: str | Path) -> CaChain:
    """ASK and ARK from an ``ASK‖ARK`` file or a directory with ``ask.cert``/``ark.cert``."""
    p = Path(path)
    if p.is_dir():
        return CaChain(
            ask=AmdCaCert.from_bytes((p / "ask.cert").read_bytes()),
            ark=AmdCaCert.from_bytes((p / "ark.cert").read_bytes()),
        )
    return CaChain.from_bytes(p.read_bytes())


def _sev_link(signer: SevCert, subject: SevCert, s_name: str, c_name: str) -> LinkResult:
    expected = {"OCA": Usage.OCA, "PEK": Usage.PEK, "CEK": Usage.CEK, "PDH": Usage.PDH}
    for cert, name in ((signer, s_name), (subject, c_name)):
        if cert.pubkey_usage is not expected[name]:
            return LinkResult(
                s_name, c_name, False, f"the {name} certificate has usage {cert.pubkey_usage.name}"
            )
    ok = subject.verify(signer.public_key, expected[s_name])
    return LinkResult(s_name, c_name, ok)


def check_chain(
    chain: SevChain, ca: CaChain | None = None, *, pinned_ark: AmdCaCert | None = None
) -> list[LinkResult]:
    """Check every link (in virtee's order) and return the results without raising.

    Without ``ca`` the CEK → ASK → ARK part is reported as failing (there is nothing to
    anchor the CEK). With ``pinned_ark`` the chain's ARK must be byte-identical to it.
    """
    results = [
        _sev_link(chain.pek, chain.pdh, "PEK", "PDH"),
        _sev_link(chain.oca, chain.pek, "OCA", "PEK"),
        _sev_link(chain.oca, chain.oca, "OCA", "OCA"),
        _sev_link(chain.cek, chain.pek, "CEK", "PEK"),
    ]
    if ca is None:
        results.append(LinkResult("ASK", "CEK", False, "no AMD CA chain (ASK, ARK) given"))
        return results
    if ca.ask.key_usage is not Usage.ASK or ca.ark.key_usage is not Usage.ARK:
        results.append(LinkResult("ASK", "CEK", False, "the CA chain is not ASK, ARK"))
        return results
    results += [
        LinkResult("ASK", "CEK", verify_sev_cert(ca.ask, chain.cek)),
        LinkResult("ARK", "ASK", ca.ask.verify_issued_by(ca.ark)),
        LinkResult("ARK", "ARK", ca.ark.verify_issued_by(ca.ark)),
    ]
    if pinned_ark is not None and ca.ark.to_bytes() != pinned_ark.to_bytes():
        results.append(LinkResult("ARK", "ARK", False, "the ARK is not the pinned root"))
    return results


def verify_chain(
    chain: SevChain, ca: CaChain | None, *, pinned_ark: AmdCaCert | None = None
) -> SevCert:
    """Verify the whole chain; return the PDH, or raise :class:`ChainError`."""
    failures = [r for r in check_chain(chain, ca, pinned_ark=pinned_ark) if not r.ok]
    if failures:
        raise ChainError(failures)
    return chain.pdh


# -- virtee's display ----------------------------------------------------------------------


def sev_cert_line(cert: SevCert) -> str:
    """``<usage> <key> <hash>`` as virtee ``impl Display for Certificate`` prints a SEV
    certificate, e.g. ``PEK EP384 E256 71953375…``: ``EP<curve bits>``, then ``E<hash bits>``
    for signing keys or ``D<hash bits>`` for the PDH, then the hex digest of the signed
    region under the hash the algorithm names."""
    digest = hashlib.new(cert.pubkey_algo.hash_algorithm.name, cert.signed_region())
    kind = "D" if cert.pubkey_usage is Usage.PDH else "E"
    bits = cert.public_key.curve.key_size
    return f"{cert.pubkey_usage.name} EP{bits} {kind}{digest.digest_size * 8} {digest.hexdigest()}"


def ca_cert_line(cert: AmdCaCert) -> str:
    """virtee's display of an ARK/ASK, e.g. ``ASK R4096 R384 95cba79b…``."""
    digest = hashlib.new(cert.hash_algorithm.name, cert.signed_region())
    return (
        f"{cert.key_usage.name} R{cert.public_key.key_size} R{digest.digest_size * 8} "
        f"{digest.hexdigest()}"
    )


def format_chain(chain: SevChain, ca: CaChain | None) -> str:
    """The chain as virtee's ``sevctl verify`` prints it (without colours)::

    PDH EP384 D256 …
     ⬑ PEK EP384 E256 …
       •⬑ OCA EP384 E256 …
        ⬑ CEK EP384 E256 …
           ⬑ ASK R4096 R384 …
             •⬑ ARK R4096 R384 …

     • = self signed, ⬑ = signs, •̷ = invalid self sign, ⬑̸ = invalid signs
    """
    results = {(r.signer, r.subject): r.ok for r in check_chain(chain, ca) if not r.reason}

    def link(signer: str, subject: str) -> str:
        return "⬑" if results.get((signer, subject), False) else "⬑̸"

    def selfsig(name: str) -> str:
        return "•" if results.get((name, name), False) else "•̷"

    lines = [
        sev_cert_line(chain.pdh),
        f" {link('PEK', 'PDH')} {sev_cert_line(chain.pek)}",
        f"   {selfsig('OCA')}{link('OCA', 'PEK')} {sev_cert_line(chain.oca)}",
        f"    {link('CEK', 'PEK')} {sev_cert_line(chain.cek)}",
    ]
    if ca is not None:
        lines += [
            f"       {link('ASK', 'CEK')} {ca_cert_line(ca.ask)}",
            f"         {selfsig('ARK')}{link('ARK', 'ASK')} {ca_cert_line(ca.ark)}",
        ]
    return "\n".join(lines) + "\n\n" + LEGEND
