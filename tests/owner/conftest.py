"""Fixtures for the guest-owner tests: published test data, a simulated platform
(``owner_sim.py``) and a runner for the owner's ``sevctl`` verbs."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from owner_sim import SimPlatform, make_platform
from sevctl.owner_cli import add_owner_commands

DATA = Path(__file__).parent.parent / "formats" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def data() -> Callable[[str], bytes]:
    def read(name: str) -> bytes:
        return (DATA / name).read_bytes()

    return read


@pytest.fixture(scope="session")
def root_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def platform(root_key: rsa.RSAPrivateKey) -> SimPlatform:
    return make_platform(root_key)


@pytest.fixture
def sevctl() -> Callable[..., int]:
    """Run an owner verb as ``sevctl`` would: ``sevctl("session", "pdh.cert", "1")``."""

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="sevctl")
        sub = parser.add_subparsers(dest="cmd", required=True)
        add_owner_commands(sub)
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    return run
