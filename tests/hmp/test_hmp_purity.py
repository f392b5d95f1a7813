"""The HMP framework stays pure: importing it loads no transport, protocol, command or
domain module, and nothing that does I/O (DESIGN.md §2, the rooms table)."""

from __future__ import annotations

import json
import subprocess
import sys

MODULES = ["sevd.hmp", "sevd.hmp.expr", "sevd.hmp.parser", "sevd.hmp.dump",
           "sevd.hmp.table", "sevd.hmp.qemu_rows"]
FORBIDDEN = ("sevd.transports", "sevd.protocol", "sevd.commands", "sevd.domain", "asyncio",
             "socket", "aiohttp", "json")


def test_framework_imports_nothing_it_must_not() -> None:
    code = (
        "import importlib, sys\n"
        "before = set(sys.modules)\n"
        f"for m in {MODULES!r}: importlib.import_module(m)\n"
        "loaded = sorted(set(sys.modules) - before)\n"
        "import json\n"
        "print(json.dumps(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    loaded = json.loads(out)
    assert "sevd.hmp.parser" in loaded  # the probe really imported something
    bad = [m for m in loaded if m.startswith(FORBIDDEN)]
    assert bad == []
