"""HMP, QEMU's human monitor, as a pure text front end over sevd's operations.

* :mod:`sevd.hmp.parser` — command names, quoting, ``/fmt`` and ``args_type`` parsing with
  QEMU's error texts (port of ``monitor/hmp.c``);
* :mod:`sevd.hmp.expr` — the expression evaluator (``0x100+4``, ``$eip``) it uses;
* :mod:`sevd.hmp.dump` — ``x``/``xp``/``print``/``gva2gpa``/``info mem``/``info tlb`` text;
* :mod:`sevd.hmp.table` — the command table and dispatcher (``help``, ``info``,
  ``unknown command``, ``Try "help ..."``, ``\\r\\n`` line ends);
* :mod:`sevd.hmp.qemu_rows` — QEMU's own rows (args_type, params, help) for sevd's commands.

Synchronous and side-effect free: nothing here imports transports or the QMP protocol.
"""

from sevd.hmp.dump import memory_dump
from sevd.hmp.parser import DumpDefaults, HmpParseError
from sevd.hmp.table import Handler, HmpCommand, HmpError, HmpMonitor

__all__ = [
    "DumpDefaults",
    "Handler",
    "HmpCommand",
    "HmpError",
    "HmpMonitor",
    "HmpParseError",
    "memory_dump",
]
