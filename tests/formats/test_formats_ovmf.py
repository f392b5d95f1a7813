"""sevd.formats.ovmf and .vmsa: footer tables, hashes table and launch digests.

Known answers from virtee/sev tests/measurement.rs (and the same values in
virtee/sev-snp-measure tests/test_guest.py) on the ovmf_*_suffix.bin fixtures, plus live
cross-checks against the ``sev-snp-measure`` tool installed with the test dependencies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from sevd.formats.ovmf import (
    HASHES_TABLE_LEN,
    SEV_ES_RESET_BLOCK_GUID,
    SEV_HASH_TABLE_RV_GUID,
    SEV_SECRET_GUID,
    build_footer_table,
    build_hashes_table,
    launch_digest,
    parse_footer_table,
    sev_es_reset_eip,
    sev_hashes_table_area,
    sev_metadata,
    sev_secret_area,
    seves_digest,
)
from sevd.formats.vmsa import BSP_EIP, CPU_SIGNATURES, VMSA_LEN, build_vmsa, vmsa_pages

Data = Callable[[str], bytes]
AMDSEV = "virtee-sev/measurement/ovmf_AmdSev_suffix.bin"
OVMFX64 = "virtee-sev/measurement/ovmf_OvmfX64_suffix.bin"
DATA_DIR = Path(__file__).parent / "data"
DEBIAN_OVMF = [
    Path("/usr/share/OVMF/OVMF_CODE.fd"),
    Path("/usr/share/OVMF/OVMF_CODE_4M.fd"),
    Path("/usr/share/ovmf/OVMF.fd"),
]
EPYC_V4 = CPU_SIGNATURES["EPYC-v4"]


# -- known answers -------------------------------------------------------------------------


def test_sev_digest_with_kernel_initrd_append(data: Data) -> None:
    # virtee/sev tests/measurement.rs `test_sev`: kernel=/dev/null initrd=/dev/null
    # append="console=ttyS0 loglevel=7".
    ld = launch_digest(data(AMDSEV), b"", b"", "console=ttyS0 loglevel=7")
    assert ld.hex() == "82a3ee5d537c3620628270c292ae30cb40c3c878666a7890ee7ef2a08fb535ff"


def test_sev_digest_kernel_only(data: Data) -> None:
    # virtee/sev tests/measurement.rs `test_sev_with_kernel_without_initrd_and_append`.
    ld = launch_digest(data(AMDSEV), kernel=b"")
    assert ld.hex() == "77f613d7bbcdf12a73782ea9e88b0172aeda50d1a54201cb903594ff52846898"


def test_sev_digest_ovmfx64_without_kernel(data: Data) -> None:
    # virtee/sev tests/measurement.rs `test_sev_with_ovmfx64_without_kernel`.
    ld = launch_digest(data(OVMFX64))
    assert ld.hex() == "b4c021e085fb83ceffe6571a3d357b4a98773c83c474e47f76c876708fe316da"


def test_kernel_needs_hashes_table(data: Data) -> None:
    # virtee/sev tests/measurement.rs `test_sev_with_ovmfx64_and_kernel_should_fail`.
    with pytest.raises(ValueError, match="OVMF doesn't support kernel/initrd/cmdline"):
        launch_digest(data(OVMFX64), b"", b"", "")
    with pytest.raises(ValueError, match="needs a kernel"):
        launch_digest(data(AMDSEV), initrd=b"")


@pytest.mark.parametrize(
    ("vcpus", "expected"),
    [
        # virtee/sev tests/measurement.rs `test_seves` / `test_seves_with_multiple_vcpus`
        (1, "13810ae661ea11e2bb205621f582fee268f0367c8f97bc297b7fadef3e12002c"),
        (4, "0dccbcaba8e90b261bd0d2e1863a2f9da714768b7b2a19363cd6ae35aa90de91"),
    ],
)
def test_seves_digest(data: Data, vcpus: int, expected: str) -> None:
    assert seves_digest(data(AMDSEV), vcpus, EPYC_V4, b"", b"").hex() == expected


# -- footer table ----------------------------------------------------------------------------


def test_footer_table_of_amdsev_fragment(data: Data) -> None:
    image = data(AMDSEV)
    table = parse_footer_table(image)
    assert {SEV_ES_RESET_BLOCK_GUID, SEV_HASH_TABLE_RV_GUID, SEV_SECRET_GUID} <= set(table)
    assert sev_secret_area(image) == (0x810000, 0xC00)
    assert sev_hashes_table_area(image) == (0x810C00, 0x400)
    assert sev_es_reset_eip(image) == 0x80B004


def test_footer_table_agrees_with_sev_snp_measure(data: Data, tmp_path: Path) -> None:
    ovmf_mod = pytest.importorskip("sevsnpmeasure.ovmf")
    for name in (AMDSEV, OVMFX64):
        path = tmp_path / "fw.bin"
        path.write_bytes(data(name))
        theirs = ovmf_mod.OVMF(str(path))._table
        ours = parse_footer_table(data(name))
        assert {str(k): v for k, v in ours.items()} == theirs


def test_sev_metadata_agrees_with_sev_snp_measure(data: Data, tmp_path: Path) -> None:
    ovmf_mod = pytest.importorskip("sevsnpmeasure.ovmf")
    for name in (AMDSEV, OVMFX64):
        path = tmp_path / "fw.bin"
        path.write_bytes(data(name))
        theirs = [
            (d.gpa, d.size, d.section_type_int) for d in ovmf_mod.OVMF(str(path)).metadata_items()
        ]
        assert sev_metadata(data(name)) == theirs
        assert theirs  # both fragments carry SNP metadata
    assert sev_metadata(bytes(4096)) == []


def test_footer_table_absent_and_malformed() -> None:
    assert parse_footer_table(b"") == {}
    assert parse_footer_table(bytes(4096)) == {}
    image = bytearray(4096)
    footer = build_footer_table([(SEV_SECRET_GUID, b"\x00" * 8)])
    image[4096 - 32 - len(footer) : 4096 - 32] = footer
    image[4096 - 32 - len(footer) + 8] = 1  # entry size 1 < 18
    with pytest.raises(ValueError, match="invalid size"):
        parse_footer_table(bytes(image))


def test_build_footer_table_roundtrip() -> None:
    entries = [
        (SEV_SECRET_GUID, (0x1000).to_bytes(4, "little") + (0x1000).to_bytes(4, "little")),
        (SEV_HASH_TABLE_RV_GUID, (0x2000).to_bytes(4, "little") + (0x400).to_bytes(4, "little")),
        (uuid.uuid4(), b"anything"),
    ]
    table = build_footer_table(entries)
    image = bytes(8192 - 32 - len(table)) + table + bytes(32)
    assert parse_footer_table(image) == dict(entries)
    assert sev_secret_area(image) == (0x1000, 0x1000)
    assert sev_hashes_table_area(image) == (0x2000, 0x400)
    assert sev_es_reset_eip(image) is None


# -- hashes table ----------------------------------------------------------------------------


def test_hashes_table_layout() -> None:
    table = build_hashes_table(b"kernel", b"initrd", "console=ttyS0")
    assert len(table) == HASHES_TABLE_LEN == 176
    assert table[:16] == uuid.UUID("9438d606-4f22-4cc9-b479-a793d411fd21").bytes_le
    assert int.from_bytes(table[16:18], "little") == 168
    for i, guid in enumerate(
        (
            "97d02dd8-bd20-4c94-aa78-e7714d36ab2a",
            "44baf731-3a2f-4bd7-9af1-41e29169781d",
            "4de79437-abd2-427f-b835-d5b172d2045b",
        )
    ):
        entry = table[18 + 50 * i : 18 + 50 * (i + 1)]
        assert entry[:16] == uuid.UUID(guid).bytes_le
        assert int.from_bytes(entry[16:18], "little") == 50
    assert table[168:] == bytes(8)
    # No cmdline and an empty one both hash "\0"; no initrd hashes "".
    assert build_hashes_table(b"k") == build_hashes_table(b"k", b"", "")


@pytest.mark.parametrize(
    ("initrd", "append"), [(b"initrd", "console=ttyS0 loglevel=7"), (None, None), (b"", "")]
)
def test_hashes_table_agrees_with_sev_snp_measure(
    tmp_path: Path, initrd: bytes | None, append: str | None
) -> None:
    sev_hashes = pytest.importorskip("sevsnpmeasure.sev_hashes")
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"\x7fELF fake kernel")
    initrd_path = None
    if initrd is not None:
        initrd_path = tmp_path / "initrd"
        initrd_path.write_bytes(initrd)
    theirs = sev_hashes.SevHashes(
        str(kernel), str(initrd_path) if initrd_path else None, append
    ).construct_table()
    assert build_hashes_table(kernel.read_bytes(), initrd, append) == theirs


# -- VMSA ------------------------------------------------------------------------------------


@pytest.mark.parametrize("cpu", ["EPYC-v4", "EPYC-Milan", "EPYC-Genoa"])
def test_vmsa_agrees_with_sev_snp_measure(cpu: str) -> None:
    vmsa_mod = pytest.importorskip("sevsnpmeasure.vmsa")
    sev_mode = pytest.importorskip("sevsnpmeasure.sev_mode")
    sig = CPU_SIGNATURES[cpu]
    theirs = list(vmsa_mod.VMSA(sev_mode.SevMode.SEV_ES, 0x80B004, sig, 0).pages(3))
    assert vmsa_pages(3, 0x80B004, sig) == theirs
    assert len(theirs[0]) == VMSA_LEN


def test_vmsa_fields() -> None:
    page = build_vmsa(BSP_EIP, 0x800F12)
    assert page[0x10:0x12] == (0xF000).to_bytes(2, "little")  # CS selector
    assert page[0x18:0x20] == (0xFFFF0000).to_bytes(8, "little")  # CS base
    assert page[0x178:0x180] == (0xFFF0).to_bytes(8, "little")  # RIP
    assert page[0x310:0x318] == (0x800F12).to_bytes(8, "little")  # RDX = CPUID signature
    with pytest.raises(ValueError, match="reset block"):
        vmsa_pages(2, 0, 0)
    with pytest.raises(ValueError):
        vmsa_pages(0, 0, 0)


# -- live cross-check with the sev-snp-measure tool -----------------------------------------


def _sev_snp_measure() -> str:
    local = Path(sys.executable).parent / "sev-snp-measure"
    found = str(local) if local.exists() else shutil.which("sev-snp-measure")
    if found is None:
        pytest.skip("sev-snp-measure is not installed")
    return found


def _measure(*args: str) -> str:
    out = subprocess.run(
        [_sev_snp_measure(), *args], check=True, capture_output=True, text=True, timeout=60
    )
    return out.stdout.strip()


@pytest.mark.parametrize(
    "boot",
    [
        {},
        {"kernel": "kernel"},
        {"kernel": "kernel", "initrd": "initrd"},
        {"kernel": "kernel", "initrd": "initrd", "append": "console=ttyS0 root=/dev/vda"},
    ],
)
def test_sev_mode_matches_sev_snp_measure(tmp_path: Path, boot: dict[str, str]) -> None:
    fw = DATA_DIR / AMDSEV
    files = {"kernel": b"bzImage" * 100, "initrd": b"cpio" * 50}
    args = ["--mode", "sev", "--ovmf", str(fw)]
    for key in ("kernel", "initrd"):
        if key in boot:
            (tmp_path / key).write_bytes(files[key])
            args += [f"--{key}", str(tmp_path / key)]
    if "append" in boot:
        args += ["--append", boot["append"]]
    ours = launch_digest(
        fw.read_bytes(),
        kernel=files["kernel"] if "kernel" in boot else None,
        initrd=files["initrd"] if "initrd" in boot else None,
        append=boot.get("append"),
    )
    assert ours.hex() == _measure(*args)


def test_seves_mode_matches_sev_snp_measure(tmp_path: Path) -> None:
    fw = DATA_DIR / AMDSEV
    kernel = tmp_path / "kernel"
    kernel.write_bytes(b"kernel")
    theirs = _measure(
        "--mode",
        "seves",
        "--vcpus",
        "2",
        "--vcpu-type",
        "EPYC-Rome",
        "--ovmf",
        str(fw),
        "--kernel",
        str(kernel),
        "--append",
        "quiet",
    )
    ours = seves_digest(fw.read_bytes(), 2, CPU_SIGNATURES["EPYC-Rome"], b"kernel", None, "quiet")
    assert ours.hex() == theirs


@pytest.mark.parametrize("path", DEBIAN_OVMF, ids=lambda p: str(p))
def test_debian_ovmf_matches_sev_snp_measure(path: Path) -> None:
    # Debian's `ovmf` package (real OvmfPkgX64 builds). They have no kernel-hashes area.
    if not path.exists():
        pytest.skip(f"{path} is absent (install the Debian package 'ovmf')")
    image = path.read_bytes()
    assert launch_digest(image).hex() == _measure("--mode", "sev", "--ovmf", str(path))
    area = sev_hashes_table_area(image)
    assert area is None or area[0] == 0
    with pytest.raises(ValueError, match="doesn't support"):
        launch_digest(image, kernel=b"")
