"""Command handlers by scope, and the dispatcher a session calls.

Each family module (`sevd/commands/<family>.py`) registers its handlers with `@command`;
`Dispatcher` looks a name up in its scope's table, checks OOB and the arguments against the
schema (QEMU's texts), runs the handler and encodes its result. This is the single place
where exceptions become QMP errors: `QmpError` as is, `DomainError` as GenericError with its
text, anything else as GenericError with a neutral text (the traceback goes to the log,
never on the wire).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sevd.commands.argcheck import Check, compile_check
from sevd.domain.errors import DomainError
from sevd.protocol.errors import COMMAND_NOT_FOUND, QmpError
from sevd.protocol.jsonwrite import encode_value

if TYPE_CHECKING:
    from sevd.commands.app import App
    from sevd.commands.schema import CommandSchema
    from sevd.domain.guest import Guest
    from sevd.protocol.session import QmpSession

log = logging.getLogger("sevd.commands")

HOST = "host"
GUEST = "guest"
FAMILIES = ("core", "runstate", "machine", "guests", "hmp", "sev", "memory", "qom")


@dataclass(slots=True)
class Ctx:
    """What a handler sees: the calling session, the application, and its guest (if any)."""

    session: QmpSession | None
    app: App
    guest: Guest | None
    cpu: int = 0  # HMP's current vCPU (human-monitor-command's cpu-index)

    @property
    def the_guest(self) -> Guest:
        assert self.guest is not None, "guest-scope command on a host socket"
        return self.guest


Handler = Callable[[Ctx, dict[str, Any]], Any]
_HANDLERS: dict[tuple[str, str], Handler] = {}


def command(name: str, *scopes: str) -> Callable[[Handler], Handler]:
    """Register a handler for `name` in the given scopes (default: both)."""

    def register(fn: Handler) -> Handler:
        for scope in scopes or (HOST, GUEST):
            if (scope, name) in _HANDLERS:
                raise RuntimeError(f"two handlers for {name} in scope {scope}")
            _HANDLERS[(scope, name)] = fn
        return fn

    return register


def handlers() -> dict[tuple[str, str], Handler]:
    """Every registered handler, after importing every family module."""
    for family in FAMILIES:
        importlib.import_module(f"sevd.commands.{family}")
    return _HANDLERS


_PLAIN = frozenset({dict, list, str, int, bool, float, type(None)})


class Dispatcher:
    """The commands of one scope instance (the control socket, or one guest's socket)."""

    def __init__(self, app: App, scope: str, guest: Guest | None) -> None:
        self.app = app
        self.scope = scope
        self.guest = guest
        self.table: dict[str, tuple[CommandSchema, Handler]] = app.tables[scope]
        self._checks: dict[str, Check | None] = {}  # fast argument checks, compiled lazily

    def dispatch(self, session: QmpSession | None, name: str, args: dict[str, Any] | None,
                 oob: bool) -> str | Awaitable[str]:
        entry = self.table.get(name)
        if entry is None:
            raise QmpError(f"The command {name} has not been found", COMMAND_NOT_FOUND)
        cmd, handler = entry
        if oob and not cmd.allow_oob:
            raise QmpError(f"The command {name} does not support OOB")
        if args is None:
            args = {}
        # Fast path: a command without arguments called without arguments needs no check.
        # Otherwise the compiled check vouches for what it can (sevd.commands.argcheck) and
        # the jsonschema validator decides the rest.
        if args or cmd.takes_arguments:
            try:
                check = self._checks[name]
            except KeyError:
                check = self._checks[name] = compile_check(
                    self.app.schema.registry, f"{cmd.base}#/x-commands/{name}/arguments")
            if (check is None or not check(args)) and not cmd.validator.is_valid(args):
                raise QmpError(self._explain(cmd, args))
        stats = self.app.stats
        stats.commands[name] = stats.commands.get(name, 0) + 1
        try:
            result = handler(Ctx(session, self.app, self.guest), args)
            # Handlers return plain values but for a few coroutines; a type test first spares
            # the ABC check of inspect.isawaitable() on every reply.
            if type(result) not in _PLAIN and inspect.isawaitable(result):
                return self._finish(cmd, result)
            return self._encode(cmd, result)
        except QmpError:
            stats.count_error(name)
            raise
        except DomainError as e:
            stats.count_error(name)
            raise QmpError(str(e)) from None
        except Exception as e:
            stats.count_error(name)
            log.exception("command %s failed", name)
            raise QmpError(f"Internal error in {name}: {type(e).__name__}") from None

    def _explain(self, cmd: CommandSchema, args: dict[str, Any]) -> str:
        # Computing QEMU's text is code too: if it fails, the client still gets an error
        # reply and the session goes on (an exception escaping a session's data_received
        # makes asyncio drop the connection).
        try:
            return self.app.schema.explain(cmd, args)
        except Exception as e:
            self.app.stats.count_error(cmd.name)
            log.exception("explaining the arguments of %s failed", cmd.name)
            return f"Internal error in {cmd.name}: {type(e).__name__} (checking its arguments)"

    async def _finish(self, cmd: CommandSchema, result: Awaitable[Any]) -> str:
        try:
            return self._encode(cmd, await result)
        except QmpError:
            self.app.stats.count_error(cmd.name)
            raise
        except DomainError as e:
            self.app.stats.count_error(cmd.name)
            raise QmpError(str(e)) from None
        except Exception as e:
            self.app.stats.count_error(cmd.name)
            log.exception("command %s failed", cmd.name)
            raise QmpError(f"Internal error in {cmd.name}: {type(e).__name__}") from None

    def _encode(self, cmd: CommandSchema, result: Any) -> str:
        if self.app.validate_returns:
            errors = [e.message for e in cmd.returns_validator.iter_errors(result)]
            if errors:
                log.error("reply of %s does not match its schema: %s", cmd.name, errors[0])
                raise QmpError(f"Reply of {cmd.name} does not match its schema: {errors[0]}")
        return encode_value(result)
