"""The daemon's HTTP side (aiohttp): metrics, health, a read-only JSON API, live events, and
a status page — in the same event loop as the QMP server.

Off by default; `[http] listen` (or `--http`) turns it on, on a unix socket or a loopback
TCP port. The daemon imports this module only then, so a daemon without HTTP never loads
aiohttp (tests/ops checks it).

It never changes state: every route is GET (and HEAD); any other method answers 405,
whatever the path. Writes stay on the QMP sockets, where file permissions and peer
credentials guard them. On TCP, requests whose Host header is not a loopback name are
refused, so that a web page cannot reach the API through DNS rebinding.

Routes (their JSON shapes are schema/http.json's `$defs`, their list its `x-http`):

* `/metrics` — Prometheus text format (see `http_metrics`);
* `/healthz` — 200 while the loop answers; `/readyz` — 200 once every listener is up and the
  state is loaded, 503 with the reasons otherwise (also while stopping);
* `/api/v1/host`, `/api/v1/guests`, `/api/v1/guests/{name}`, `/api/v1/guests/{name}/memory`,
  `/api/v1/openapi.json`;
* `/api/v1/events` — Server-Sent Events: every QMP event, with the guest's name;
* `/` — the status page (`http_page`), with `/static/status.css` and `/static/status.js`.

Reads the domain only through the `App` (DESIGN §2: never imports `sevd.domain`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from sevd.protocol.errors import QmpError
from sevd.transports.http_metrics import Metrics
from sevd.transports.http_page import render
from sevd.transports.http_views import (
    event_view,
    guest_view,
    guests_view,
    host_view,
    memory_view,
    openapi,
)
from sevd.transports.unix import bind_unix

if TYPE_CHECKING:
    from sevd.commands.app import App

log = logging.getLogger("sevd.http")

READ_METHODS = frozenset({"GET", "HEAD"})
KEEPALIVE = 15.0          # seconds between SSE comment lines
RECENT_EVENTS = 1024      # kept for Last-Event-ID replays
STREAM_BACKLOG = 4096     # undelivered events per SSE client before it is cut off
GUESTS_TTL = 1.0          # seconds /api/v1/guests may be served from its cache
_SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                     "Cache-Control": "no-store"}
_PAGE_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
             "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ListenError(Exception):
    """The HTTP listener cannot be set up; the text says why."""


@dataclass
class _Stream:
    """One /api/v1/events client: its queue (None ends the stream) and its filter."""

    guest: str | None
    queue: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)


def parse_listen(listen: str, runtime_dir: Path) -> tuple[str, str | tuple[str, int]]:
    """`unix:PATH` (relative to the runtime dir) or `tcp:HOST:PORT` (loopback; sevd.config
    has checked it) → ("unix", path) or ("tcp", (host, port))."""
    kind, _, rest = listen.partition(":")
    if kind == "unix":
        return "unix", str(runtime_dir / rest) if not os.path.isabs(rest) else rest
    host, _, port = rest.rpartition(":")
    return "tcp", (host.removeprefix("[").removesuffix("]"), int(port))


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(obj).encode(), status=status,
                        content_type="application/json")


def _error(status: int, detail: str) -> web.Response:
    from http import HTTPStatus

    return _json({"status": status, "error": HTTPStatus(status).phrase, "detail": detail},
                 status)


class HttpServer:
    """The aiohttp application and its listener, bound to one `App`."""

    def __init__(self, app: App, *, sessions: Callable[[], dict[str, int]] = dict,
                 problems: Callable[[], list[str]] = list) -> None:
        self.app = app
        self.sessions = sessions
        self.problems = problems
        self._streams: dict[int, _Stream] = {}
        self._recent: collections.deque[tuple[int, str | None, bytes]] = collections.deque(
            maxlen=RECENT_EVENTS)
        self._seq = 0
        self._guests_body: bytes | None = None
        self._guests_at = 0.0
        sev_states = list(app.schema.documents["sev.json"]["$defs"]["SevState"]["enum"])
        self.metrics = Metrics(app, sev_states, self.sessions, lambda: len(self._streams))
        self._openapi: bytes | None = None
        self._static = {name: (resources.files("sevd.transports") / "http_static" / name)
                        .read_bytes() for name in ("status.css", "status.js")}
        self.web = self._build()
        self.runner: web.AppRunner | None = None
        self.address = ""
        self._unix_path: str | None = None
        self._tcp = False
        self._attached = False
        self.stopping = False

    # -- wiring -----------------------------------------------------------------------------

    def attach(self) -> None:
        """Listen to the App's events and time its commands (until the daemon stops)."""
        if not self._attached:
            self.app.listeners.append(self._on_event)
            self.app.wrap_handlers(self.metrics.timed)
            self._attached = True

    def _build(self) -> web.Application:
        w = web.Application(middlewares=[self._middleware])
        r = w.router
        r.add_get("/", self.page)
        r.add_get("/static/{file}", self.static)
        r.add_get("/metrics", self.metrics_handler)
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        r.add_get("/api/v1/host", self.host)
        r.add_get("/api/v1/guests", self.guests)
        r.add_get("/api/v1/guests/{name}", self.guest)
        r.add_get("/api/v1/guests/{name}/memory", self.memory)
        r.add_get("/api/v1/events", self.events)
        r.add_get("/api/v1/openapi.json", self.openapi_handler)
        return w

    async def start(self, listen: str, runtime_dir: Path, *, socket_mode: int = 0o660,
                    backlog: int = 128) -> str:
        """Bind and serve; returns the address (`unix:PATH` or `http://HOST:PORT`)."""
        kind, where = parse_listen(listen, runtime_dir)
        try:
            if kind == "unix":
                assert isinstance(where, str)
                sock = bind_unix(where, socket_mode, backlog)
                self._unix_path = where
                self.address = f"unix:{where}"
            else:
                assert isinstance(where, tuple)
                host, port = where
                family = socket.AF_INET6 if ":" in host else socket.AF_INET
                if host == "localhost":
                    host = "127.0.0.1"
                sock = socket.create_server((host, port), family=family, backlog=backlog)
                sock.setblocking(False)
                self._tcp = True
                bound = sock.getsockname()
                shown = f"[{bound[0]}]" if family == socket.AF_INET6 else bound[0]
                self.address = f"http://{shown}:{bound[1]}"
        except Exception as e:
            raise ListenError(f"cannot listen for HTTP on {listen}: {e}") from None
        self.attach()
        # No access log: Prometheus scrapes every few seconds and journald should not carry
        # a line for each; errors are logged by the middleware.
        self.runner = web.AppRunner(self.web, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.SockSite(self.runner, sock, shutdown_timeout=2.0, backlog=backlog)
        await site.start()
        log.info("HTTP (read-only) on %s", self.address)
        return self.address

    async def close(self) -> None:
        """End event streams, stop listening, remove the socket file."""
        self.stopping = True
        for stream in list(self._streams.values()):
            stream.queue.put_nowait(None)
        if self._attached:
            with contextlib.suppress(ValueError):
                self.app.listeners.remove(self._on_event)
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self._unix_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._unix_path)
            self._unix_path = None

    # -- events -----------------------------------------------------------------------------

    def _on_event(self, guest_name: str | None, msg: dict[str, Any]) -> None:
        """App listener: runs inside `App.emit`, on the QMP path, so it only encodes once and
        queues; the stream handlers write."""
        self._seq += 1
        self._guests_body = None  # something changed: the guest list is rebuilt when asked
        view = event_view(self._seq, guest_name, msg)
        line = f"id: {self._seq}\ndata: {json.dumps(view)}\n\n".encode()
        guest = view["guest"]
        self._recent.append((self._seq, guest, line))
        for key, stream in list(self._streams.items()):
            if stream.guest is not None and stream.guest != guest:
                continue
            q = stream.queue
            if q.qsize() >= STREAM_BACKLOG:
                # A client that does not read: end its stream (it may reconnect with
                # Last-Event-ID) rather than hold an unbounded backlog.
                while not q.empty():
                    q.get_nowait()
                q.put_nowait(None)
                del self._streams[key]
                log.warning("event stream client too slow: stream ended after %d unread "
                            "events", STREAM_BACKLOG)
                continue
            q.put_nowait(line)

    async def events(self, request: web.Request) -> web.StreamResponse:
        guest = request.query.get("guest") or None
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "X-Accel-Buffering": "no",
            **_SECURITY_HEADERS})
        await resp.prepare(request)
        stream = _Stream(guest)
        self._streams[id(stream)] = stream
        try:
            await resp.write(b"retry: 2000\n\n")
            last = request.headers.get("Last-Event-ID", "")
            if last.isdigit():
                for seq, g, line in list(self._recent):
                    if seq > int(last) and (guest is None or g == guest):
                        await resp.write(line)
            while not self.stopping:
                try:
                    item = await asyncio.wait_for(stream.queue.get(), KEEPALIVE)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
                    continue
                if item is None:
                    break
                await resp.write(item)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the client went away
        finally:
            self._streams.pop(id(stream), None)
        return resp

    # -- middleware -------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.resource
        label = route.canonical if route is not None else "unmatched"
        try:
            if request.method not in READ_METHODS:
                resp: web.StreamResponse = _error(
                    405, f"{request.method} is not allowed: sevd's HTTP side is read-only; "
                    "change state through the QMP sockets")
                resp.headers["Allow"] = "GET, HEAD"
            elif self._tcp and not self._loopback_host(request.host):
                resp = _error(403, f"Host '{request.host}' is not a loopback name "
                              "(refused: DNS rebinding protection)")
            else:
                resp = await handler(request)
        except web.HTTPException as e:
            resp = _error(e.status, e.reason if e.status != 404 else
                          f"No such resource: {request.path}")
            if e.status == 405:
                resp.headers["Allow"] = "GET, HEAD"
        except Exception:
            log.exception("HTTP %s %s failed", request.method, request.path)
            resp = _error(500, "internal error (see the daemon's log)")
        if not resp.prepared:
            for k, v in _SECURITY_HEADERS.items():
                resp.headers.setdefault(k, v)
        self.metrics.requests.labels(label, str(resp.status)).inc()
        return resp

    @staticmethod
    def _loopback_host(host: str) -> bool:
        """Whether a Host header names this machine's loopback interface."""
        from yarl import URL

        try:
            name = URL(f"http://{host}/").host or ""
        except ValueError:
            return False
        if name.lower() == "localhost":
            return True
        try:
            return ipaddress.ip_address(name.strip("[]")).is_loopback
        except ValueError:
            return False  # a DNS name other than localhost, e.g. 127.0.0.1.attacker.example

    # -- handlers ---------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.StreamResponse:
        body = render(self.app, self.sessions())
        resp = web.Response(text=body, content_type="text/html", charset="utf-8")
        resp.headers["Content-Security-Policy"] = _PAGE_CSP
        return resp

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["file"]
        data = self._static.get(name)
        if data is None:
            raise web.HTTPNotFound()
        ctype = "text/css" if name.endswith(".css") else "text/javascript"
        return web.Response(body=data, content_type=ctype, charset="utf-8")

    async def metrics_handler(self, request: web.Request) -> web.StreamResponse:
        # Content negotiation as prometheus-client's own server does: the classic text
        # format (0.0.4) unless the scraper asks for OpenMetrics.
        encoder, ctype = choose_encoder(request.headers.get("Accept", ""))
        resp = web.Response(body=encoder(self.metrics.registry))
        resp.headers["Content-Type"] = ctype
        return resp

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return _json({"status": "ok", "problems": []})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        problems = list(self.problems())
        if self.stopping:
            problems.append("stopping")
        if problems:
            return _json({"status": "not-ready", "problems": problems}, 503)
        return _json({"status": "ok", "problems": []})

    async def host(self, request: web.Request) -> web.StreamResponse:
        try:
            return _json(host_view(self.app, self.sessions()))
        except QmpError as e:  # the firmware refused, as a QMP client would be told
            return _error(503, e.desc)

    async def guests(self, request: web.Request) -> web.StreamResponse:
        # Dashboards poll this with hundreds of guests: the body is cached until the next
        # event (every run-state, SEV-state, add and remove emits one) or for GUESTS_TTL.
        now = asyncio.get_running_loop().time()
        if self._guests_body is None or now - self._guests_at > GUESTS_TTL:
            self._guests_body = json.dumps(guests_view(self.app)).encode()
            self._guests_at = now
        return web.Response(body=self._guests_body, content_type="application/json")

    async def guest(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        slot = self.app.slots.get(name)
        if slot is None:
            return _error(404, f"Guest '{name}' not found")
        return _json(guest_view(self.app, slot))

    async def memory(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in self.app.slots:
            return _error(404, f"Guest '{name}' not found")
        return _json(memory_view(self.app, name))

    async def openapi_handler(self, request: web.Request) -> web.StreamResponse:
        if self._openapi is None:
            self._openapi = json.dumps(openapi(self.app.schema)).encode()
        return web.Response(body=self._openapi, content_type="application/json")
