"""The 128-byte session blob of LAUNCH_START / SEND_START / RECEIVE_START, and key wrapping.

Layout (reference/sev-firmware.md §8.1; sev-tool ``sev_session_buf``, ASPFW
``sev_session_t``, virtee ``launch::sev::Session``):

====== ==== ================================================
offset size field
====== ==== ================================================
0x00   16   nonce
0x10   32   wrap_tk    = AES-128-CTR(KEK, wrap_iv)(TEK‖TIK)
0x30   16   wrap_iv
0x40   32   wrap_mac   = HMAC-SHA256(KIK, wrap_tk)
0x60   32   policy_mac = HMAC-SHA256(TIK, LE32(policy))
====== ==== ================================================

with ``master = KDF(Z, "sev-master-secret", nonce)``, ``KEK = KDF(master, "sev-kek")``,
``KIK = KDF(master, "sev-kik")`` and Z the ECDH shared secret of the PDH and the GODH (§6.3).
The guest owner builds it (:func:`build_session`); the firmware opens it
(:func:`open_session`), checking ``wrap_mac`` and then ``policy_mac`` — a mismatch of either
is BAD_MEASUREMENT in firmware (§16.12), here a ``ValueError`` naming the MAC.

Pure and synchronous; imports only the standard library, ``cryptography`` and
``sevd.formats.crypto``. Must not import anything else from ``sevd``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sevd.formats.crypto import (
    KEY_LEN,
    aes128_ctr,
    derive_kek,
    derive_kik,
    derive_master_secret,
    hmac_sha256,
    le32,
    mac_equal,
)

__all__ = [
    "SESSION_LEN",
    "SessionBlob",
    "build_session",
    "check_policy_mac",
    "open_session",
    "policy_mac",
    "unwrap_keys",
    "wrap_keys",
]

SESSION_LEN = 128
_LAYOUT = struct.Struct("<16s32s16s32s32s")


@dataclass(frozen=True)
class SessionBlob:
    """The session blob's five fields."""

    nonce: bytes
    wrap_tk: bytes
    wrap_iv: bytes
    wrap_mac: bytes
    policy_mac: bytes

    def __post_init__(self) -> None:
        for name, size in (
            ("nonce", 16),
            ("wrap_tk", 32),
            ("wrap_iv", 16),
            ("wrap_mac", 32),
            ("policy_mac", 32),
        ):
            if len(getattr(self, name)) != size:
                raise ValueError(f"session blob: {name} must be {size} bytes")

    @classmethod
    def from_bytes(cls, data: bytes) -> SessionBlob:
        if len(data) != SESSION_LEN:
            raise ValueError(f"session blob must be {SESSION_LEN} bytes, got {len(data)}")
        return cls(*_LAYOUT.unpack(data))

    def to_bytes(self) -> bytes:
        return _LAYOUT.pack(self.nonce, self.wrap_tk, self.wrap_iv, self.wrap_mac, self.policy_mac)


def _check_key(name: str, key: bytes) -> None:
    if len(key) != KEY_LEN:
        raise ValueError(f"{name} must be {KEY_LEN} bytes, not {len(key)}")


def wrap_keys(kek: bytes, kik: bytes, tek: bytes, tik: bytes, iv: bytes) -> tuple[bytes, bytes]:
    """``wrap_tk = AES-128-CTR(KEK, iv)(TEK‖TIK)``, ``wrap_mac = HMAC(KIK, wrap_tk)``."""
    _check_key("TEK", tek)
    _check_key("TIK", tik)
    wrap_tk = aes128_ctr(kek, iv, tek + tik)
    return wrap_tk, hmac_sha256(kik, wrap_tk)


def unwrap_keys(
    kek: bytes, kik: bytes, wrap_tk: bytes, wrap_iv: bytes, wrap_mac: bytes
) -> tuple[bytes, bytes]:
    """Check ``wrap_mac`` first, then decrypt ``wrap_tk`` into ``(TEK, TIK)``.

    Raises ``ValueError("wrap_mac")`` on a mismatch (firmware: BAD_MEASUREMENT, §8.1 step 5).
    """
    if len(wrap_tk) != 2 * KEY_LEN:
        raise ValueError(f"wrap_tk must be {2 * KEY_LEN} bytes, not {len(wrap_tk)}")
    if not mac_equal(hmac_sha256(kik, wrap_tk), wrap_mac):
        raise ValueError("wrap_mac")
    keys = aes128_ctr(kek, wrap_iv, wrap_tk)
    return keys[:KEY_LEN], keys[KEY_LEN:]


def policy_mac(tik: bytes, policy: int) -> bytes:
    """``HMAC-SHA256(TIK, LE32(policy))`` — the policy exactly as the 32-bit word (§16.9)."""
    return hmac_sha256(tik, le32(policy))


def check_policy_mac(tik: bytes, policy: int, mac: bytes) -> None:
    """Raises ``ValueError("policy_mac")`` unless ``mac`` MACs ``policy`` under ``tik``."""
    if not mac_equal(policy_mac(tik, policy), mac):
        raise ValueError("policy_mac")


def build_session(
    z: bytes, nonce: bytes, wrap_iv: bytes, tek: bytes, tik: bytes, policy: int
) -> SessionBlob:
    """The session blob a guest owner (or SEND_START) sends for shared secret ``z``."""
    master = derive_master_secret(z, nonce)
    wrap_tk, wrap_mac = wrap_keys(derive_kek(master), derive_kik(master), tek, tik, wrap_iv)
    return SessionBlob(nonce, wrap_tk, wrap_iv, wrap_mac, policy_mac(tik, policy))


def open_session(z: bytes, blob: SessionBlob, policy: int) -> tuple[bytes, bytes]:
    """The firmware side: derive KEK/KIK from ``z`` and the blob's nonce, check
    ``wrap_mac``, unwrap ``(TEK, TIK)``, check ``policy_mac`` against ``policy`` (the policy
    of the command, §8.1 steps 4–6). ``ValueError("wrap_mac" | "policy_mac")`` on mismatch."""
    master = derive_master_secret(z, blob.nonce)
    tek, tik = unwrap_keys(
        derive_kek(master), derive_kik(master), blob.wrap_tk, blob.wrap_iv, blob.wrap_mac
    )
    check_policy_mac(tik, policy, blob.policy_mac)
    return tek, tik
