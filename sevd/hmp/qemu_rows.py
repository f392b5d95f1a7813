"""QEMU's own rows of ``hmp-commands.hx``/``hmp-commands-info.hx`` for the commands sevd
offers, so that every table built on them says exactly what QEMU says in ``help`` and in
its error messages (which quote the row's name, aliases included: ``print|p: ...``).

``args_type`` comes from the .hx sources; ``params`` and ``help`` are the texts a real
QEMU 7.2 printed for ``help`` (unchanged in 9.2 for these rows). A row is data only:
:func:`command` pairs it with a handler.

This module must not import transports, the QMP protocol layer or the domain.
"""

from __future__ import annotations

from sevd.hmp.table import Handler, HmpCommand

__all__ = ["COMMANDS", "INFO_COMMANDS", "command", "info_command"]

#: name (with aliases) -> (args_type, params, help), top-level table.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "help|?": ("name:S?", "[cmd]", "show the help"),
    "info": ("item:s?", "[subcommand]", "show various information about the system state"),
    "quit|q": ("", "", "quit the emulator"),
    "stop|s": ("", "", "stop emulation"),
    "cont|c": ("", "", "resume emulation"),
    "system_reset": ("", "", "reset the system"),
    "system_powerdown": ("", "", "send system power down event"),
    "system_wakeup": ("", "", "wakeup guest from suspend"),
    "nmi": ("", "", "inject an NMI"),
    "cpu": ("index:i", "index", "set the default CPU"),
    "x": ("fmt:/,addr:l", "/fmt addr", "virtual memory dump starting at 'addr'"),
    "xp": ("fmt:/,addr:l", "/fmt addr", "physical memory dump starting at 'addr'"),
    "print|p": (
        "fmt:/,val:l",
        "/fmt expr",
        "print expression value (use $reg for CPU register access)",
    ),
    "memsave": (
        "val:l,size:i,filename:s",
        "addr size file",
        "save to disk virtual memory dump starting at 'addr' of size 'size'",
    ),
    "pmemsave": (
        "val:l,size:i,filename:s",
        "addr size file",
        "save to disk physical memory dump starting at 'addr' of size 'size'",
    ),
    "sum": ("start:i,size:i", "addr size", "compute the checksum of a memory region"),
    "gva2gpa": (
        "addr:l",
        "addr",
        "print the guest physical address corresponding to a guest virtual address",
    ),
    "gpa2hva": (
        "addr:l",
        "addr",
        "print the host virtual address corresponding to a guest physical address",
    ),
    "gpa2hpa": (
        "addr:l",
        "addr",
        "print the host physical address corresponding to a guest physical address",
    ),
}

#: name -> (args_type, params, help), the ``info`` sub-table.
INFO_COMMANDS: dict[str, tuple[str, str, str]] = {
    "version": ("", "", "show the version of QEMU"),
    "status": ("", "", "show the current VM status (running|paused)"),
    "kvm": ("", "", "show KVM information"),
    "sev": ("", "", "show SEV information"),
    "name": ("", "", "show the current VM name"),
    "uuid": ("", "", "show the current VM UUID"),
    "cpus": ("", "", "show infos for each CPU"),
    "registers": (
        "cpustate_all:-a,vcpu:i?",
        "[-a|vcpu]",
        "show the cpu registers (-a: show register info for all cpus; vcpu: specific vCPU"
        " to query; show the current CPU's registers if no argument is specified)",
    ),
    "mem": ("", "", "show the active virtual memory mappings"),
    "tlb": ("", "", "show virtual to physical memory mappings"),
    "migrate": ("", "", "show migration status"),
    "dump": ("", "", "Display the latest dump status"),
    "roms": ("", "", "show roms"),
}


def command(
    name: str, handler: Handler | None, subcommands: list[HmpCommand] | None = None
) -> HmpCommand:
    """The QEMU row ``name`` (a key of :data:`COMMANDS`, aliases included) with a handler."""
    args_type, params, help_ = COMMANDS[name]
    return HmpCommand(name, args_type, params, help_, handler, subcommands)


def info_command(name: str, handler: Handler | None) -> HmpCommand:
    """The QEMU row ``info <name>`` (a key of :data:`INFO_COMMANDS`) with a handler."""
    args_type, params, help_ = INFO_COMMANDS[name]
    return HmpCommand(name, args_type, params, help_, handler)
