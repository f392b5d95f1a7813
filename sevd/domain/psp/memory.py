"""Guest memory as the simulated firmware sees it, and the memory controller's page cipher.

* :class:`GuestMemory` is the interface the firmware uses: byte ranges and whole 4 KiB
  pages of *stored* bytes, i.e. what the hypervisor sees (ciphertext for private pages,
  plaintext for shared ones).
* :class:`SparsePageStore` implements it with a dict of pages: a page costs host memory
  only once written with something other than zeros (DESIGN.md §5).
* :class:`PageCipher` is the memory controller's encryption for one guest key: AES-128-XTS
  per 4 KiB page, data-unit number = the guest physical address of the page (LE128), key 1 =
  the VEK, key 2 (the tweak key) derived from the VEK. XTS encrypts every 16-byte block
  under a tweak that depends on its address, so equal plaintext at two addresses gives
  different ciphertext, as on real parts (DESIGN.md §5, reference §10 [sim choice]).
* :func:`read_private` / :func:`write_private` read and write plaintext through a
  :class:`PageCipher` at any byte granularity (whole pages are decrypted, spliced and
  re-encrypted; XTS blocks are independent, so untouched blocks keep their ciphertext).

Performance: a fresh cipher context per page is unavoidable with a per-page tweak, so the
per-page overhead is what matters. :class:`PageCipher` keeps the ``algorithms.AES`` object
(key schedule input, validated once) and builds each context through a ``Cipher``
subclass that skips the argument validation already done once (see ``bench/psp.py``).

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn, Protocol, runtime_checkable

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from sevd.formats.crypto import hmac_sha256

__all__ = [
    "PAGE_SHIFT",
    "PAGE_SIZE",
    "ZERO_PAGE",
    "GuestMemory",
    "MemoryRangeError",
    "PageCipher",
    "SparsePageStore",
    "read_private",
    "write_private",
]

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ZERO_PAGE = bytes(PAGE_SIZE)

_TWEAK_KEY_LABEL = b"sevd memory-controller xts tweak key"


class MemoryRangeError(ValueError):
    """An access outside the guest's physical memory (the firmware answers INVALID_ADDRESS)."""


@runtime_checkable
class GuestMemory(Protocol):
    """What the firmware needs from a guest's physical memory: its stored bytes."""

    @property
    def size(self) -> int:
        """Bytes of guest-physical address space (a multiple of the page size)."""
        ...

    def read(self, gpa: int, length: int) -> bytes:
        """Stored bytes of ``[gpa, gpa+length)``; never-written bytes read as zero."""
        ...

    def write(self, gpa: int, data: bytes) -> None:
        """Store ``data`` at ``gpa`` as is (no encryption)."""
        ...

    def read_page(self, pfn: int) -> bytes:
        """The 4096 stored bytes of page frame ``pfn``."""
        ...

    def write_page(self, pfn: int, data: bytes) -> None:
        """Replace page frame ``pfn`` with exactly 4096 bytes."""
        ...

    def present_pages(self) -> Iterator[int]:
        """Page frames that hold something other than zeros, in ascending order."""
        ...


class SparsePageStore:
    """A sparse :class:`GuestMemory`: a dict from page frame number to 4096 bytes.

    All-zero pages are not stored, so nominal gigabytes cost nothing until written.
    """

    __slots__ = ("_pages", "_size")

    def __init__(self, size: int) -> None:
        if size <= 0 or size % PAGE_SIZE:
            raise ValueError(f"guest memory size must be a positive multiple of {PAGE_SIZE}")
        self._size = size
        self._pages: dict[int, bytes] = {}

    def __repr__(self) -> str:
        return f"SparsePageStore(size={self._size}, pages={len(self._pages)})"

    @property
    def size(self) -> int:
        return self._size

    @property
    def resident_pages(self) -> int:
        """Pages that cost host memory."""
        return len(self._pages)

    def _check(self, gpa: int, length: int) -> None:
        if gpa < 0 or length < 0 or gpa + length > self._size:
            raise MemoryRangeError(
                f"range 0x{gpa:x}+0x{length:x} is outside guest memory (0x{self._size:x} bytes)"
            )

    def read_page(self, pfn: int) -> bytes:
        self._check(pfn << PAGE_SHIFT, PAGE_SIZE)
        return self._pages.get(pfn, ZERO_PAGE)

    def write_page(self, pfn: int, data: bytes) -> None:
        self._check(pfn << PAGE_SHIFT, PAGE_SIZE)
        if len(data) != PAGE_SIZE:
            raise ValueError(f"a page is {PAGE_SIZE} bytes, not {len(data)}")
        if data == ZERO_PAGE:
            self._pages.pop(pfn, None)
        else:
            self._pages[pfn] = bytes(data)

    def read(self, gpa: int, length: int) -> bytes:
        self._check(gpa, length)
        out = bytearray()
        end = gpa + length
        while gpa < end:
            pfn, off = divmod(gpa, PAGE_SIZE)
            take = min(PAGE_SIZE - off, end - gpa)
            out += self._pages.get(pfn, ZERO_PAGE)[off : off + take]
            gpa += take
        return bytes(out)

    def write(self, gpa: int, data: bytes) -> None:
        self._check(gpa, len(data))
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            pfn, off = divmod(gpa + pos, PAGE_SIZE)
            take = min(PAGE_SIZE - off, len(view) - pos)
            if take == PAGE_SIZE:
                self.write_page(pfn, bytes(view[pos : pos + take]))
            else:
                page = bytearray(self._pages.get(pfn, ZERO_PAGE))
                page[off : off + take] = view[pos : pos + take]
                self.write_page(pfn, bytes(page))
            pos += take

    def present_pages(self) -> Iterator[int]:
        return iter(sorted(self._pages))


class _XtsCipher(Cipher[modes.XTS]):
    """``Cipher`` without the per-call argument validation: :class:`PageCipher` validates
    its algorithm and XTS mode once, then creates one context per page through this."""

    def __init__(self, algorithm: algorithms.AES, mode: modes.XTS) -> None:
        self.algorithm = algorithm
        self.mode = mode


class PageCipher:
    """AES-128-XTS of whole 4 KiB pages under one guest key, tweak = page GPA.

    The key never leaves the object: it is not kept as an attribute (only inside the
    ``algorithms.AES`` object) and not shown by ``repr``.
    """

    __slots__ = ("_alg",)

    def __init__(self, vek: bytes) -> None:
        if len(vek) != 16:
            raise ValueError("a VEK is 16 bytes")
        # XTS key 2 (the tweak key) is derived from the VEK (DESIGN.md §5); it can never
        # equal key 1, which OpenSSL's XTS refuses.
        tweak_key = hmac_sha256(vek, _TWEAK_KEY_LABEL)[:16]
        self._alg = algorithms.AES(vek + tweak_key)
        # Validate once what _XtsCipher will not validate again.
        Cipher(self._alg, modes.XTS(bytes(16)))

    def __repr__(self) -> str:
        return "PageCipher(<key hidden>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a PageCipher holds a guest key and cannot be pickled or copied")

    def encrypt_page(self, gpa: int, plaintext: bytes) -> bytes:
        """Ciphertext of the 4096-byte page at ``gpa`` (page aligned)."""
        # XTS has no final block: update() of a whole data unit is the whole ciphertext
        # (finalize() would only return b""), so the context is simply dropped.
        return (
            _XtsCipher(self._alg, modes.XTS(gpa.to_bytes(16, "little")))
            .encryptor()
            .update(plaintext)
        )

    def decrypt_page(self, gpa: int, ciphertext: bytes) -> bytes:
        """Plaintext of the 4096-byte page at ``gpa`` (page aligned)."""
        return (
            _XtsCipher(self._alg, modes.XTS(gpa.to_bytes(16, "little")))
            .decryptor()
            .update(ciphertext)
        )

    def encrypt_pages(self, gpa: int, plaintext: bytes | memoryview) -> list[bytes]:
        """Ciphertext of a run of whole pages starting at the page-aligned ``gpa``."""
        alg, xts, cipher = self._alg, modes.XTS, _XtsCipher
        return [
            cipher(alg, xts((gpa + off).to_bytes(16, "little")))
            .encryptor()
            .update(plaintext[off : off + PAGE_SIZE])
            for off in range(0, len(plaintext), PAGE_SIZE)
        ]


def _pages_of(gpa: int, length: int) -> Iterator[tuple[int, int, int]]:
    """(pfn, offset in page, byte count) for each page that ``[gpa, gpa+length)`` touches."""
    end = gpa + length
    while gpa < end:
        pfn, off = divmod(gpa, PAGE_SIZE)
        take = min(PAGE_SIZE - off, end - gpa)
        yield pfn, off, take
        gpa += take


def _check_range(memory: GuestMemory, gpa: int, length: int) -> None:
    if gpa < 0 or length < 0 or gpa + length > memory.size:
        raise MemoryRangeError(
            f"range 0x{gpa:x}+0x{length:x} is outside guest memory (0x{memory.size:x} bytes)"
        )


def read_private(memory: GuestMemory, cipher: PageCipher, gpa: int, length: int) -> bytes:
    """Plaintext of ``[gpa, gpa+length)`` of private memory (stored as ciphertext)."""
    _check_range(memory, gpa, length)
    parts = []
    for pfn, off, take in _pages_of(gpa, length):
        page = cipher.decrypt_page(pfn << PAGE_SHIFT, memory.read_page(pfn))
        parts.append(page if take == PAGE_SIZE else page[off : off + take])
    return b"".join(parts)


def write_private(memory: GuestMemory, cipher: PageCipher, gpa: int, plaintext: bytes) -> None:
    """Store ``plaintext`` at ``gpa`` encrypted, leaving the rest of each page as it was."""
    _check_range(memory, gpa, len(plaintext))
    view = memoryview(plaintext)
    pos = 0
    run_start = -1
    for pfn, off, take in _pages_of(gpa, len(plaintext)):
        if take == PAGE_SIZE:
            # Whole pages: batch contiguous ones into one encrypt_pages call.
            if run_start < 0:
                run_start = pos
            pos += take
            continue
        if run_start >= 0:
            _write_run(memory, cipher, gpa + run_start, view[run_start:pos])
            run_start = -1
        base = pfn << PAGE_SHIFT
        page = bytearray(cipher.decrypt_page(base, memory.read_page(pfn)))
        page[off : off + take] = view[pos : pos + take]
        memory.write_page(pfn, cipher.encrypt_page(base, bytes(page)))
        pos += take
    if run_start >= 0:
        _write_run(memory, cipher, gpa + run_start, view[run_start:pos])


def _write_run(memory: GuestMemory, cipher: PageCipher, gpa: int, data: memoryview) -> None:
    first = gpa >> PAGE_SHIFT
    for i, page in enumerate(cipher.encrypt_pages(gpa, data)):
        memory.write_page(first + i, page)
