"""The LAUNCH_MEASURE result: ``MEASURE(32) ‖ MNONCE(16)``.

(reference/sev-firmware.md §8.4; ASPFW ``sev_guest_measure``, virtee ``Session::verify``,
sev-tool ``calculate_measurement``, sevctl ``measurement build``)::

    MEASURE = HMAC-SHA256(TIK, 0x04 ‖ API_MAJOR ‖ API_MINOR ‖ BUILD ‖ LE32(policy) ‖ LD ‖ MNONCE)

0x04 is the channel context "MEASURE"; API major/minor and build are one byte each, as
PLATFORM_STATUS reports them; LD is the raw 32-byte SHA-256 launch digest (§16.10).
Firmware older than API 0.17 omitted the prefix; sevd reports API >= 0.17, as virtee and
sevctl always use the prefix.

Pure and synchronous; imports only the standard library, ``cryptography`` and
``sevd.formats.crypto``. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

from sevd.formats.crypto import hmac_sha256, le32, mac_equal

__all__ = [
    "DIGEST_LEN",
    "MEASUREMENT_LEN",
    "MEASURE_CONTEXT",
    "MNONCE_LEN",
    "join_measurement",
    "launch_measure_mac",
    "split_measurement",
    "verify_measurement",
]

MEASUREMENT_LEN = 48
MEASURE_CONTEXT = 0x04
MNONCE_LEN = 16
DIGEST_LEN = 32


def _byte(value: int, name: str) -> bytes:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{name} is one byte in the measurement, not {value}")
    return bytes([value])


def launch_measure_mac(
    tik: bytes,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
    launch_digest: bytes,
    mnonce: bytes,
) -> bytes:
    """The 32-byte MEASURE: ``HMAC(TIK, 0x04‖major‖minor‖build‖LE32(policy)‖LD‖mnonce)``."""
    if len(launch_digest) != DIGEST_LEN:
        raise ValueError(f"launch digest must be {DIGEST_LEN} bytes, not {len(launch_digest)}")
    if len(mnonce) != MNONCE_LEN:
        raise ValueError(f"mnonce must be {MNONCE_LEN} bytes, not {len(mnonce)}")
    return hmac_sha256(
        tik,
        bytes([MEASURE_CONTEXT]),
        _byte(api_major, "api_major"),
        _byte(api_minor, "api_minor"),
        _byte(build, "build"),
        le32(policy),
        launch_digest,
        mnonce,
    )


def split_measurement(blob: bytes) -> tuple[bytes, bytes]:
    """``(MEASURE, MNONCE)`` of the 48-byte LAUNCH_MEASURE output (MEASURE comes first)."""
    if len(blob) != MEASUREMENT_LEN:
        raise ValueError(f"launch measurement must be {MEASUREMENT_LEN} bytes, got {len(blob)}")
    return blob[:DIGEST_LEN], blob[DIGEST_LEN:]


def join_measurement(mac: bytes, mnonce: bytes) -> bytes:
    """The 48-byte blob ``MEASURE ‖ MNONCE`` (what QEMU's query-sev-launch-measure returns)."""
    if len(mac) != DIGEST_LEN or len(mnonce) != MNONCE_LEN:
        raise ValueError("a measurement is a 32-byte MAC and a 16-byte nonce")
    return mac + mnonce


def verify_measurement(
    blob: bytes,
    tik: bytes,
    api_major: int,
    api_minor: int,
    build: int,
    policy: int,
    launch_digest: bytes,
) -> bool:
    """True if the 48-byte ``blob`` is the measurement of ``launch_digest`` (constant time)."""
    mac, mnonce = split_measurement(blob)
    expected = launch_measure_mac(tik, api_major, api_minor, build, policy, launch_digest, mnonce)
    return mac_equal(expected, mac)
