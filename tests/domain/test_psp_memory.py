"""Sparse guest memory and the memory controller's AES-XTS page cipher."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from sevd.domain.psp import PAGE_SIZE, GuestMemory, MemoryRangeError, PageCipher, SparsePageStore
from sevd.domain.psp.memory import read_private, write_private
from sevd.formats.crypto import hmac_sha256

VEK = bytes(range(16))


def test_sparse_store_is_sparse_and_zero_filled() -> None:
    mem = SparsePageStore(1 << 40)  # a terabyte costs nothing until written
    assert isinstance(mem, GuestMemory)
    assert mem.read(123_456_789, 32) == bytes(32)
    mem.write(PAGE_SIZE - 3, b"abcdef")
    assert mem.resident_pages == 2
    assert mem.read(PAGE_SIZE - 3, 6) == b"abcdef"
    assert list(mem.present_pages()) == [0, 1]
    mem.write(PAGE_SIZE - 3, bytes(6))
    assert mem.resident_pages == 0  # all-zero pages are dropped


@pytest.mark.parametrize(("gpa", "length"), [(-1, 1), ((1 << 20) - 1, 2), (0, (1 << 20) + 1)])
def test_out_of_range(gpa: int, length: int) -> None:
    mem = SparsePageStore(1 << 20)
    with pytest.raises(MemoryRangeError):
        mem.read(gpa, length)
    with pytest.raises(MemoryRangeError):
        mem.write(gpa, bytes(max(length, 0)))


def test_page_cipher_is_xts_with_gpa_tweak() -> None:
    """AES-128-XTS, key 1 = VEK, key 2 derived from it, tweak = LE128(page GPA)."""
    cipher = PageCipher(VEK)
    page = os.urandom(PAGE_SIZE)
    gpa = 0x1234_5000
    tweak_key = hmac_sha256(VEK, b"sevd memory-controller xts tweak key")[:16]
    ref = Cipher(algorithms.AES(VEK + tweak_key), modes.XTS(gpa.to_bytes(16, "little")))
    enc = ref.encryptor()
    assert cipher.encrypt_page(gpa, page) == enc.update(page) + enc.finalize()
    assert cipher.decrypt_page(gpa, cipher.encrypt_page(gpa, page)) == page
    assert b"".join(cipher.encrypt_pages(gpa, page + page)) == cipher.encrypt_page(
        gpa, page
    ) + cipher.encrypt_page(gpa + PAGE_SIZE, page)


def test_equal_plaintext_differs_by_address_and_key() -> None:
    page = b"\x00" * PAGE_SIZE
    a, b = PageCipher(VEK), PageCipher(bytes(16))
    assert a.encrypt_page(0, page) != a.encrypt_page(PAGE_SIZE, page)
    assert a.encrypt_page(0, page) != b.encrypt_page(0, page)
    # Within a page every 16-byte block has its own tweak too.
    ct = a.encrypt_page(0, page)
    assert len({ct[i : i + 16] for i in range(0, PAGE_SIZE, 16)}) == PAGE_SIZE // 16


def test_page_cipher_hides_its_key() -> None:
    cipher = PageCipher(VEK)
    assert VEK.hex() not in repr(cipher) and "key hidden" in repr(cipher)
    assert not hasattr(cipher, "__dict__")


@settings(max_examples=80, deadline=None)
@given(
    gpa=st.integers(0, 5 * PAGE_SIZE),
    data=st.binary(min_size=0, max_size=3 * PAGE_SIZE + 100),
)
def test_private_round_trip_at_any_offset(gpa: int, data: bytes) -> None:
    mem = SparsePageStore(16 * PAGE_SIZE)
    cipher = PageCipher(VEK)
    background = os.urandom(9 * PAGE_SIZE)
    write_private(mem, cipher, 0, background)
    write_private(mem, cipher, gpa, data)
    expected = bytearray(background)
    expected[gpa : gpa + len(data)] = data
    assert read_private(mem, cipher, 0, 9 * PAGE_SIZE) == bytes(expected[: 9 * PAGE_SIZE])
    assert read_private(mem, cipher, gpa, len(data)) == data


def test_private_write_keeps_other_blocks_ciphertext() -> None:
    mem = SparsePageStore(4 * PAGE_SIZE)
    cipher = PageCipher(VEK)
    write_private(mem, cipher, 0, os.urandom(PAGE_SIZE))
    before = mem.read(0, PAGE_SIZE)
    write_private(mem, cipher, 32, b"y" * 16)
    after = mem.read(0, PAGE_SIZE)
    changed = [i for i in range(0, PAGE_SIZE, 16) if before[i : i + 16] != after[i : i + 16]]
    assert changed == [32]
