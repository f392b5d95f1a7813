"""A small simulated SEV platform for the guest-owner tests (imported by their conftest).

It plays the firmware's side with ``sevd.formats`` only (PDH private key, PEK signing key, a
simulated AMD root), so that the owner's code is checked against an independent peer
without the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from sevowner.chain import CaChain, SevChain

from sevd.formats.amdca import AmdCaCert, sign_sev_cert
from sevd.formats.sevcert import Algo, SevCert, Usage


@dataclass
class SimPlatform:
    """A platform's keys and certificates, built like firmware builds them (reference §7)."""

    ark_key: rsa.RSAPrivateKey
    oca_key: ec.EllipticCurvePrivateKey
    cek_key: ec.EllipticCurvePrivateKey
    pek_key: ec.EllipticCurvePrivateKey
    pdh_key: ec.EllipticCurvePrivateKey
    chain: SevChain
    ca: CaChain

    def full_chain(self) -> bytes:
        """``PDH‖PEK‖OCA‖CEK‖ASK‖ARK`` (the ``sevctl export --full`` layout)."""
        return self.chain.to_bytes() + self.ca.to_bytes()


def make_platform(root_key: rsa.RSAPrivateKey, api: tuple[int, int] = (1, 51)) -> SimPlatform:
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(4)]
    oca_key, cek_key, pek_key, pdh_key = keys

    def cert(usage: Usage, algo: Algo, key: ec.EllipticCurvePrivateKey) -> SevCert:
        return SevCert.new(usage, algo, key.public_key(), *api)

    oca = cert(Usage.OCA, Algo.ECDSA_SHA256, oca_key)
    oca.sign(oca_key, Usage.OCA)
    cek = cert(Usage.CEK, Algo.ECDSA_SHA256, cek_key)
    pek = cert(Usage.PEK, Algo.ECDSA_SHA256, pek_key)
    pek.sign(oca_key, Usage.OCA)
    pek.sign(cek_key, Usage.CEK)
    pdh = cert(Usage.PDH, Algo.ECDH_SHA256, pdh_key)
    pdh.sign(pek_key, Usage.PEK)
    # Simulated AMD root; the same RSA key serves ARK and ASK (key generation is slow).
    ark_id, ask_id = b"sim-ark-key-id!!", b"sim-ask-key-id!!"
    ark = AmdCaCert.new(ark_id, ark_id, Usage.ARK, root_key.public_key())
    ark.sign(root_key)
    ask = AmdCaCert.new(ask_id, ark_id, Usage.ASK, root_key.public_key())
    ask.sign(root_key)
    sign_sev_cert(root_key, cek)
    return SimPlatform(
        root_key,
        oca_key,
        cek_key,
        pek_key,
        pdh_key,
        SevChain(pdh, pek, oca, cek),
        CaChain(ask, ark),
    )
