"""Pure AMD SEV byte formats and cryptography, shared by both sides of SEV.

This package is the single place where the byte layouts that the simulated firmware
(``sevd.domain.psp``) and the guest owner (``sevowner``) must agree on are written down:
the KDF and MACs, the 2084-byte SEV certificate, the AMD CA (ARK/ASK) certificate, the guest
policy word, the LAUNCH_START session blob, the LAUNCH_MEASURE blob, the LAUNCH_SECRET
packet and OVMF secret table, the legacy attestation report, the OVMF footer table, the
kernel-hashes table, the launch digest and the SEV-ES VMSA as QEMU builds it.

Rules (DESIGN §9): everything here is pure and synchronous, takes and returns ``bytes``,
and depends only on the standard library and ``cryptography``. Modules in this package
must not import anything else from ``sevd`` (or from ``sevowner``/``sevctl``): both sides build on
it, and nothing else is shared between them. The facts come from
``reference/sev-firmware.md``; every module is tested against published vectors.
"""
