"""sevowner.chain: real AMD chains, a simulated chain, clear errors and virtee's display."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from owner_sim import SimPlatform, make_platform
from sevowner.chain import (
    LEGEND,
    CaChain,
    ChainError,
    SevChain,
    ca_cert_line,
    check_chain,
    format_chain,
    load_ca_chain,
    load_sev_chain,
    split_sev_chain,
    verify_chain,
)

from sevd.formats.amdca import AmdCaCert
from sevd.formats.sevcert import SevCert

Data = Callable[[str], bytes]


def real(data_dir: Path, gen: str, roots: str | None = None) -> tuple[SevChain, CaChain]:
    chain, _ = load_sev_chain(data_dir / "virtee-sev" / gen)
    return chain, load_ca_chain(data_dir / "virtee-sev" / "builtin" / (roots or gen))


@pytest.mark.parametrize("gen", ["naples", "rome"])
def test_real_chains_verify_with_builtin_roots(data_dir: Path, gen: str) -> None:
    # virtee/sev tests: the real Naples and Rome chains verify with the builtin ARK/ASK.
    chain, ca = real(data_dir, gen)
    assert verify_chain(chain, ca) is chain.pdh
    assert all(r.ok for r in check_chain(chain, ca))


def test_wrong_generation_roots_name_the_failing_link(data_dir: Path) -> None:
    chain, ca = real(data_dir, "naples", roots="rome")
    with pytest.raises(ChainError) as info:
        verify_chain(chain, ca)
    assert [(f.signer, f.subject) for f in info.value.failures] == [("ASK", "CEK")]
    assert "ASK → CEK: signature does not verify" in str(info.value)


@pytest.mark.parametrize(
    ("cert", "links"),
    [
        ("pdh", [("PEK", "PDH")]),
        ("pek", [("OCA", "PEK"), ("CEK", "PEK")]),
        ("oca", [("OCA", "OCA")]),
        ("cek", [("ASK", "CEK")]),
    ],
)
def test_tampered_certificate_breaks_its_links(
    data_dir: Path, cert: str, links: list[tuple[str, str]]
) -> None:
    chain, ca = real(data_dir, "rome")
    raw = bytearray(getattr(chain, cert).to_bytes())
    # api_major: inside the signed region, parses fine. Only the signatures *on* this
    # certificate break; the ones it makes still verify (its key is unchanged).
    raw[4] ^= 0x01
    setattr(chain, cert, SevCert.from_bytes(bytes(raw)))
    with pytest.raises(ChainError) as info:
        verify_chain(chain, ca)
    assert [(f.signer, f.subject) for f in info.value.failures] == links


def test_tampered_ask_breaks_ark_link(data_dir: Path) -> None:
    chain, ca = real(data_dir, "rome")
    raw = bytearray(ca.ask.to_bytes())
    raw[0x28] ^= 0x01  # reserved: signed, not interpreted
    ca.ask = AmdCaCert.from_bytes(bytes(raw))
    failures = [(r.signer, r.subject) for r in check_chain(chain, ca) if not r.ok]
    assert failures == [("ARK", "ASK")]


def test_swapped_certificates_are_named(data_dir: Path) -> None:
    chain, ca = real(data_dir, "rome")
    chain.pek, chain.oca = chain.oca, chain.pek
    failures = [r for r in check_chain(chain, ca) if not r.ok]
    assert any("usage" in r.reason for r in failures)


def test_missing_ca_chain_is_a_failure(data_dir: Path) -> None:
    chain, _ = real(data_dir, "rome")
    with pytest.raises(ChainError, match="no AMD CA chain"):
        verify_chain(chain, None)


def test_simulated_platform_chain(platform: SimPlatform) -> None:
    assert verify_chain(platform.chain, platform.ca) is platform.chain.pdh
    chain, ca = split_sev_chain(platform.full_chain())
    assert ca is not None
    assert verify_chain(chain, ca, pinned_ark=platform.ca.ark).to_bytes() == (
        platform.chain.pdh.to_bytes()
    )


def test_pinned_root(platform: SimPlatform, root_key: rsa.RSAPrivateKey) -> None:
    other = make_platform(root_key)
    # Another (valid, self-signed) root the owner might have pinned instead.
    foreign = AmdCaCert.new(
        b"another-ark-id!!", b"another-ark-id!!", other.ca.ark.key_usage, root_key.public_key()
    )
    foreign.sign(root_key)
    verify_chain(other.chain, other.ca, pinned_ark=other.ca.ark)
    with pytest.raises(ChainError, match="not the pinned root"):
        verify_chain(other.chain, other.ca, pinned_ark=foreign)


def test_cross_platform_pdh_is_rejected(platform: SimPlatform, root_key: rsa.RSAPrivateKey) -> None:
    other = make_platform(root_key)
    platform.chain.pdh = other.chain.pdh  # a PDH that this platform's PEK did not sign
    with pytest.raises(ChainError, match="PEK → PDH"):
        verify_chain(platform.chain, platform.ca)


def test_milan_roots_display_matches_published_sevctl_output(data_dir: Path) -> None:
    # virtee/sevctl issue #185 (`sevctl verify --sev cert_chain.cert` on a Milan host).
    ca = load_ca_chain(data_dir / "virtee-sev" / "builtin" / "milan")
    assert ca_cert_line(ca.ask) == (
        "ASK R4096 R384 95cba79ba3c77daea79f741bade8156a50b1c59f6d6fda104d16dd264729f5ee"
        "8989522f3711fc7c84719921ceb31bc0"
    )
    assert ca_cert_line(ca.ark) == (
        "ARK R4096 R384 569da618dfe64015c343db6d975e77b72fdeacd16edd02d9d09b889b8f0f1d91"
        "ffa5dfbd86f7ac574a1a7883b7a1e737"
    )


def test_format_chain_layout(data_dir: Path) -> None:
    chain, ca = real(data_dir, "naples")
    lines = format_chain(chain, ca).split("\n")
    prefixes = [
        "PDH EP384 D256 ",
        " ⬑ PEK EP384 E256 ",
        "   •⬑ OCA EP384 E256 ",
        "    ⬑ CEK EP384 E256 ",
        "       ⬑ ASK R2048 R256 ",
        "         •⬑ ARK R2048 R256 ",
    ]
    for line, prefix, hexlen in zip(lines, prefixes, [64, 64, 64, 64, 64, 64], strict=False):
        assert line.startswith(prefix) and len(line) == len(prefix) + hexlen
    assert lines[6:] == ["", LEGEND]
    bad = format_chain(*real(data_dir, "naples", roots="rome")).split("\n")
    assert bad[4].startswith("       ⬑̸ ASK R4096 R384 ")


def test_loaders(data_dir: Path, tmp_path: Path, data: Data) -> None:
    full = b"".join(data(f"virtee-sev/rome/{n}.cert") for n in ("pdh", "pek", "oca", "cek"))
    full += data("virtee-sev/builtin/rome/ask.cert") + data("virtee-sev/builtin/rome/ark.cert")
    (tmp_path / "chain.cert").write_bytes(full)
    chain, ca = load_sev_chain(tmp_path / "chain.cert")
    assert ca is not None and verify_chain(chain, ca)
    (tmp_path / "ca.cert").write_bytes(full[4 * 2084 :])
    assert load_ca_chain(tmp_path / "ca.cert").to_bytes() == full[4 * 2084 :]
    with pytest.raises(ValueError, match="PDH‖PEK‖OCA‖CEK"):
        split_sev_chain(full[:2084])
    with pytest.raises(ValueError, match="ASK‖ARK"):
        CaChain.from_bytes(data("virtee-sev/builtin/rome/ask.cert"))
