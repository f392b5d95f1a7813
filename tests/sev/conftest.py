"""Fixtures of the SEV integration tests: one shared daemon per module and profile.

Daemons start with the cached platform identity of `tests/conftest.py` (no RSA key
generation per test); tests that share a daemon use fresh guest names and remove what
they add, so they stay independent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from sev_support import DaemonProc, Qmp, sev_daemon, short_tmpdir, stop_daemon


@pytest.fixture(scope="module")
def milan() -> Iterator[DaemonProc]:
    """A Milan daemon (the default profile: SEV and SEV-ES, attestation)."""
    d = sev_daemon(short_tmpdir())
    yield d
    stop_daemon(d)


@pytest.fixture(scope="module")
def naples() -> Iterator[DaemonProc]:
    """A Naples daemon: 15 ASIDs, no SEV-ES, no ATTESTATION, RSA-2048 roots."""
    d = sev_daemon(short_tmpdir(), profile="naples")
    yield d
    stop_daemon(d)


@pytest.fixture
async def control(milan: DaemonProc) -> AsyncIterator[Qmp]:
    c = Qmp("control")
    await c.connect(milan.control)
    yield c
    await c.disconnect()
