"""Fixtures for the sevd.formats tests: the published test data and shared slow keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data() -> Callable[[str], bytes]:
    """Read a file of ``tests/formats/data`` (see its README for the sources)."""

    def read(name: str) -> bytes:
        return (DATA / name).read_bytes()

    return read


@pytest.fixture(scope="session")
def rsa4096_key() -> rsa.RSAPrivateKey:
    """One RSA-4096 key per test session (generation takes a second or more)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=4096)


@pytest.fixture(scope="session")
def rsa2048_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)
