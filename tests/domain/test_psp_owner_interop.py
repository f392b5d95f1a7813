"""The whole guest-owner flow against the firmware, with the owner's own tooling
(``sevowner``, written independently from ``sevd.formats``): chain verification to the
pinned simulated ARK, session, measurement, secret, attestation report."""

from __future__ import annotations

import hashlib
import os
import uuid

from sevowner.attestation import verify_attestation_report
from sevowner.chain import CaChain, SevChain, verify_chain
from sevowner.measurement import verify_launch_measurement
from sevowner.secret import build_launch_secret
from sevowner.session import create_session

from sevd.domain.psp import SevFirmware, SparsePageStore
from sevd.formats.secret import parse_secret_table
from sevd.formats.sevcert import SevCert, parse_cert_chain


def test_guest_owner_flow(fw: SevFirmware) -> None:
    # 1. The platform's certificates, as query-sev-capabilities and a full-chain export give.
    pdh_raw, plat = fw.pdh_cert_export()
    pek, oca, _unsigned_cek = parse_cert_chain(plat)
    chain = SevChain(SevCert.from_bytes(pdh_raw), pek, oca, SevCert.from_bytes(fw.kds_cek()))
    ca = CaChain.from_bytes(fw.amd_root_chain())
    pdh = verify_chain(chain, ca, pinned_ark=ca.ark)

    # 2. Session for that PDH; the host launches the guest with it.
    policy = 0x1
    session = create_session(pdh, policy)
    memory = SparsePageStore(1 << 22)
    firmware_image = os.urandom(64 * 1024)
    memory.write(0x100000, firmware_image)
    handle = fw.launch_start(
        policy, dh_cert=session.godh_cert, session=session.session, memory=memory
    )
    fw.activate(handle, 100)
    fw.launch_update_data(handle, 0x100000, len(firmware_image))
    blob = fw.launch_measure(handle)

    # 3. The owner checks the measurement, then injects a secret.
    status = fw.platform_status()
    measure = verify_launch_measurement(
        blob,
        session.tik,
        api_major=status.api_major,
        api_minor=status.api_minor,
        build_id=status.build,
        policy=policy,
        digest=hashlib.sha256(firmware_image).digest(),
    )
    assert measure == blob[:32]
    guid = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
    secret = build_launch_secret(session.tek, session.tik, blob, {guid: b"disk passphrase"})
    fw.launch_secret(handle, secret.header, 0x8000, secret.payload)
    fw.launch_finish(handle)

    # The guest finds its secret in (encrypted) memory.
    table = fw.cpu_read(handle, 0x8000, len(secret.payload))
    assert parse_secret_table(table) == {guid: b"disk passphrase"}

    # 4. Attestation report, checked with the PEK from the verified chain.
    mnonce = os.urandom(16)
    report = fw.attestation(handle, mnonce)
    verify_attestation_report(
        report,
        chain.pek,
        mnonce=mnonce,
        launch_digest=hashlib.sha256(firmware_image).digest(),
        policy=policy,
    )
