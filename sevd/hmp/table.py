"""The HMP command table and dispatcher: one command line in, QEMU's monitor text out.

Ports ``handle_hmp_command``/``monitor_parse_command``/``help_cmd`` of QEMU's
``monitor/hmp.c``: command lookup with ``|`` aliases and sub-tables (``info``), the
``unknown command: '...'`` texts, the ``Try "help ..." for more information`` line after an
argument error, ``help``/``?`` in QEMU's layout, and monitor_puts()' conversion of every
``\\n`` to ``\\r\\n``. Handlers are plain callables ``handler(ctx, args) -> str | None``;
``ctx`` is whatever the caller passes to :meth:`HmpMonitor.run` (the daemon's command
context), opaque here.

This module must not import transports or the QMP protocol layer; it is synchronous, and
a handler that needs I/O gets it through ``ctx``. Exceptions other than :class:`HmpError`
raised by a handler propagate to the caller, where ``commands/`` turns them into QMP
errors (the single place that does so).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sevd.hmp.parser import (
    DumpDefaults,
    HmpParseError,
    RegisterLookup,
    get_command_name,
    is_space,
    parse_arguments,
    parse_cmdline,
)

__all__ = ["Handler", "HmpCommand", "HmpError", "HmpMonitor"]

#: ``handler(ctx, args)`` -> the text it prints (``\n`` line ends) or None.
Handler = Callable[[Any, dict[str, Any]], "str | None"]


class HmpError(Exception):
    """Raised by a handler to print ``text`` instead of a result.

    With ``try_help`` the ``Try "help <cmd>" for more information`` line follows, as after
    an argument error; without it (the default) the text stands alone, as QEMU's handlers
    print their own errors. :meth:`qmp` formats an error the way hmp_handle_error() prints
    an ``Error *`` (``Error: <desc>``).
    """

    def __init__(self, text: str, *, try_help: bool = False) -> None:
        super().__init__(text)
        self.text = text
        self.try_help = try_help

    @classmethod
    def qmp(cls, desc: str) -> HmpError:
        """hmp_handle_error(): ``Error: <desc>``, as HMP shows a failed QMP operation."""
        return cls(f"Error: {desc}")


@dataclass
class HmpCommand:
    """One row of ``hmp-commands.hx``: ``name`` (aliases joined by ``|``, e.g.
    ``help|?``), ``args_type``, ``params`` and ``help`` exactly as QEMU declares them.

    ``handler`` None means: for a row with ``subcommands``, list them (as ``info`` alone
    does); for ``help``, the monitor's own help; otherwise QEMU's
    ``Command "..." is not available.``.
    """

    name: str
    args_type: str
    params: str
    help: str
    handler: Handler | None
    subcommands: list[HmpCommand] | None = None
    aliases: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.aliases = tuple(self.name.split("|"))

    def matches(self, name: str) -> bool:
        """hmp_compare_cmd(): ``name`` equals one of the ``|``-separated aliases."""
        return name in self.aliases


class _Table:
    """A command table sorted like QEMU's (by name, strcmp order) with alias lookup."""

    __slots__ = ("by_alias", "commands", "subtables")

    def __init__(self, commands: Iterable[HmpCommand]) -> None:
        # sortcmdlist() sorts hmp_cmds and hmp_info_cmds by name at start-up.
        self.commands = sorted(commands, key=lambda c: c.name.encode())
        self.by_alias: dict[str, HmpCommand] = {}
        self.subtables: dict[int, _Table] = {}
        for cmd in self.commands:
            for alias in cmd.aliases:
                # search_dispatch_table(): the first row in table order wins.
                self.by_alias.setdefault(alias, cmd)
            if cmd.subcommands is not None:
                self.subtables[id(cmd)] = _Table(cmd.subcommands)

    def find(self, name: str) -> HmpCommand | None:
        return self.by_alias.get(name)

    def sub(self, cmd: HmpCommand) -> _Table | None:
        return self.subtables.get(id(cmd))


HELP_COMMAND = HmpCommand("help|?", "name:S?", "[cmd]", "show the help", None)


class HmpMonitor:
    """A command table plus QEMU's dispatcher. One instance can serve every session.

    ``defaults(ctx)`` returns the sticky ``/fmt`` defaults to use for that context (one
    object per guest); without it the monitor keeps a single set of its own.
    ``registers(ctx, name)`` gives ``$name`` for expressions (None or LookupError for
    ``unknown register``); without it every register is unknown, as with no CPU.
    A ``help|?`` row is added when the table has none.
    """

    def __init__(
        self,
        commands: list[HmpCommand],
        *,
        defaults: Callable[[Any], DumpDefaults] | None = None,
        registers: Callable[[Any, str], int | None] | None = None,
    ) -> None:
        rows = list(commands)
        if not any(c.matches("help") for c in rows):
            rows.append(HELP_COMMAND)
        self._table = _Table(rows)
        self._own_defaults = DumpDefaults()
        self._defaults = defaults
        self._registers = registers

    @property
    def commands(self) -> list[HmpCommand]:
        """The top-level rows in QEMU's (sorted) order."""
        return list(self._table.commands)

    # ----------------------------------------------------------------- running a line

    def run(self, line: str, ctx: Any = None) -> str:
        """Execute one command line; return what QEMU's monitor would print, with
        ``\\r\\n`` line ends (``""`` when nothing is printed)."""
        text = self._execute(line, ctx)
        # monitor_puts(): every '\n' goes out as "\r\n" (an existing '\r' is kept).
        return text.replace("\n", "\r\n")

    def parse_only(self, line: str, ctx: Any = None) -> tuple[HmpCommand, dict[str, Any]]:
        """Look up and parse ``line`` without running it.

        Raises :class:`HmpError` carrying the complete text QEMU would print (with ``\\n``
        line ends) when the line is blank, unknown or has bad arguments. Parsing ``/fmt``
        updates the sticky defaults, as in QEMU.
        """
        found = self._lookup(line)
        if isinstance(found, str):
            raise HmpError(found)
        cmd, _path, s, pos = found
        try:
            return cmd, self._parse(cmd, s, pos, ctx)
        except HmpParseError as e:
            raise HmpError(self._arg_error(e, s, pos)) from None

    def _execute(self, line: str, ctx: Any) -> str:
        found = self._lookup(line)
        if isinstance(found, str):
            return found
        cmd, path, s, pos = found
        handler = cmd.handler
        if handler is None:
            if cmd.matches("help"):
                handler = self._help_handler
            elif cmd.subcommands is not None:
                # hmp_info_help(): "info" alone lists the info commands.
                words = " ".join(c.aliases[0] for c in path)
                return self.help_text(words)
            else:
                return f'Command "{s[:pos]}" is not available.\n'
        try:
            args = self._parse(cmd, s, pos, ctx)
        except HmpParseError as e:
            return self._arg_error(e, s, pos)
        try:
            out = handler(ctx, args)
        except HmpError as e:
            text = e.text if not e.text or e.text.endswith("\n") else e.text + "\n"
            return text + self._try_help(s, pos) if e.try_help else text
        return out or ""

    def _lookup(
        self, line: str
    ) -> str | tuple[HmpCommand, list[HmpCommand], str, int]:
        """monitor_parse_command(): the row for ``line``, or the text printed instead.

        Returns ``(cmd, path, s, pos)``: ``path`` the rows walked through (``info``,
        ``status``), ``s`` the line as QEMU's C string sees it, ``pos`` the index after
        the command name(s) and the spaces after them.
        """
        nul = line.find("\0")
        s = line if nul < 0 else line[:nul]
        table = self._table
        pos = 0
        path: list[HmpCommand] = []
        while True:
            got = get_command_name(s, pos)
            if got is None:
                # A blank line prints nothing. (A sub-table is only entered when more
                # text follows, so this only happens at the top.)
                return ""
            name, end = got
            cmd = table.find(name)
            if cmd is None:
                return f"unknown command: '{s[:end]}'\n"
            path.append(cmd)
            pos = end
            while pos < len(s) and is_space(s[pos]):
                pos += 1
            sub = table.sub(cmd)
            if sub is None or pos >= len(s):
                return cmd, path, s, pos
            table = sub

    def _parse(self, cmd: HmpCommand, s: str, pos: int, ctx: Any) -> dict[str, Any]:
        defaults = self._defaults(ctx) if self._defaults is not None else self._own_defaults
        registers: RegisterLookup | None = None
        if self._registers is not None:
            lookup = self._registers

            def registers(name: str) -> int | None:
                return lookup(ctx, name)

        return parse_arguments(
            cmd.name, cmd.args_type, s, pos, defaults=defaults, registers=registers
        )

    def _arg_error(self, e: HmpParseError, s: str, pos: int) -> str:
        # Some failures print nothing of their own (QEMU's printf goes to its stdout).
        return (e.text + "\n" if e.text else "") + self._try_help(s, pos)

    @staticmethod
    def _try_help(s: str, pos: int) -> str:
        """handle_hmp_command(): ``Try "help <the line up to the arguments>" ...``.

        QEMU prints the command line from its very start (leading spaces included) to the
        end of the command name(s), trailing spaces dropped: ``Try "help info  status"``.
        """
        end = pos
        while end > 0 and is_space(s[end - 1]):
            end -= 1
        return f'Try "help {s[:end]}" for more information\n'

    # ----------------------------------------------------------------- help

    def _help_handler(self, ctx: Any, args: dict[str, Any]) -> str:
        return self.help_text(args.get("name"))

    def help_text(self, name: str | None = None) -> str:
        """help_cmd(): the text of ``help [name]`` (``\\n`` line ends).

        Lists every command (``name params -- help``), or the row(s) the words of ``name``
        lead to through sub-tables, or ``unknown command: '<words so far>'``. Bad quoting
        or more than 16 words print nothing, as in QEMU. (QEMU's special case ``help log``
        is not reproduced: sevd has no ``log`` command.)
        """
        args: list[str] = []
        if name is not None:
            parsed = parse_cmdline(name)
            if parsed is None:
                return ""
            args = parsed
        out: list[str] = []
        self._help_dump(self._table, args, 0, out)
        return "".join(out)

    def _help_dump(self, table: _Table, args: list[str], index: int, out: list[str]) -> None:
        # help_cmd_dump(): words before ``index`` are printed as a prefix, as typed.
        prefix = "".join(a + " " for a in args[:index])
        if index >= len(args):
            for cmd in table.commands:
                out.append(f"{prefix}{cmd.name} {cmd.params} -- {cmd.help}\n")
            return
        found = table.find(args[index])
        if found is None:
            out.append("unknown command: '" + " ".join(args[: index + 1]) + "'\n")
            return
        sub = table.sub(found)
        if sub is not None:
            self._help_dump(sub, args, index + 1, out)
        else:
            out.append(f"{prefix}{found.name} {found.params} -- {found.help}\n")
