"""SEV firmware command identifiers, fault injection and per-command counters.

* :class:`Command`: the AMD command IDs (reference/sev-firmware.md §1, ASPFW
  ``sev_mcmd_id``); the names are what fault injection and metrics use.
* :class:`FaultInjector`: "the next N calls of command X (optionally for guest handle H)
  fail with status S" — armed, listed and cleared by the daemon; checked at the top of
  every command by :func:`firmware_command`.
* :class:`FirmwareStats`: plain counters (calls, failures by status, bytes through the
  memory cipher) for metrics.
* :func:`firmware_command`: the decorator every firmware command method carries. It counts
  the call, consults the fault injector, turns a guest-memory range error into
  INVALID_ADDRESS, names the command in the raised :class:`SevError`, and counts failures.

Domain code: pure and synchronous. Must not import anything from ``sevd`` outside
``sevd.domain.psp`` and ``sevd.formats``.
"""

from __future__ import annotations

import functools
import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from sevd.domain.psp.memory import MemoryRangeError
from sevd.domain.psp.status import SevError, SevStatus, status_name

__all__ = [
    "Command",
    "FaultInjector",
    "FaultRule",
    "FirmwareStats",
    "firmware_command",
]


class Command(IntEnum):
    """SEV (legacy) firmware command IDs."""

    INIT = 0x001
    SHUTDOWN = 0x002
    PLATFORM_RESET = 0x003
    PLATFORM_STATUS = 0x004
    PEK_GEN = 0x005
    PEK_CSR = 0x006
    PEK_CERT_IMPORT = 0x007
    PDH_CERT_EXPORT = 0x008
    PDH_GEN = 0x009
    DF_FLUSH = 0x00A
    DOWNLOAD_FIRMWARE = 0x00B
    GET_ID = 0x00C
    INIT_EX = 0x00D
    NOP = 0x00E
    DECOMMISSION = 0x020
    ACTIVATE = 0x021
    DEACTIVATE = 0x022
    GUEST_STATUS = 0x023
    COPY = 0x024
    ACTIVATE_EX = 0x025
    LAUNCH_START = 0x030
    LAUNCH_UPDATE_DATA = 0x031
    LAUNCH_UPDATE_VMSA = 0x032
    LAUNCH_MEASURE = 0x033
    LAUNCH_SECRET = 0x034
    LAUNCH_FINISH = 0x035
    ATTESTATION = 0x036
    SEND_START = 0x040
    SEND_UPDATE_DATA = 0x041
    SEND_UPDATE_VMSA = 0x042
    SEND_FINISH = 0x043
    SEND_CANCEL = 0x044
    RECEIVE_START = 0x050
    RECEIVE_UPDATE_DATA = 0x051
    RECEIVE_UPDATE_VMSA = 0x052
    RECEIVE_FINISH = 0x053
    DBG_DECRYPT = 0x060
    DBG_ENCRYPT = 0x061


@dataclass
class FaultRule:
    """One armed fault: the next ``remaining`` calls of ``command`` (for guest ``handle``,
    or any guest when None) fail with ``status``."""

    command: Command
    status: int
    remaining: int
    handle: int | None = None

    def matches(self, command: Command, handle: int | None) -> bool:
        return self.command is command and (self.handle is None or self.handle == handle)


class FaultInjector:
    """Armed faults, consumed in the order they were armed."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []

    def arm(
        self, command: Command | str, status: int, count: int = 1, handle: int | None = None
    ) -> FaultRule:
        """Make the next ``count`` calls of ``command`` fail with ``status``."""
        cmd = command if isinstance(command, Command) else Command[command.upper()]
        if status == SevStatus.SUCCESS or not 0 < status <= 0xFFFF:
            raise ValueError(f"a fault needs a failing status (1..0xffff), not {status}")
        if count < 1:
            raise ValueError(f"fault count must be at least 1, not {count}")
        rule = FaultRule(cmd, status, count, handle)
        self._rules.append(rule)
        return rule

    def rules(self) -> list[FaultRule]:
        """Copies of the armed rules."""
        return [FaultRule(r.command, r.status, r.remaining, r.handle) for r in self._rules]

    def clear(self, command: Command | str | None = None) -> int:
        """Disarm every rule (or those of ``command``); returns how many were removed."""
        if command is None:
            removed = len(self._rules)
            self._rules.clear()
            return removed
        cmd = command if isinstance(command, Command) else Command[command.upper()]
        kept = [r for r in self._rules if r.command is not cmd]
        removed = len(self._rules) - len(kept)
        self._rules = kept
        return removed

    def take(self, command: Command, handle: int | None) -> int | None:
        """The status of the first rule matching this call (consuming one use), or None."""
        for rule in self._rules:
            if rule.matches(command, handle):
                rule.remaining -= 1
                if rule.remaining == 0:
                    self._rules.remove(rule)
                return rule.status
        return None


@dataclass
class FirmwareStats:
    """Counters for metrics: cheap enough to update on every call."""

    calls: Counter[str] = field(default_factory=Counter)
    #: (command name, status name) -> failures
    failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    bytes_encrypted: int = 0
    bytes_decrypted: int = 0


class _CommandHost(Protocol):
    faults: FaultInjector
    stats: FirmwareStats


_Host = TypeVar("_Host", bound=_CommandHost)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def firmware_command(
    command: Command,
) -> Callable[[Callable[Concatenate[_Host, _P], _R]], Callable[Concatenate[_Host, _P], _R]]:
    """Mark a method as the implementation of SEV firmware ``command`` (see module doc)."""

    def decorate(fn: Callable[Concatenate[_Host, _P], _R]) -> Callable[Concatenate[_Host, _P], _R]:
        params = list(inspect.signature(fn).parameters)
        # Index of the guest handle among the positional arguments after self, if any.
        handle_at = params.index("handle") - 1 if "handle" in params else None

        def run(self: _Host, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
            self.stats.calls[command.name] += 1
            handle: object = kwargs.get("handle")
            if handle is None and handle_at is not None and handle_at < len(args):
                handle = args[handle_at]
            try:
                injected = self.faults.take(command, handle if isinstance(handle, int) else None)
                if injected is not None:
                    raise SevError(injected, command.name)
                try:
                    return fn(self, *args, **kwargs)
                except MemoryRangeError:
                    # Firmware copy_{from,to}_x86 on an address outside memory.
                    raise SevError(SevStatus.INVALID_ADDRESS, command.name) from None
            except SevError as err:
                if err.command is None:
                    err.command = command.name
                self.stats.failures[(command.name, status_name(err.status))] += 1
                raise

        functools.update_wrapper(run, fn)
        setattr(run, "sev_command", command)  # noqa: B010 - introspection for tests/docs
        return run

    return decorate
