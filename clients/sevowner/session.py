"""Launch sessions: what a guest owner hands to QEMU (or sevd) for LAUNCH_START.

For a platform's PDH certificate and a guest policy, :func:`create_session` makes a fresh
guest-owner DH key (ECDH P-384), random TEK/TIK/nonce/wrap IV, and returns the GODH
certificate (2084 bytes, as virtee/sevctl write it: usage PDH, algo ECDH-SHA256, API 0.0,
both signature slots empty) and the 128-byte session blob (reference/sev-firmware.md §15).

Files (virtee/sevctl ``src/session.rs``): ``NAME_godh.b64`` and ``NAME_session.b64`` hold
base64 text without a newline, as QEMU's ``dh-cert-file``/``session-file`` read them;
``NAME_tek.bin`` and ``NAME_tik.bin`` hold the raw 16-byte keys and are created with mode
0600 (sevctl leaves them to the umask).

Unlike virtee's sevctl, the policy is MACed exactly as given: sevctl converts it through
``Policy::from(u32)``, which drops reserved bits and mangles the API-version bits 16–31, so
its ``policy_mac`` only matches real firmware for policies below 0x10000 (§16.9).

Imports only ``sevd.formats`` and ``cryptography``; must not import daemon code
(``sevd.domain``, ``sevd.commands``, …). Never prints or logs TEK/TIK.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from sevd.formats.crypto import KEY_LEN, ecdh_z
from sevd.formats.session import SESSION_LEN, build_session
from sevd.formats.sevcert import SevCert, Usage

__all__ = [
    "LaunchSession",
    "RandomSource",
    "SessionFiles",
    "create_session",
    "load_session",
    "read_key_file",
    "save_session",
    "session_file_names",
    "write_key_file",
]

#: ``rng(n)`` returns ``n`` random bytes; ``os.urandom`` unless a test supplies its own.
RandomSource = Callable[[int], bytes]


@dataclass(frozen=True, repr=False)
class LaunchSession:
    """A guest owner's launch session. ``tek`` and ``tik`` are secrets (hidden in repr)."""

    policy: int
    godh_cert: bytes
    session: bytes
    tek: bytes
    tik: bytes

    def __post_init__(self) -> None:
        if len(self.session) != SESSION_LEN:
            raise ValueError(f"session blob must be {SESSION_LEN} bytes")
        if len(self.tek) != KEY_LEN or len(self.tik) != KEY_LEN:
            raise ValueError("TEK and TIK are 16 bytes each")
        SevCert.from_bytes(self.godh_cert)  # validates the certificate

    @property
    def godh_b64(self) -> str:
        return base64.b64encode(self.godh_cert).decode()

    @property
    def session_b64(self) -> str:
        return base64.b64encode(self.session).decode()

    def __repr__(self) -> str:
        return f"LaunchSession(policy=0x{self.policy:x}, tek=<secret>, tik=<secret>)"


def _private_key_from(rng: RandomSource, curve: ec.EllipticCurve) -> ec.EllipticCurvePrivateKey:
    # A scalar in [1, n-1] from the random source, with 64 extra bits so the reduction
    # bias is negligible; with os.urandom this is as good as generate_private_key, and with
    # a test's deterministic source it makes the GODH reproducible.
    order = _ORDERS[curve.name]
    width = (order.bit_length() + 7) // 8 + 8
    scalar = int.from_bytes(rng(width), "big") % (order - 1) + 1
    return ec.derive_private_key(scalar, curve)


_ORDERS = {
    "secp384r1": int(
        "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf"
        "581a0db248b0a77aecec196accc52973",
        16,
    ),
    "secp256r1": int("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 16),
}


def create_session(
    pdh: bytes | SevCert, policy: int, *, rng: RandomSource = os.urandom
) -> LaunchSession:
    """A new session for the platform whose PDH certificate is ``pdh``.

    The PDH's signatures are not checked here (verify the chain with
    :mod:`sevowner.chain` first). Random bytes are drawn in this order: GODH scalar, TEK,
    TIK, nonce, wrap IV.
    """
    cert = SevCert.from_bytes(pdh) if isinstance(pdh, bytes | bytearray) else pdh
    if cert.pubkey_usage is not Usage.PDH or not cert.pubkey_algo.is_ecdh:
        raise ValueError(
            f"not a PDH certificate: usage {cert.pubkey_usage.name}, "
            f"algorithm {cert.pubkey_algo.name}"
        )
    godh_key = _private_key_from(rng, cert.public_key.curve)
    tek, tik, nonce, wrap_iv = rng(KEY_LEN), rng(KEY_LEN), rng(16), rng(16)
    blob = build_session(ecdh_z(godh_key, cert.public_key), nonce, wrap_iv, tek, tik, policy)
    godh = SevCert.new_godh(godh_key.public_key())
    return LaunchSession(policy, godh.to_bytes(), blob.to_bytes(), tek, tik)


@dataclass(frozen=True)
class SessionFiles:
    """The four files of a session named ``NAME``."""

    godh: Path
    session: Path
    tek: Path
    tik: Path


def session_file_names(name: str = "vm", directory: str | Path | None = None) -> SessionFiles:
    """``NAME_godh.b64``, ``NAME_session.b64``, ``NAME_tek.bin``, ``NAME_tik.bin``
    (sevctl ``file_names``; ``NAME`` may contain a directory part, as with sevctl)."""
    base = Path(directory) if directory is not None else Path()
    return SessionFiles(
        godh=base / f"{name}_godh.b64",
        session=base / f"{name}_session.b64",
        tek=base / f"{name}_tek.bin",
        tik=base / f"{name}_tik.bin",
    )


def write_key_file(path: str | Path, key: bytes) -> None:
    """Write a raw key readable by its owner only (mode 0600, also if the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(key)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def read_key_file(path: str | Path) -> bytes:
    """Read a raw 16-byte TEK/TIK file."""
    key = Path(path).read_bytes()
    if len(key) != KEY_LEN:
        raise ValueError(f"{path}: a TEK/TIK file holds {KEY_LEN} bytes, not {len(key)}")
    return key


def save_session(
    session: LaunchSession, name: str = "vm", directory: str | Path | None = None
) -> SessionFiles:
    """Write the four virtee-compatible files and return their paths."""
    files = session_file_names(name, directory)
    write_key_file(files.tik, session.tik)
    write_key_file(files.tek, session.tek)
    files.session.write_text(session.session_b64)
    files.godh.write_text(session.godh_b64)
    return files


def load_session(
    policy: int, name: str = "vm", directory: str | Path | None = None
) -> LaunchSession:
    """Read a session written by :func:`save_session` or by virtee's ``sevctl session``
    (the files do not record the policy, so it is given)."""
    files = session_file_names(name, directory)
    return LaunchSession(
        policy=policy,
        godh_cert=base64.b64decode(files.godh.read_text().strip(), validate=True),
        session=base64.b64decode(files.session.read_text().strip(), validate=True),
        tek=read_key_file(files.tek),
        tik=read_key_file(files.tik),
    )
