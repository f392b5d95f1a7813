"""State that survives the daemon: the platform identity and persistent guest definitions.

Proves that the state folder holds the identity and one definition per persistent guest,
each mode 0600 in 0700 folders; that platform key changes (PDH, PEK rotation, platform
reset) survive a restart; that persistent guests are launched anew at start — a fresh
launch the owner can verify again with the same session — while `guest-remove` deletes
the definition and the guest's `quit` does not; and, killing the daemon with SIGKILL at
random moments while it adds and removes persistent guests and rotates the PDH, that the
state files are never torn and every restart is clean, with exactly the PDH and guests
that the last completed operations left (see `test_sigkill_loop` for what "completed"
allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sev_support import (
    BUILTIN,
    DaemonProc,
    Owner,
    Qmp,
    RawQmp,
    error_of,
    guest_name,
    qmp,
    sev_daemon,
    short_tmpdir,
    snp_measure,
    stderr_of,
    stop_daemon,
    unb64,
)

from sevd.domain.psp import PlatformIdentity


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def restart(d: DaemonProc) -> DaemonProc:
    """Stop (if running) and start again on the same folders and flags."""
    if d.proc.poll() is None:
        assert d.stop() == 0, stderr_of(d)
    return sev_daemon(d.base)


async def platform_keys(control: Qmp) -> tuple[str, str, str]:
    certs = await control.execute("query-sev-certificates")
    return certs["pdh"], certs["pek"], certs["oca"]


async def test_identity_and_platform_commands_survive_restart() -> None:
    d = sev_daemon(short_tmpdir())
    try:
        state = d.state_dir
        ident = state / "platform-milan.identity"
        assert mode(state) == 0o700 and mode(ident) == 0o600
        PlatformIdentity.from_bytes(ident.read_bytes())
        async with qmp(d.control) as c:
            k0 = await platform_keys(c)
            await c.execute("sev-pdh-generate")
            k1 = await platform_keys(c)
            assert k1[0] != k0[0] and k1[1:] == k0[1:]  # only the PDH changed
        d = restart(d)
        async with qmp(d.control) as c:
            assert await platform_keys(c) == k1
            await c.execute("sev-pek-generate")
            k2 = await platform_keys(c)
            # PEK_GEN makes the platform self-owned: new OCA, PEK and PDH (reference §6).
            assert all(a != b for a, b in zip(k2, k1, strict=True))
        d = restart(d)
        async with qmp(d.control) as c:
            assert await platform_keys(c) == k2
            await c.execute("sev-platform-reset")
            k3 = await platform_keys(c)
            assert all(a != b for a, b in zip(k3, k2, strict=True))  # new OCA, PEK, PDH
            # INITed again: a guest launches on the new keys right away.
            owner = await Owner.for_host(c, policy=0x1)
            info = await c.execute("guest-add", {"name": "r", "sev-guest": owner.sev_guest()})
            assert info["sev"]["state"] == "launch-secret"
            await c.execute("guest-remove", {"name": "r"})
            assert (await c.execute("query-sev-platform"))["state"] == "init"
        d = restart(d)
        async with qmp(d.control) as c:
            assert await platform_keys(c) == k3
            assert mode(ident) == 0o600
            # Guests exist: PEK_GEN and PLATFORM_RESET need the INIT state.
            owner = await Owner.for_host(c, policy=0x1)
            await c.execute("guest-add", {"name": "g", "sev-guest": owner.sev_guest()})
            for cmd, text in (("sev-pek-generate", "PEK_GEN"),
                              ("sev-platform-reset", "PLATFORM_RESET")):
                assert await error_of(c, cmd) == (
                    f"{text} failed: fw_error=1 'Platform state is invalid'")
            assert await platform_keys(c) == k3
    finally:
        stop_daemon(d)


async def test_persistent_guests() -> None:
    d = sev_daemon(short_tmpdir())
    try:
        digest = snp_measure("--mode", "sev", "--ovmf", BUILTIN)
        async with qmp(d.control) as c:
            owner = await Owner.for_host(c, policy=0x1)
            godh, sess = owner.write_files(d.base / "fw", "p")
            keep, drop, quitter, transient = (guest_name("keep"), guest_name("drop"),
                                              guest_name("quit"), guest_name("tr"))
            for name, props in ((keep, owner.sev_guest(files=(godh, sess))),
                                (drop, owner.sev_guest()), (quitter, owner.sev_guest())):
                await c.execute("guest-add", {"name": name, "persistent": True,
                                              "memory": 512 << 20, "sev-guest": props})
            await c.execute("guest-add", {"name": transient, "sev-guest": owner.sev_guest()})
            defs = d.state_dir / "guests"
            assert mode(defs) == 0o700
            assert sorted(p.name for p in defs.iterdir()) == sorted(
                f"{n}.json" for n in (keep, drop, quitter))
            for p in defs.iterdir():
                assert mode(p) == 0o600
                assert json.loads(p.read_text())["name"] == p.stem
            first = {}
            for name in (keep, quitter):
                async with qmp(d.guest_socket(name)) as g:
                    first[name] = unb64((await g.execute("query-sev-launch-measure"))["data"])
            async with qmp(d.guest_socket(quitter), ends=True) as g:
                await g.execute("quit")
            await c.execute("guest-remove", {"name": drop})
            assert not (defs / f"{drop}.json").exists()
            assert (defs / f"{quitter}.json").exists()  # quit ends the instance only
        d = restart(d)
        async with qmp(d.control) as c:
            guests = {g["name"]: g for g in await c.execute("query-guests")}
            assert sorted(guests) == sorted([keep, quitter])
            for name in (keep, quitter):
                assert guests[name]["persistent"] and guests[name]["memory"] == 512 << 20
                assert guests[name]["status"] == "prelaunch"
                assert guests[name]["sev"]["state"] == "launch-secret"
                async with qmp(d.guest_socket(name)) as g:
                    sev = await g.execute("query-sev")
                    blob = unb64((await g.execute("query-sev-launch-measure"))["data"])
                # A new launch (new mnonce) that the same owner session verifies.
                assert blob != first[name]
                owner.verify(blob, sev, digest)
            await c.execute("guest-remove", {"name": keep})
        d = restart(d)
        async with qmp(d.control) as c:
            assert [g["name"] for g in await c.execute("query-guests")] == [quitter]
    finally:
        stop_daemon(d)


# -- SIGKILL at arbitrary moments ---------------------------------------------------------------

@dataclass
class Tracker:
    """What the client knows was completed (reply received), and what was in flight."""

    pdh: str = ""
    seen_pdhs: set[str] = field(default_factory=set)
    rotated_unread: bool = False   # a sev-pdh-generate reply came, the new PDH not yet read
    guests: set[str] = field(default_factory=set)
    inflight: tuple[str, str] | None = None  # (command, guest name or "")
    completed: int = 0


async def churn(d: DaemonProc, t: Tracker, rng: random.Random) -> None:
    """Add/remove persistent guests and rotate the PDH until the daemon dies."""
    c = await RawQmp.connect(d.control, negotiate=True)
    try:
        await _churn(c, t, rng)
    finally:
        await c.close()


async def _churn(c: Any, t: Tracker, rng: random.Random) -> None:
    async def call(cmd: str, args: dict[str, Any] | None = None) -> Any:
        msg: dict[str, Any] = {"execute": cmd}
        if args is not None:
            msg["arguments"] = args
        await c.send(json.dumps(msg).encode())
        while True:
            line = await c.line()
            if not line:
                raise ConnectionError("daemon gone")
            reply = json.loads(line)
            if "event" not in reply:
                assert "return" in reply, reply
                return reply["return"]

    while True:
        op = rng.choice(["add", "add", "remove", "pdh"])
        if op == "pdh":
            t.inflight = ("sev-pdh-generate", "")
            await call("sev-pdh-generate")
            t.rotated_unread, t.inflight = True, None
            pdh = (await call("query-sev-capabilities"))["pdh"]
            t.pdh, t.rotated_unread = pdh, False
            t.seen_pdhs.add(pdh)
        elif op == "add":
            name = f"p{rng.randrange(8)}"
            if name in t.guests:
                continue
            t.inflight = ("guest-add", name)
            await call("guest-add", {"name": name, "persistent": True, "sev-guest": {
                "policy": 1, "cbitpos": 51, "reduced-phys-bits": 1}})
            t.guests.add(name)
            t.inflight = None
        elif t.guests:
            name = rng.choice(sorted(t.guests))
            t.inflight = ("guest-remove", name)
            await call("guest-remove", {"name": name})
            t.guests.discard(name)
            t.inflight = None
        t.completed += 1


def check_files(state: Path) -> set[str]:
    """Every state file is whole: the identity parses, each definition is its guest's JSON.
    Returns the guests defined."""
    ident = state / "platform-milan.identity"
    PlatformIdentity.from_bytes(ident.read_bytes())
    assert mode(ident) == 0o600
    names = set()
    for p in (state / "guests").iterdir():
        if p.name.startswith(".") and p.name.endswith(".tmp"):
            continue  # an interrupted write's temporary file: never read, removed at start
        args = json.loads(p.read_text())
        assert args["name"] == p.stem and p.suffix == ".json", p
        assert mode(p) == 0o600
        names.add(p.stem)
    return names


async def test_sigkill_loop() -> None:
    """SIGKILL at random moments, 24 times. What must hold after each restart:

    - the PDH is the last one read after a rotation, unless a rotation was in flight: if
      its reply had arrived, the new PDH was saved before the reply (so the PDH must be a
      new one, never an older one); if not, either the old PDH (killed before the rename)
      or a new one (killed after it, before the reply);
    - the guests are exactly those whose guest-add/guest-remove completed, give or take
      the one operation in flight; each is launched anew (SEV state launch-secret).
    """
    rng = random.Random(0x5EBD)
    d = sev_daemon(short_tmpdir())
    t = Tracker()
    in_flight_kills = 0
    try:
        async with qmp(d.control) as c:
            t.pdh = (await c.execute("query-sev-capabilities"))["pdh"]
            t.seen_pdhs.add(t.pdh)
        for _ in range(24):
            worker = asyncio.create_task(churn(d, t, rng))
            await asyncio.sleep(rng.uniform(0.01, 0.25))
            d.proc.send_signal(signal.SIGKILL)
            d.proc.wait(10)
            with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
                await asyncio.wait_for(worker, 5)
            assert worker.done()
            if t.inflight is not None or t.rotated_unread:
                in_flight_kills += 1

            on_disk = check_files(d.state_dir)
            d = sev_daemon(d.base)
            async with qmp(d.control) as c:
                pdh = (await c.execute("query-sev-capabilities"))["pdh"]
                guests = {g["name"]: g for g in await c.execute("query-guests")}
            if t.rotated_unread:
                assert pdh not in t.seen_pdhs
            elif t.inflight is not None and t.inflight[0] == "sev-pdh-generate":
                assert pdh == t.pdh or pdh not in t.seen_pdhs
            else:
                assert pdh == t.pdh
            t.pdh, t.rotated_unread = pdh, False
            t.seen_pdhs.add(pdh)

            assert set(guests) == on_disk
            maybe = {t.inflight[1]} if t.inflight and t.inflight[0] != "sev-pdh-generate" else set()
            assert t.guests - maybe <= set(guests) <= t.guests | maybe
            assert all(g["sev"]["state"] == "launch-secret" for g in guests.values())
            t.guests, t.inflight = set(guests), None
        assert t.completed > 24  # the daemon did work between kills
        assert in_flight_kills >= 5, in_flight_kills  # and was often killed mid-operation
    finally:
        stop_daemon(d)


def test_definition_delete_is_durable(tmp_path: Path, monkeypatch: Any) -> None:
    """guest-remove's reply means the definition is gone for good: the unlink is followed
    by an fsync of the folder, as a write's rename is (else a power loss could bring the
    guest back at the next start)."""
    from sevd import state

    sd = state.StateDir(tmp_path / "st")
    sd.prepare()
    sd.save_guest("a", {"name": "a"})
    synced: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr("sevd.state.os.fsync", spy)
    sd.delete_guest("a")
    assert synced == [str(sd.guests)]
    sd.delete_guest("a")  # already gone: nothing to do
    assert synced == [str(sd.guests)]
    assert sd.load_guests() == []
