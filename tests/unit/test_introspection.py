"""`query-qmp-schema` is QEMU's SchemaInfo list: masked names, defaults, builtins, arrays.

Proves, on the shipped schema and for each scope, that the generated introspection:
- names commands and events as they are, every other type by a masked decimal name
  ("0", "1", … without gaps), arrays as "[element]", builtins by their own name, every
  integer type as `int`; every referenced type is defined exactly once, nothing unused;
- marks optional members with `"default": null` and nothing else;
- writes each entry's keys in QEMU's own order (name, ret-type, meta-type, arg-type;
  members name, default, type) wherever §8.7 shows one (not a contract, DESIGN §8);
- matches the entries that reference/qmp.md §8.7 records from QEMU 7.2 for query-status,
  query-kvm, human-monitor-command, qmp_capabilities, the RESET event and the empty object,
  byte for byte once masked names are mapped, with sevd's deliberate differences spelled
  out (query-kvm's `mem-encryption`, DESIGN §8; singlestep's `deprecated` feature, QEMU 9.2);
- is one line well under qemu.qmp's 10 MiB read limit, and validates against its own schema.
"""

from __future__ import annotations

from typing import Any

import pytest

from sevd.commands.introspect import qmp_schema
from sevd.commands.registry import GUEST, HOST
from sevd.commands.schema import Schema
from sevd.protocol import jsonwrite
from sevd.protocol.session import qdict_order

SCHEMA = Schema()
BUILTINS = {"str": "string", "int": "int", "bool": "boolean", "number": "number",
            "null": "null", "any": "value"}


@pytest.fixture(scope="module", params=[GUEST, HOST])
def scope(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def entries(scope: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for e in qmp_schema(SCHEMA, scope):
        assert e["name"] not in out, f"{e['name']} defined twice"
        out[e["name"]] = e
    return out


def referenced(e: dict[str, Any]) -> list[str]:
    refs = [e[k] for k in ("arg-type", "ret-type", "element-type") if k in e]
    refs += [m["type"] for m in e.get("members", []) if "type" in m]
    refs += [v["type"] for v in e.get("variants", [])]
    return refs


def test_commands_and_events_keep_their_names_per_scope(scope: str) -> None:
    ents = entries(scope)
    commands = {n for n, e in ents.items() if e["meta-type"] == "command"}
    assert commands == {c.name for c in SCHEMA.for_scope(scope)}
    events = {n for n, e in ents.items() if e["meta-type"] == "event"}
    assert events == {ev.name for ev in SCHEMA.events.values() if scope in ev.scopes}


def test_masked_names_builtins_and_arrays(scope: str) -> None:
    ents = entries(scope)
    masked = sorted(int(n) for n in ents if n.isdigit())
    assert masked == list(range(len(masked)))              # "0", "1", … without gaps
    for name, e in ents.items():
        kind = e["meta-type"]
        if kind in ("command", "event"):
            assert not name.isdigit()
        elif kind == "builtin":
            assert BUILTINS[name] == e["json-type"]
        elif kind == "array":
            assert name == "[" + e["element-type"] + "]"
        else:
            assert kind in ("object", "enum", "alternate") and name.isdigit(), e
    # Every reference resolves, and every defined type is used by something.
    used = {r for e in ents.values() for r in referenced(e)}
    assert used <= set(ents)
    assert {n for n, e in ents.items() if e["meta-type"] not in ("command", "event")} == used


def test_optional_members_carry_default_null(scope: str) -> None:
    for e in entries(scope).values():
        for m in e.get("members", []):
            if "type" in m:                                    # object members, not enum
                assert m.get("default", None) is None
                assert set(m) <= {"name", "default", "type", "features"}


def test_every_integer_type_is_int() -> None:
    ents = entries(GUEST)
    assert not {t for e in ents.values() for t in referenced(e)} & {
        "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "size"}


def test_entry_keys_are_in_qemus_order(scope: str) -> None:
    # Key order is not part of QMP's contract (DESIGN §8); sevd matches QEMU's for the key
    # sets §8.7 shows, which keeps a byte-level diff against a QEMU dump readable. Unions
    # (tag/variants) keep sevd's order.
    for e in entries(scope).values():
        if "variants" not in e:
            assert list(e) == qdict_order(e), e
        for m in e.get("members", []):
            assert list(m) == qdict_order(m), e


def test_the_reply_is_one_line_under_the_client_read_limit(scope: str) -> None:
    line = jsonwrite.message({"return": qmp_schema(SCHEMA, scope), "id": "s"})
    assert line.count(b"\n") == 1 and len(line) < 10 << 20
    cmd = SCHEMA.commands["query-qmp-schema"]
    assert cmd.returns_validator.is_valid(qmp_schema(SCHEMA, scope))


# -- reference/qmp.md §8.7, entry by entry -----------------------------------------------------
RUN_STATES = ["debug", "inmigrate", "internal-error", "io-error", "paused", "postmigrate",
              "prelaunch", "finish-migrate", "restore-vm", "running", "save-vm", "shutdown",
              "suspended", "watchdog", "guest-panicked", "colo"]
SHUTDOWN_CAUSES = ["none", "host-error", "host-qmp-quit", "host-qmp-system-reset",
                   "host-signal", "host-ui", "guest-shutdown", "guest-reset", "guest-panic",
                   "subsystem-reset", "snapshot-load"]


def enum(name: str, values: list[str]) -> dict[str, Any]:
    return {"name": name, "members": [{"name": v} for v in values], "meta-type": "enum",
            "values": values}


# QEMU 7.2's entries as recorded (masked names are that build's), plus, where marked,
# the deliberate differences: they are part of the expectation, not ignored.
QEMU_72: dict[str, dict[str, Any]] = {e["name"]: e for e in [
    {"name": "query-status", "ret-type": "1", "meta-type": "command", "arg-type": "0"},
    {"name": "0", "members": [], "meta-type": "object"},
    {"name": "1", "members": [
        {"name": "running", "type": "bool"},
        # QEMU 9.2 (DESIGN §8: 9.2 shapes win): singlestep is deprecated since 8.1.
        {"name": "singlestep", "type": "bool", "features": ["deprecated"]},
        {"name": "status", "type": "262"}], "meta-type": "object"},
    enum("262", RUN_STATES),
    {"name": "query-kvm", "ret-type": "196", "meta-type": "command", "arg-type": "0"},
    {"name": "196", "members": [
        {"name": "enabled", "type": "bool"}, {"name": "present", "type": "bool"},
        # DESIGN §8: the 2016 RFC's member, marked as sevd's feature.
        {"name": "mem-encryption", "type": "bool", "features": ["sevd-rfc-2016"]}],
     "meta-type": "object"},
    {"name": "human-monitor-command", "ret-type": "str", "meta-type": "command",
     "arg-type": "226", "features": ["savevm-monitor-nodes"]},
    {"name": "226", "members": [{"name": "command-line", "type": "str"},
                                {"name": "cpu-index", "default": None, "type": "int"}],
     "meta-type": "object"},
    {"name": "qmp_capabilities", "ret-type": "0", "meta-type": "command", "arg-type": "172"},
    {"name": "172", "members": [{"name": "enable", "default": None, "type": "[418]"}],
     "meta-type": "object"},
    {"name": "[418]", "element-type": "418", "meta-type": "array"},
    enum("418", ["oob"]),
    {"name": "RESET", "meta-type": "event", "arg-type": "3"},
    {"name": "3", "members": [{"name": "guest", "type": "bool"},
                              {"name": "reason", "type": "263"}], "meta-type": "object"},
    enum("263", SHUTDOWN_CAUSES),
    {"name": "bool", "json-type": "boolean", "meta-type": "builtin"},
    {"name": "int", "json-type": "int", "meta-type": "builtin"},
    {"name": "str", "json-type": "string", "meta-type": "builtin"},
]}


def unify(name: str, ours: dict[str, dict[str, Any]], mapping: dict[str, str]) -> None:
    """Walk QEMU's entry `name` and ours side by side, mapping masked names one to one."""
    theirs = QEMU_72[name]
    mine = ours[mapping.get(name, name)]

    def rename(v: Any, key: str) -> Any:
        if key in ("arg-type", "ret-type", "element-type", "type") and v in QEMU_72:
            target = mine_ref[(key, v)]
            if v in mapping:
                assert mapping[v] == target, f"{v} maps to {mapping[v]} and {target}"
            elif v.isdigit() or v.startswith("["):
                assert target not in mapping.values(), f"{target} used for two QEMU types"
                mapping[v] = target
            return mapping.get(v, v)
        return v

    # Pair references by position (same member order), then compare the renamed entry.
    mine_ref: dict[tuple[str, str], str] = {}
    for key in ("arg-type", "ret-type", "element-type"):
        if key in theirs and key in mine:
            mine_ref[(key, theirs[key])] = mine[key]
    for tm, mm in zip(theirs.get("members", []), mine.get("members", []), strict=False):
        if "type" in tm and "type" in mm:
            mine_ref[("type", tm["type"])] = mm["type"]
    renamed = {k: rename(v, k) for k, v in theirs.items()}
    if "members" in theirs:
        renamed["members"] = [{k: rename(v, k) for k, v in m.items()}
                              for m in theirs["members"]]
    renamed["name"] = mapping.get(name, name)
    assert mine == renamed
    assert list(mine) == list(renamed)                     # key order too
    for _key, ref in mine_ref:
        if ref in QEMU_72 and mapping.get(ref, ref) in ours and ref != name:
            unify(ref, ours, mapping)


@pytest.mark.parametrize("command", ["query-status", "query-kvm", "human-monitor-command",
                                     "qmp_capabilities", "RESET"])
def test_entries_match_qemu_72_modulo_masked_names(command: str) -> None:
    ours = entries(GUEST)
    mapping: dict[str, str] = {}
    unify(command, ours, mapping)
    assert mapping                                          # something was compared


def test_commands_without_arguments_use_the_one_empty_object() -> None:
    ours = entries(GUEST)
    empty = ours["query-status"]["arg-type"]
    assert ours[empty] == {"name": empty, "members": [], "meta-type": "object"}
    for name in ("query-kvm", "query-name", "stop", "cont", "quit", "query-version"):
        assert ours[name]["arg-type"] == empty
    for name in ("stop", "cont", "system_reset", "qmp_capabilities"):
        assert ours[name]["ret-type"] == empty
    for event in ("STOP", "RESUME", "POWERDOWN"):
        assert ours[event] == {"name": event, "meta-type": "event", "arg-type": empty}


def test_no_allow_oob_on_these_commands() -> None:
    ours = entries(GUEST)
    for name in ("query-status", "query-kvm", "human-monitor-command", "qmp_capabilities"):
        assert "allow-oob" not in ours[name]
