"""The broker over HTTP (aiohttp): JSON in, JSON out, simple-kbs's field names.

Routes: ``POST /v1/bundle`` and ``POST /v1/secret``, with the gRPC method paths of
simple-kbs (``/keybroker.KeyBrokerService/GetBundle``, ``…/GetSecret``) as aliases, and
``GET /healthz``. A refused request gets its :class:`~sevkbs.broker.KbsError` as
``{"Code", "Message"}`` with a 4xx status; anything unexpected a 500 with a neutral text
(the traceback goes to the log, which never holds keys or secrets: requests and responses
are not logged, only launch ids, workloads, GUIDs and reasons).

Imports aiohttp; must not import daemon code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from aiohttp import web

from sevkbs.broker import Broker, KbsError

__all__ = ["MAX_REQUEST", "make_app", "serve"]

log = logging.getLogger("sevkbs")

#: A full chain is about 8 KiB of base64 plus the JSON around it; nothing needs more.
MAX_REQUEST = 256 << 10


def _reply(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        content_type="application/json",
                        headers={"Cache-Control": "no-store"})


def make_app(broker: Broker) -> web.Application:
    async def call(request: web.Request, op: Callable[[dict[str, Any]], dict[str, Any]]
                   ) -> web.Response:
        try:
            body = await request.read()
            try:
                req = json.loads(body)
            except ValueError:
                raise KbsError(400, "InvalidRequest", "the body is not JSON") from None
            if not isinstance(req, dict):
                raise KbsError(400, "InvalidRequest", "the body must be a JSON object")
            return _reply(op(req))
        except KbsError as e:
            return _reply(e.to_json(), e.status)
        except web.HTTPRequestEntityTooLarge:
            return _reply({"Code": "RequestTooLarge", "Message": "request body too large"},
                          413)

    async def bundle(request: web.Request) -> web.Response:
        return await call(request, broker.get_bundle)

    async def secret(request: web.Request) -> web.Response:
        return await call(request, broker.get_secret)

    async def healthz(request: web.Request) -> web.Response:
        return _reply({"status": "ok", "workloads": sorted(broker.config.workloads),
                       "open-launches": broker.open_launches})

    app = web.Application(client_max_size=MAX_REQUEST)
    for path in ("/v1/bundle", "/keybroker.KeyBrokerService/GetBundle"):
        app.router.add_post(path, bundle)
    for path in ("/v1/secret", "/keybroker.KeyBrokerService/GetSecret"):
        app.router.add_post(path, secret)
    app.router.add_get("/healthz", healthz)
    return app


async def serve(broker: Broker, listen: str, *, ready: Callable[[str], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or forever); `ready(address)` once listening."""
    runner = web.AppRunner(make_app(broker), access_log=None)
    await runner.setup()
    kind, _, rest = listen.partition(":")
    unix_path = None
    if kind == "unix":
        unix_path = rest
        with contextlib.suppress(FileNotFoundError):
            os.unlink(rest)  # a stale socket of an earlier broker
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # 0660: the owner's group may ask, nobody else
        try:
            sock.bind(rest)
        finally:
            os.umask(old)
        sock.listen(128)
        address = f"unix:{rest}"
    else:
        host, _, port = rest.rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server(("127.0.0.1" if host == "localhost" else host, int(port)),
                                    family=family)
        bound = sock.getsockname()
        address = f"http://{bound[0]}:{bound[1]}" if family == socket.AF_INET else \
            f"http://[{bound[0]}]:{bound[1]}"
    sock.setblocking(False)
    site = web.SockSite(runner, sock, shutdown_timeout=2.0)
    await site.start()
    log.info("sevkbs listening on %s (%d workloads)", address, len(broker.config.workloads))
    if ready is not None:
        ready(address)
    try:
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
        if unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(unix_path)
