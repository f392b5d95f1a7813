"""sevd.hmp.table on its own: lookup, help layout, handler errors, line ends."""

from __future__ import annotations

from typing import Any

import pytest

from sevd.hmp import DumpDefaults, HmpCommand, HmpError, HmpMonitor


def _row(name: str, args_type: str = "", params: str = "", help_: str = "h",
         handler: Any = None, subcommands: list[HmpCommand] | None = None) -> HmpCommand:
    return HmpCommand(name, args_type, params, help_, handler, subcommands)


def test_help_lists_commands_sorted_like_qemu() -> None:
    mon = HmpMonitor([
        _row("xp", "fmt:/,addr:l", "/fmt addr", "physical", lambda c, a: None),
        _row("cont|c", help_="resume emulation", handler=lambda c, a: None),
        _row("Zed", handler=lambda c, a: None),  # strcmp order: upper case first
        _row("info", "item:s?", "[subcommand]", "show info", None,
             [_row("version", help_="v", handler=lambda c, a: "1\n"),
              _row("status", help_="s", handler=lambda c, a: "ok\n")]),
    ])
    assert mon.run("help") == (
        "Zed  -- h\r\n"
        "cont|c  -- resume emulation\r\n"
        "help|? [cmd] -- show the help\r\n"
        "info [subcommand] -- show info\r\n"
        "xp /fmt addr -- physical\r\n"
    )
    assert mon.run("help info") == "info status  -- s\r\ninfo version  -- v\r\n"
    assert mon.run("info") == mon.run("help info")
    assert mon.run("?") == mon.run("help")
    assert mon.run("help c") == "cont|c  -- resume emulation\r\n"
    assert [c.name for c in mon.commands] == ["Zed", "cont|c", "help|?", "info", "xp"]


def test_help_row_of_the_caller_is_kept() -> None:
    mon = HmpMonitor([_row("help|?", "name:S?", "[cmd]", "mine", lambda c, a: "own\n")])
    assert mon.run("help") == "own\r\n"
    mon = HmpMonitor([_row("help|?", "name:S?", "[cmd]", "mine", None)])
    assert mon.run("help") == "help|? [cmd] -- mine\r\n"


def test_nested_subtables() -> None:
    leaf = _row("leaf", help_="deep", handler=lambda c, a: "leaf ran\n")
    mon = HmpMonitor([_row("a", "x:s?", "", "top", None, [_row("b", "", "", "mid", None,
                                                             [leaf])])])
    assert mon.run("a b leaf") == "leaf ran\r\n"
    assert mon.run("a b") == "a b leaf  -- deep\r\n"
    assert mon.run("help a b leaf") == "a b leaf  -- deep\r\n"
    assert mon.run("a b nope") == "unknown command: 'a b nope'\r\n"
    assert mon.run("help a b nope") == "unknown command: 'a b nope'\r\n"


def test_handler_output_and_line_ends() -> None:
    mon = HmpMonitor([
        _row("two", handler=lambda c, a: "one\ntwo\n"),
        _row("none", handler=lambda c, a: None),
        _row("empty", handler=lambda c, a: ""),
        _row("cr", handler=lambda c, a: "a\r\nb"),
    ])
    assert mon.run("two") == "one\r\ntwo\r\n"
    assert mon.run("none") == ""
    assert mon.run("empty") == ""
    # monitor_puts() adds '\r' before every '\n', whatever precedes it.
    assert mon.run("cr") == "a\r\r\nb"


def test_hmp_error() -> None:
    def fail(ctx: Any, args: dict[str, Any]) -> str:
        raise HmpError(args["how"], try_help=args["how"] == "usage")

    def qmp_fail(ctx: Any, args: dict[str, Any]) -> str:
        raise HmpError.qmp("Could not open 'x': No such file or directory")

    mon = HmpMonitor([_row("fail|f", "how:s", "how", "fails", fail),
                      _row("save", "", "", "saves", qmp_fail)])
    assert mon.run("fail plain") == "plain\r\n"
    assert mon.run("f usage") == 'usage\r\nTry "help f" for more information\r\n'
    assert mon.run("save") == "Error: Could not open 'x': No such file or directory\r\n"


def test_other_exceptions_propagate() -> None:
    def boom(ctx: Any, args: dict[str, Any]) -> str:
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        HmpMonitor([_row("boom", handler=boom)]).run("boom")


def test_command_without_handler_is_not_available() -> None:
    mon = HmpMonitor([_row("gdbserver", "device:s?", "[device]", "gdb", None)])
    assert mon.run("gdbserver   tcp::1234") == 'Command "gdbserver   " is not available.\r\n'


def test_ctx_defaults_and_registers_reach_the_parser() -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []
    per_ctx: dict[str, DumpDefaults] = {}

    mon = HmpMonitor(
        [_row("p", "fmt:/,val:l", "/fmt expr", "print", lambda c, a: seen.append((c, a)))],
        defaults=lambda ctx: per_ctx.setdefault(ctx, DumpDefaults()),
        registers=lambda ctx, name: {"one": {"eip": 1}}.get(ctx, {}).get(name),
    )
    assert mon.run("p/d $eip", "one") == ""
    assert mon.run("p $eip", "two") == 'unknown register\r\nTry "help p" for more information\r\n'
    assert seen == [("one", {"count": 1, "format": "d", "size": 4, "val": 1})]
    assert per_ctx == {"one": DumpDefaults("d", 4), "two": DumpDefaults("x", 4)}


def test_monitor_owns_defaults_without_a_callback() -> None:
    got: list[dict[str, Any]] = []
    mon = HmpMonitor([_row("xp", "fmt:/,addr:l", "", "", lambda c, a: got.append(a))])
    mon.run("xp /2db 0")
    mon.run("xp 0")
    assert got[1] == {"count": 1, "format": "d", "size": 1, "addr": 0}


def test_parse_only() -> None:
    row = _row("memsave", "val:l,size:i,filename:s", "addr size file", "save",
               lambda c, a: "ran\n")
    mon = HmpMonitor([row])
    cmd, args = mon.parse_only('memsave 0 16 "f"')
    assert cmd is row and args == {"val": 0, "size": 16, "filename": "f"}
    with pytest.raises(HmpError) as e:
        mon.parse_only("memsave 0 16")
    assert e.value.text == 'memsave: string expected\nTry "help memsave" for more information\n'
    with pytest.raises(HmpError) as e:
        mon.parse_only("nope")
    assert e.value.text == "unknown command: 'nope'\n"
    with pytest.raises(HmpError) as e:
        mon.parse_only("  ")
    assert e.value.text == ""


def test_first_row_wins_for_a_duplicate_alias() -> None:
    mon = HmpMonitor([_row("b|x", handler=lambda c, a: "b\n"),
                      _row("a|x", handler=lambda c, a: "a\n")])
    assert mon.run("x") == "a\r\n"  # "a|x" sorts first


def test_nul_ends_the_line() -> None:
    mon = HmpMonitor([_row("stop", handler=lambda c, a: "stopped\n")])
    assert mon.run("stop\0 garbage") == "stopped\r\n"
    assert mon.run("\0stop") == ""


def test_matches_aliases_exactly() -> None:
    row = _row("print|p")
    assert row.aliases == ("print", "p")
    assert row.matches("p") and row.matches("print")
    assert not row.matches("pr") and not row.matches("print|p")
