"""What the fuzz test found, one deterministic case each, kept as regression tests.

Each test states the behaviour DESIGN §7 asks for (an input problem gets an error reply
naming the problem; never an internal error, never a file touched outside the daemon's
folders). A new finding is first pinned here as `xfail(strict=True)` naming the module and
the cause (with its pattern in test_fuzz.KNOWN); the fix removes both.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from proof_support import Sevd, internal_failure, qmp_line, spawn

GUEST = "fg"


@pytest.fixture(scope="module")
def sevd() -> Iterator[Sevd]:
    d = spawn("--log-level", "warning")
    try:
        asyncio.run(_calls(d.control, {"execute": "guest-add", "arguments": {
            "name": GUEST, "start": True,
            "sev-guest": {"policy": 1, "cbitpos": 51, "reduced-phys-bits": 1}}}))
        yield d
    finally:
        d.stop()
        d.cleanup()


async def _calls(path: str, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        qmp_line(await reader.readline())
        writer.write(b'{"execute":"qmp_capabilities"}')
        assert qmp_line(await reader.readline()) == {"return": {}}
        replies = []
        for c in commands:
            writer.write(json.dumps(c).encode())
            while True:
                msg = qmp_line(await asyncio.wait_for(reader.readline(), 10))
                if "event" not in msg:
                    replies.append(msg)
                    break
        return replies
    finally:
        writer.close()


def call(path: str, *commands: dict[str, Any]) -> list[dict[str, Any]]:
    return asyncio.run(_calls(path, *commands))


def assert_input_error(msg: dict[str, Any]) -> None:
    assert "error" in msg, msg
    assert internal_failure(msg) is None, msg


def test_unexpected_empty_member_name(sevd: Sevd) -> None:
    (reply,) = call(sevd.guest_socket(GUEST),
                    {"execute": "query-status", "arguments": {"": 1}})
    assert reply == {"error": {"class": "GenericError",
                               "desc": "Parameter '' is unexpected"}}


def test_pek_cert_import_non_ascii(sevd: Sevd) -> None:
    (reply,) = call(sevd.control, {"execute": "sev-pek-cert-import",
                                   "arguments": {"pek-cert": "\u00e9", "oca-cert": "AAAA"}})
    assert_input_error(reply)


def test_query_memory_empty_range_outside(sevd: Sevd) -> None:
    (reply,) = call(sevd.guest_socket(GUEST), {"execute": "x-sevd-query-memory",
                                               "arguments": {"gpa": 1 << 62, "size": 0}})
    assert internal_failure(reply) is None, reply


def test_guest_remove_checks_the_name(sevd: Sevd) -> None:
    replies = call(sevd.control,
                   {"execute": "guest-remove", "arguments": {"name": "x" * 300}},
                   {"execute": "guest-remove", "arguments": {"name": "a\u0000b"}})
    for reply in replies:
        assert_input_error(reply)


def test_guest_remove_cannot_delete_outside_the_state_dir(sevd: Sevd) -> None:
    victim = sevd.base / "victim.json"
    victim.write_text("{}")
    try:
        (reply,) = call(sevd.control, {"execute": "guest-remove",
                                       "arguments": {"name": "../../victim"}})
        assert victim.exists(), "guest-remove deleted a file outside the state directory"
        assert_input_error(reply)
    finally:
        victim.unlink(missing_ok=True)


def test_query_sev_platform_firmware_failure(sevd: Sevd) -> None:
    replies = call(sevd.control,
                   {"execute": "sev-fault-inject",
                    "arguments": {"command": "platform-status", "status": 19}},
                   {"execute": "query-sev-platform"},
                   {"execute": "sev-fault-clear"})
    assert replies[0] == {"return": {}}, replies
    assert_input_error(replies[1])
