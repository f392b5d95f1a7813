"""Platform identity: determinism, export/restore, the certificate chain, ownership."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from psp_helpers import Guests, ready

from sevd.domain.psp import PlatformIdentity, SevError, SevFirmware, SevStatus
from sevd.domain.psp.identity import AmdRoots, generate
from sevd.formats.amdca import AmdCaCert, verify_sev_cert
from sevd.formats.sevcert import Algo, SevCert, Usage, parse_cert_chain


def test_same_seed_same_identity(amd_roots: Callable[[int], AmdRoots]) -> None:
    roots = amd_roots(4096)
    a = generate("milan", b"seed-1", roots)
    b = generate("milan", b"seed-1", roots)
    c = generate("milan", b"seed-2", roots)
    assert a.to_bytes() == b.to_bytes()
    assert a.to_bytes() != c.to_bytes()
    assert a.chip_id() != c.chip_id()


def test_same_seed_same_vek_and_pdh(identity: PlatformIdentity) -> None:
    def run(seed: bytes) -> tuple[bytes, bytes, bytes]:
        fw = ready(SevFirmware(identity, seed=seed))
        handle = Guests(fw).launch(0)
        fw._guests[handle].memory.write(0, b"p" * 4096)
        fw.launch_update_data(handle, 0, 4096)
        fw.pdh_gen()
        return (
            fw.launch_measure(handle),
            fw.pdh_cert_export()[0],
            fw._guests[handle].memory.read(0, 4096),
        )

    assert run(b"a") == run(b"a")
    assert run(b"a")[1:] != run(b"b")[1:]


def test_export_restore_round_trip(identity: PlatformIdentity) -> None:
    raw = identity.to_bytes()
    restored = PlatformIdentity.from_bytes(raw)
    assert restored.to_bytes() == raw
    assert not restored.store_corrupt
    fw = SevFirmware(restored)
    assert fw.export_identity() == raw


def test_firmware_never_mutates_the_callers_identity(identity: PlatformIdentity) -> None:
    before = identity.to_bytes()
    fw = ready(SevFirmware(identity))
    fw.pdh_gen()
    fw.pek_gen()
    assert identity.to_bytes() == before
    assert fw.export_identity() != before
    # The new store survives an export/restore.
    again = ready(SevFirmware(PlatformIdentity.from_bytes(fw.export_identity())))
    assert again.pdh_cert_export() == fw.pdh_cert_export()


@pytest.mark.parametrize("bad", [b"", b"garbage", b"SEVD-PSP-ID\x00\x02\x00"])
def test_restore_rejects_non_identities(bad: bytes) -> None:
    with pytest.raises(ValueError):
        PlatformIdentity.from_bytes(bad)


def test_corrupt_store_is_secure_data_invalid_then_regenerated(identity: PlatformIdentity) -> None:
    raw = bytearray(identity.to_bytes())
    pdh = identity.store.pdh_cert
    assert pdh is not None
    at = bytes(raw).index(pdh)
    raw[at + 100] ^= 0xFF
    corrupt = PlatformIdentity.from_bytes(bytes(raw))
    assert corrupt.store_corrupt
    fw = SevFirmware(corrupt)
    with pytest.raises(SevError) as err:
        fw.init()
    assert err.value.status is SevStatus.SECURE_DATA_INVALID
    fw.init()  # Linux retries INIT once; the erased store is regenerated
    assert fw.pdh_cert_export()[0] != pdh


def test_exported_chain_verifies_to_the_simulated_ark(fw: SevFirmware) -> None:
    pdh_raw, chain_raw = fw.pdh_cert_export()
    pdh = SevCert.from_bytes(pdh_raw)
    pek, oca, cek_unsigned = parse_cert_chain(chain_raw)
    # PDH_CERT_EXPORT's CEK is unsigned, as AMD's firmware exports it.
    assert all(slot.is_empty for slot in cek_unsigned.slots())
    cek = SevCert.from_bytes(fw.kds_cek())
    assert cek.signed_region() == cek_unsigned.signed_region()
    ask_ark = fw.amd_root_chain()
    ask_len = AmdCaCert.encoded_length(ask_ark)
    ask, ark = AmdCaCert.from_bytes(ask_ark[:ask_len]), AmdCaCert.from_bytes(ask_ark[ask_len:])
    assert ark.verify(ark.public_key) and ask.verify_issued_by(ark)
    assert verify_sev_cert(ask, cek)
    assert pek.verify(cek.public_key, Usage.CEK) and pek.verify(oca.public_key, Usage.OCA)
    assert oca.verify(oca.public_key, Usage.OCA)
    assert pdh.verify(pek.public_key, Usage.PEK)
    assert (pdh.pubkey_usage, pdh.pubkey_algo) == (Usage.PDH, Algo.ECDH_SHA256)
    assert (pek.api_major, pek.api_minor) == (1, 51)
    # Self-owned PEK: OCA in slot 1, CEK in slot 2 (§7.3).
    assert (pek.sig1_usage, pek.sig2_usage) == (Usage.OCA, Usage.CEK)


def test_naples_roots_are_rsa_2048(make_fw: Callable[..., SevFirmware]) -> None:
    fw = make_fw("naples")
    cek = SevCert.from_bytes(fw.kds_cek())
    assert (cek.sig1_usage, cek.sig1_algo) == (Usage.ASK, Algo.RSA_SHA256)
    assert len(fw.amd_root_chain()) == 2 * 832


def test_get_id_is_a_secp256k1_point(fw: SevFirmware) -> None:
    chip = fw.get_id()
    assert len(chip) == 64
    ec.EllipticCurvePublicNumbers(
        int.from_bytes(chip[:32], "big"), int.from_bytes(chip[32:], "big"), ec.SECP256K1()
    ).public_key()
    with pytest.raises(SevError) as err:
        fw.get_id(length=10)
    assert err.value.status is SevStatus.INVALID_LENGTH and err.value.required_length == 64


def test_pdh_cert_export_length_query(fw: SevFirmware) -> None:
    with pytest.raises(SevError) as err:
        fw.pdh_cert_export(pdh_len=0, certs_len=0)
    assert err.value.status is SevStatus.INVALID_LENGTH
    assert err.value.lengths == {"pdh_cert_len": 2084, "certs_len": 6252}


def _owner_certs(
    fw: SevFirmware, slot: int | None = None
) -> tuple[bytes, bytes, ec.EllipticCurvePrivateKey]:
    oca_key = ec.generate_private_key(ec.SECP384R1())
    oca = SevCert.new(Usage.OCA, Algo.ECDSA_SHA256, oca_key.public_key())
    oca.sign(oca_key, Usage.OCA)
    csr = fw.pek_csr()
    pek = SevCert.from_bytes(csr)
    assert all(s.is_empty for s in pek.slots())
    pek.sign(oca_key, Usage.OCA, slot)
    return pek.to_bytes(), oca.to_bytes(), oca_key


@pytest.mark.parametrize("slot", [1, 2])
def test_pek_cert_import_takes_ownership(fw: SevFirmware, slot: int) -> None:
    old_pdh = fw.pdh_cert_export()[0]
    pek_raw, oca_raw, _ = _owner_certs(fw, slot)
    fw.pek_cert_import(pek_raw, oca_raw)
    assert fw.platform_status().owner
    pdh_raw, chain = fw.pdh_cert_export()
    assert pdh_raw != old_pdh  # the PDH is regenerated
    pek, oca, _cek = parse_cert_chain(chain)
    assert oca.to_bytes() == oca_raw
    # The owner's signature stays in its slot, the CEK signature fills the other one.
    assert pek.slot(slot).usage == Usage.OCA and pek.slot(3 - slot).usage == Usage.CEK
    assert pek.verify(SevCert.from_bytes(fw.kds_cek()).public_key, Usage.CEK)
    assert SevCert.from_bytes(pdh_raw).verify(pek.public_key, Usage.PEK)
    with pytest.raises(SevError) as err:
        fw.pek_cert_import(pek_raw, oca_raw)
    assert err.value.status is SevStatus.ALREADY_OWNED
    fw.pek_gen()  # a new self-signed OCA: self-owned again
    assert not fw.platform_status().owner


def test_pek_cert_import_checks(fw: SevFirmware) -> None:
    pek_raw, oca_raw, oca_key = _owner_certs(fw)

    def status(pek: bytes, oca: bytes) -> SevStatus | int:
        try:
            fw.pek_cert_import(pek, oca)
        except SevError as err:
            return err.status
        return SevStatus.SUCCESS

    assert status(pek_raw[:-1], oca_raw) == SevStatus.INVALID_LENGTH
    # A PEK body that is not the firmware's.
    other = SevCert.from_bytes(pek_raw)
    other.api_minor ^= 1
    other.clear_signature(1)
    other.sign(oca_key, Usage.OCA)
    assert status(other.to_bytes(), oca_raw) == SevStatus.INVALID_CERTIFICATE
    # A malformed slot (usage INVALID with an algorithm) is BAD_SIGNATURE.
    bad_oca = SevCert.from_bytes(oca_raw)
    bad_oca.set_signature(2, Usage.INVALID, Algo.ECDSA_SHA256, b"")
    assert status(pek_raw, bad_oca.to_bytes()) == SevStatus.BAD_SIGNATURE
    # A signature that does not verify is BAD_SIGNATURE too.
    forged = bytearray(pek_raw)
    forged[0x41C] ^= 1
    assert status(bytes(forged), oca_raw) == SevStatus.BAD_SIGNATURE
    # An OCA that did not sign the PEK: no slot by it -> INVALID_CERTIFICATE.
    stranger = SevCert.from_bytes(pek_raw)
    stranger.clear_signature(1)
    assert status(stranger.to_bytes(), oca_raw) == SevStatus.INVALID_CERTIFICATE
    assert status(pek_raw, oca_raw) == SevStatus.SUCCESS


def test_platform_reset_erases_the_store(fw: SevFirmware) -> None:
    pek_raw, oca_raw, _ = _owner_certs(fw)
    fw.pek_cert_import(pek_raw, oca_raw)
    old = fw.pdh_cert_export()
    fw.shutdown()
    fw.platform_reset()
    fw.init()
    assert not fw.platform_status().owner
    new = fw.pdh_cert_export()
    assert new[0] != old[0] and new[1][2084 : 2 * 2084] != oca_raw
