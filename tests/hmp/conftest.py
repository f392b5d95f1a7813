"""Fixtures for the HMP tests (the doubles themselves are in hmp_fakes.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hmp_fakes import FakeGuest, build_monitor

from sevd.hmp import HmpMonitor


@pytest.fixture
def guest() -> FakeGuest:
    return FakeGuest()


@pytest.fixture
def monitor() -> HmpMonitor:
    return build_monitor()


@pytest.fixture
def hmp(monitor: HmpMonitor, guest: FakeGuest) -> Any:
    """``hmp("xp /8xb 0")`` -> the string human-monitor-command would return."""

    def run(line: str) -> str:
        return monitor.run(line, guest)

    return run
