"""Fixtures of the debug-path tests: one real daemon per module and host profile.

Each daemon writes its dumps to its own `<base>/dumps` (`paths.dump_dir`); tests that share
a daemon use fresh guest names and remove their guests (debug_support.launched).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from debug_support import DaemonProc, Qmp, debug_daemon, stop_daemon


@pytest.fixture(scope="module")
def milan_daemon() -> Iterator[tuple[DaemonProc, Path]]:
    """A Milan daemon (C-bit 51) and its dump directory."""
    d, dumps = debug_daemon("milan")
    yield d, dumps
    stop_daemon(d)


@pytest.fixture(scope="module")
def rome_daemon() -> Iterator[tuple[DaemonProc, Path]]:
    """A Rome daemon (C-bit 47) and its dump directory."""
    d, dumps = debug_daemon("rome")
    yield d, dumps
    stop_daemon(d)


@pytest.fixture
def dumps(milan_daemon: tuple[DaemonProc, Path]) -> Path:
    """The Milan daemon's dump directory (created here as the daemon would: mode 0750)."""
    milan_daemon[1].mkdir(mode=0o750, exist_ok=True)
    return milan_daemon[1]


@pytest.fixture
async def control(milan_daemon: tuple[DaemonProc, Path]) -> AsyncIterator[Qmp]:
    """A qemu.qmp client on the Milan daemon's control socket."""
    c = Qmp("control")
    await c.connect(milan_daemon[0].control)
    yield c
    await c.disconnect()
