#!/usr/bin/env python3
"""Build sevd's built-in firmware image, `sevd/data/sevd-builtin.fd` (deterministic).

The image is what the simulated loader measures and encrypts for a guest without a
`firmware` argument (DESIGN §4): 128 KiB mapped like pflash so that it ends at 4 GiB, with
an OVMF-style GUIDed footer table declaring an SEV secret area, a kernel-hashes area and an
SEV-ES reset block, so that `sev-inject-launch-secret` without `gpa`, `kernel-hashes` and
SEV-ES launches work out of the box, and `sev-snp-measure --ovmf` reproduces its digests.
A test rebuilds it and compares, so the shipped file never drifts from this script.

    python scripts/build-builtin-firmware.py [OUTPUT]
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sevd.formats.ovmf import (  # noqa: E402
    SEV_ES_RESET_BLOCK_GUID,
    SEV_HASH_TABLE_RV_GUID,
    SEV_SECRET_GUID,
    build_footer_table,
)

SIZE = 128 << 10
SECRET_AREA = (0x0080_7000, 0x1000)
HASHES_AREA = (0x0080_8000, 0x400)
AP_RESET_EIP = 0xFFFF_F000


def build() -> bytes:
    header = struct.pack("<8sII", b"SEVD-FW\0", 1, SIZE)
    header += (b"sevd built-in firmware: a simulated OVMF for SEV launch testing. "
               b"Not executable code.\0")
    # A deterministic, incompressible body, so that ciphertext and plaintext are told apart.
    stream = bytearray()
    counter = 0
    while len(stream) < SIZE:
        stream += hashlib.sha256(b"sevd builtin firmware" + counter.to_bytes(4, "little"))\
            .digest()
        counter += 1
    image = bytearray(stream[:SIZE])
    image[:len(header)] = header
    table = build_footer_table([
        (SEV_SECRET_GUID, struct.pack("<II", *SECRET_AREA)),
        (SEV_HASH_TABLE_RV_GUID, struct.pack("<II", *HASHES_AREA)),
        (SEV_ES_RESET_BLOCK_GUID, struct.pack("<I", AP_RESET_EIP)),
    ])
    end = SIZE - 32
    image[end - len(table):end] = table
    # The reset vector at 0xFFFFFFF0 (image end - 16): nop; nop; jmp near (as OVMF's).
    tail = bytes([0x90, 0x90, 0xE9, 0x00, 0x00]) + bytes(11)
    image[SIZE - 16:] = tail
    image[end:SIZE - 16] = bytes(16)
    return bytes(image)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "sevd" / "data" / "sevd-builtin.fd"
    out.write_bytes(build())
    print(f"{out}: {SIZE} bytes, sha256 {hashlib.sha256(build()).hexdigest()}")
