"""Helpers for the HTTP tests: an in-process App with a simulated platform behind an aiohttp
TestServer (fast, every endpoint and error path), schema validation, and what the tests that
start real daemons and brokers share. The fixtures are re-exported by conftest.py."""

from __future__ import annotations

import importlib.util
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from aiohttp.test_utils import TestClient, TestServer

from sevd.commands.app import App
from sevd.commands.guests import build_config
from sevd.commands.registry import Ctx
from sevd.commands.schema import Schema
from sevd.daemon import builtin_firmware
from sevd.transports.http import HttpServer

ROOT = Path(__file__).resolve().parents[2]


def root_conftest() -> ModuleType:
    # Every test folder has a `conftest`; the top-level one is loaded by path under a name of
    # its own (as tests/sev does), so both get the same module object.
    name = "sevd_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "tests" / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_top = root_conftest()
start_daemon = _top.start_daemon
short_tmpdir = _top.short_tmpdir
test_identity = _top.test_identity
DaemonProc = _top.DaemonProc

SCHEMA = Schema()


def validator(shape: str) -> Any:
    """A validator for schema/http.json's `$defs/<shape>` (refs into other families work)."""
    return jsonschema.Draft202012Validator(
        {"$ref": f"https://sevd.invalid/schema/http.json#/$defs/{shape}"},
        registry=SCHEMA.registry)


def check(shape: str, value: Any) -> Any:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(shape).iter_errors(value)]
    assert not errors, errors
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_app(profile: str = "milan") -> App:
    from sevd.domain.platform import SevPlatform

    app = App(SCHEMA, validate_returns=True)
    app.platform = SevPlatform(test_identity(profile), profile=profile)
    app.builtin_firmware = builtin_firmware()
    return app


async def add_guest(app: App, name: str, **args: Any) -> None:
    args = {"name": name, **args}
    await app.add_guest(build_config(Ctx(None, app, None), args), args)


def sev_args(policy: int = 0, cbitpos: int = 51) -> dict[str, Any]:
    return {"sev-guest": {"policy": policy, "cbitpos": cbitpos, "reduced-phys-bits": 1}}


async def qmp(app: App, name: str | None, command: str, args: dict[str, Any] | None = None
              ) -> Any:
    """Run a command through the real dispatcher (counted, timed) as a session would."""
    import inspect
    import json

    disp = app.control if name is None else app.slots[name].dispatcher
    out = disp.dispatch(None, command, args, False)
    if inspect.isawaitable(out):
        out = await out
    return json.loads(out)


@pytest.fixture
def app() -> App:
    return make_app()


@pytest.fixture
async def server(app: App) -> HttpServer:
    s = HttpServer(app, sessions=lambda: {"control": 2, "guest": 1}, problems=list)
    s.attach()
    return s


@pytest.fixture
async def client(server: HttpServer) -> AsyncIterator[TestClient[Any, Any]]:
    async with TestClient(TestServer(server.web)) as c:
        yield c
    await server.close()
