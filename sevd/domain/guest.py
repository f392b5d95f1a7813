"""A simulated guest's life as QEMU started with `-S` lives it: run states and their events.

Pure domain code (DESIGN §2): no QMP names beyond QEMU's own run-state and event names,
which are the values of the enums below; events leave through the `on_event` callback and
the commands layer puts them on the wire.
"""

from __future__ import annotations

import enum
import re
import uuid as uuidlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sevd.domain.boot import GuestOS, Workload
from sevd.domain.errors import DomainError
from sevd.domain.machine import Machine
from sevd.domain.sev import LaunchInputs, SevGuest, SevSpec

MIB = 1 << 20
DEFAULT_MEMORY = 256 * MIB
MAX_NAME = 64
# QEMU's id rule (util/id.c id_wellformed): a letter first, then letters, digits, '-', '.',
# '_'; sevd also allows a leading digit (common in generated names) but keeps the length
# short because the name becomes a socket file name (107-byte limit).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")


class RunState(enum.StrEnum):
    """QEMU's RunState values that a simulated guest can be in."""

    PRELAUNCH = "prelaunch"
    RUNNING = "running"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"


class Event(enum.StrEnum):
    """QEMU's run-state events."""

    STOP = "STOP"
    RESUME = "RESUME"
    RESET = "RESET"
    POWERDOWN = "POWERDOWN"
    SHUTDOWN = "SHUTDOWN"


EventSink = Callable[["Guest", str, "dict[str, Any] | None"], None]


def check_name(name: str) -> None:
    if not _NAME.match(name):
        raise DomainError(
            f"Invalid guest name '{name}': use letters, digits, '-', '_' and '.', "
            f"at most {MAX_NAME} characters, starting with a letter or digit")


@dataclass
class GuestConfig:
    """What guest-add was given (the non-SEV keys of DESIGN §4)."""

    name: str
    memory: int = DEFAULT_MEMORY
    cpus: int = 1
    uuid: str = ""
    start: bool = False
    sev: SevSpec | None = None
    firmware: bytes = b""
    kernel: bytes | None = None
    initrd: bytes | None = None
    append: str | None = None
    workload: Workload = field(default_factory=Workload)
    debug: bool = True  # the 2016 RFC's security-policy object: may the monitor debug?
    persistent: bool = False

    def __post_init__(self) -> None:
        check_name(self.name)
        if self.memory <= 0 or self.memory % 4096:
            raise DomainError(f"Invalid memory size {self.memory}: "
                              "it must be a positive multiple of 4096 bytes")
        if self.memory > 1 << 48:
            raise DomainError(f"Invalid memory size {self.memory}: at most 256 TiB")
        if not 1 <= self.cpus <= 288:
            raise DomainError(f"Invalid number of CPUs {self.cpus}: it must be 1 to 288")
        if self.uuid:
            try:
                self.uuid = str(uuidlib.UUID(self.uuid))
            except ValueError:
                raise DomainError(f"Invalid UUID '{self.uuid}'") from None
        else:
            self.uuid = str(uuidlib.uuid4())


@dataclass(eq=False)
class Guest:
    """One guest instance: configuration, run state, hardware, SEV context, software."""

    config: GuestConfig
    on_event: EventSink = field(repr=False, default=lambda g, e, d: None)
    state: RunState = RunState.PRELAUNCH
    ever_ran: bool = False
    resets: int = 0
    machine: Machine = field(init=False, repr=False)
    sev: SevGuest | None = field(default=None, repr=False)
    os: GuestOS = field(init=False, repr=False)
    cbitpos: int = 51
    _needs_boot: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        self.machine = Machine(self.config.memory, self.config.cpus, len(self.config.firmware))

    def attach(self, sev: SevGuest | None, cbitpos: int) -> None:
        """Give the guest its SEV context (None: a plain guest) and its software."""
        self.sev = sev
        self.cbitpos = cbitpos
        self.os = GuestOS(self.machine, sev, cbitpos, self.config.workload)

    def launch(self) -> None:
        """Machine init: the SEV launch up to LAUNCH_MEASURE, or plain firmware loading."""
        cfg = self.config
        if self.sev is not None:
            self.sev.launch(LaunchInputs(cfg.firmware, cfg.kernel, cfg.initrd, cfg.append))
        elif cfg.firmware:
            self.machine.store.write(self.machine.firmware_base, cfg.firmware)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        return self.state is RunState.RUNNING

    def _emit(self, event: Event, data: dict[str, Any] | None = None) -> None:
        self.on_event(self, event.value, data)

    def _first_run(self) -> None:
        """The first transition to running: LAUNCH_FINISH, then the firmware boots."""
        if self.sev is not None:
            self.sev.finish()
        self.os.boot()

    def start(self) -> None:
        """Machine init done without -S: run straight away (no RESUME, as QEMU at boot)."""
        self._first_run()
        self.ever_ran = True
        self.state = RunState.RUNNING

    def tick(self) -> None:
        """One step of the guest's workload (called periodically while it runs)."""
        if self.state is RunState.RUNNING:
            self.os.tick()

    def stop(self) -> None:
        # vm_stop(): no event when already stopped.
        if self.state is RunState.RUNNING:
            self.state = RunState.PAUSED
            self._emit(Event.STOP)

    def cont(self) -> None:
        if self.state is RunState.SHUTDOWN:
            raise DomainError("Resetting the Virtual Machine is required")
        if self.state is RunState.RUNNING:
            return
        if not self.ever_ran:
            self._first_run()
            self.ever_ran = True
        elif self._needs_boot:
            self.os.boot()
        self._needs_boot = False
        self.state = RunState.RUNNING
        self._emit(Event.RESUME)

    def system_reset(self) -> None:
        self.resets += 1
        self._emit(Event.RESET, {"guest": False, "reason": "host-qmp-system-reset"})
        # The vCPUs reset; the firmware boots again when they next run. Encrypted memory and
        # the SEV state stay as they are (DESIGN §4, step 5).
        for v in self.machine.vcpus:
            v.reset()
        if self.ever_ran:
            if self.state is RunState.RUNNING:
                self.os.boot()
            else:
                self._needs_boot = True
        # main_loop_should_exit(): after a reset, anything but running becomes prelaunch.
        if self.state is not RunState.RUNNING:
            self.state = RunState.PRELAUNCH

    def system_powerdown(self) -> None:
        self._emit(Event.POWERDOWN)
        if self.state is RunState.RUNNING:
            # The guest's ACPI handler powers off; with -no-shutdown QEMU then stops the VM.
            self._emit(Event.SHUTDOWN, {"guest": True, "reason": "guest-shutdown"})
            self.state = RunState.SHUTDOWN
            self._emit(Event.STOP)

    def quit(self) -> None:
        self._emit(Event.SHUTDOWN, {"guest": False, "reason": "host-qmp-quit"})
        self.state = RunState.SHUTDOWN

    def destroy(self) -> None:
        """Release what the guest holds (SEV: DEACTIVATE, DECOMMISSION, zero keys)."""
        # The instance is gone: nothing runs any more (the workload must not touch memory
        # whose firmware handle no longer exists).
        self.state = RunState.SHUTDOWN
        if self.sev is not None:
            self.sev.destroy()
