"""Operations tests (systemd, configuration, lifecycle, limits, access control): they start
real daemons through `ops_support.spawn` and talk to them over unix sockets only."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "sevd_args(*args): command-line arguments of the "
                            "daemon the `running` fixture starts")
