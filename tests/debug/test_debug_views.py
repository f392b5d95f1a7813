"""What the monitor shows of guest memory, by guest policy, against the hypervisor's view.

Real daemons (Milan and Rome), guests launched through the owner's flow with a secret
injected, booted by `cont`, then stopped. Proves DESIGN §5's debug path end to end:

- policy 0x0 (NODBG clear): the heartbeat the guest workload wrote and the owner's secret
  read back as plaintext through `x`, `xp`, `memsave` and `pmemsave` (HMP and QMP), while
  the hypervisor view (`x-sevd-query-memory`) of the same bytes is ciphertext; `info sev`
  says `debug: on`;
- policy 0x1 (NODBG): `xp` and `pmemsave` give exactly the hypervisor view (ciphertext),
  `x` and `memsave` fail as QEMU fails on an unreadable page table, `gva2gpa` says
  `Unmapped`, `info mem`/`info tlb` print nothing, `info sev` says `debug: off`;
- `security-policy: {"debug": false}`, on SEV and non-SEV guests: every debug access is
  refused with the same clear error (HMP and QMP), no dump file is created, the hypervisor
  view still works, and `info sev` says `debug: off`;
- non-SEV guests and the shared window of SEV guests: plain reads equal the hypervisor
  view byte for byte;
- `info x-sevd-memory` (private / shared / untouched ranges) agrees with both views;
- a physical read across the end of the firmware at 4 GiB into the RAM above it reads
  both parts, as QEMU's does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from debug_support import (
    HEARTBEAT,
    SECRET,
    SHARED_WINDOW,
    DaemonProc,
    Qmp,
    dump_bytes,
    error_of,
    heartbeat_record,
    hmp,
    launched,
    qmp,
    view,
)

TABLES = (0x9000, 0x4000)  # PML4, PDPT, PD, PT of the simulated firmware
ROM = (0xFFFE0000, 0x20000)  # the built-in firmware image, mapped to end at 4 GiB


@pytest.fixture(params=["milan", "rome"])
def profile_daemon(request: pytest.FixtureRequest) -> tuple[str, DaemonProc, Path]:
    d, dumps = request.getfixturevalue(f"{request.param}_daemon")
    return request.param, d, dumps


def refused(name: str) -> str:
    return f"Debug access to guest '{name}' is disabled by its security policy (debug=off)"


async def test_debuggable_guest_shows_plaintext(profile_daemon: tuple[str, DaemonProc, Path]
                                                ) -> None:
    profile, d, dumps = profile_daemon
    async with qmp(d.control) as c, launched(c, profile, policy=0x0) as guest, \
            qmp(guest.socket) as g:
        assert "debug: on\r\n" in await hmp(g, "info sev")
        # The heartbeat the workload wrote: plaintext through xp and x (identity map) ...
        page = dump_bytes(await hmp(g, f"xp /512xg {HEARTBEAT:#x}"), 8)
        assert len(page) == 4096
        magic, beats, boots = heartbeat_record(page)
        assert (magic, boots) == (b"SEVDHB01", 1) and beats >= 1
        assert page[24:] == bytes(4096 - 24)  # the firmware zeroes the rest of the page
        assert dump_bytes(await hmp(g, f"x /512xg {HEARTBEAT:#x}"), 8) == page
        # ... while the hypervisor holds ciphertext.
        stored = await view(g, HEARTBEAT, 4096)
        assert stored != page and b"SEVDHB01" not in stored

        # The owner's secret, injected before boot, at the firmware's secret area.
        gpa, n = guest.secret_gpa, len(guest.secret_table)
        assert dump_bytes(await hmp(g, f"xp /{n}xb {gpa:#x}"), 1) == guest.secret_table
        assert dump_bytes(await hmp(g, f"x /{n}xb {gpa:#x}"), 1) == guest.secret_table
        assert SECRET in guest.secret_table
        assert SECRET not in await view(g, gpa, 4096)

        # Dumps: QMP and HMP, virtual and physical, all plaintext.
        await g.execute("memsave", {"val": gpa, "size": n, "filename": "sv.bin"})
        await g.execute("pmemsave", {"val": gpa, "size": n, "filename": "sp.bin"})
        assert await hmp(g, f'memsave {HEARTBEAT:#x} 4096 "hv.bin"') == ""
        assert await hmp(g, f'pmemsave {HEARTBEAT:#x} 4096 "hp.bin"') == ""
        assert (dumps / "sv.bin").read_bytes() == guest.secret_table
        assert (dumps / "sp.bin").read_bytes() == guest.secret_table
        assert (dumps / "hv.bin").read_bytes() == page
        assert (dumps / "hp.bin").read_bytes() == page

        # A read across the private heartbeat page and ... the char format shows it too.
        assert await hmp(g, f"xp /8c {HEARTBEAT:#x}") == (
            f"{HEARTBEAT:016x}: 'S' 'E' 'V' 'D' 'H' 'B' '0' '1'\r\n")

        # Shared window: plaintext in both views, the workload's copy of the heartbeat.
        shared = dump_bytes(await hmp(g, f"xp /512xg {SHARED_WINDOW[0]:#x}"), 8)
        assert shared == page == await view(g, SHARED_WINDOW[0], 4096)


async def test_a_read_across_private_and_shared_memory(control: Qmp) -> None:
    """One xp/pmemsave that spans the end of private memory and the start of the shared
    window decrypts the first part only: each part equals what the guest sees."""
    async with launched(control, "milan", policy=0x0) as guest, qmp(guest.socket) as g:
        start = SHARED_WINDOW[0] - 64
        both = dump_bytes(await hmp(g, f"xp /16xg {start:#x}"), 8)
        private = dump_bytes(await hmp(g, f"xp /8xg {start:#x}"), 8)
        stored = await view(g, start, 128)
        assert both[:64] == private and both[64:] == stored[64:]
        assert both[64:72] == b"SEVDHB01"
        assert stored[:64] != private  # the private part is stored encrypted


async def test_nodbg_shows_the_hypervisor_view(profile_daemon: tuple[str, DaemonProc, Path]
                                               ) -> None:
    profile, d, dumps = profile_daemon
    async with qmp(d.control) as c, launched(c, profile, policy=0x1) as guest, \
            qmp(guest.socket) as g:
        assert "debug: off\r\n" in await hmp(g, "info sev")
        for gpa, size in ((HEARTBEAT, 4096), (guest.secret_gpa, 4096), TABLES):
            stored = await view(g, gpa, size)
            assert dump_bytes(await hmp(g, f"xp /{size // 8}xg {gpa:#x}"), 8) == stored
            name = f"nodbg-{gpa:x}.bin"
            await g.execute("pmemsave", {"val": gpa, "size": size, "filename": name})
            assert (dumps / name).read_bytes() == stored
            assert b"SEVDHB01" not in stored and SECRET not in stored
        # The page tables are ciphertext: walks fail as on garbage.
        for line in (f"x /4xg {HEARTBEAT:#x}", f"x /4xg {SHARED_WINDOW[0]:#x}"):
            assert await hmp(g, line) == f"{int(line.split()[-1], 16):016x}: " \
                "Cannot access memory\r\n"
        assert await hmp(g, f"gva2gpa {HEARTBEAT:#x}") == "Unmapped\r\n"
        assert await hmp(g, "info mem") == ""
        assert await hmp(g, "info tlb") == ""
        invalid = f"Invalid addr 0x{HEARTBEAT:016x}/size 16 specified"
        assert await hmp(g, f'memsave {HEARTBEAT:#x} 16 "nodbg-v.bin"') == (
            f"Error: {invalid}\r\n")
        assert await error_of(g, "memsave", {"val": HEARTBEAT, "size": 16,
                                             "filename": "nodbg-v.bin"}) == invalid
        assert not (dumps / "nodbg-v.bin").exists()
        # Shared pages are plaintext to the hypervisor: xp shows them as they are.
        shared = await view(g, SHARED_WINDOW[0], 64)
        assert shared[:8] == b"SEVDHB01"
        assert dump_bytes(await hmp(g, f"xp /8xg {SHARED_WINDOW[0]:#x}"), 8) == shared


@pytest.mark.parametrize("policy", [0x0, None], ids=["sev", "plain"])
async def test_security_policy_debug_off_refuses_every_debug_access(
        control: Qmp, dumps: Path, policy: int | None) -> None:
    async with launched(control, "milan", policy=policy, debug=False) as guest, \
            qmp(guest.socket) as g:
        text = refused(guest.name)
        lines = [f"x /4xg {HEARTBEAT:#x}", f"xp /4xg {HEARTBEAT:#x}", "xp 0",
                 f"gva2gpa {HEARTBEAT:#x}", "info mem", "info tlb",
                 f'memsave {HEARTBEAT:#x} 16 "off-h.bin"', 'pmemsave 0 16 "off-h.bin"']
        for line in lines:
            assert await hmp(g, line) == f"Error: {text}\r\n", line
        for cmd, args in (("memsave", {"val": HEARTBEAT, "size": 16}),
                          ("pmemsave", {"val": HEARTBEAT, "size": 16}),
                          ("memsave", {"val": 0, "size": 0}),
                          ("pmemsave", {"val": 0, "size": 0})):
            assert await error_of(g, cmd, {**args, "filename": "off-q.bin"}) == text
        assert not (dumps / "off-h.bin").exists() and not (dumps / "off-q.bin").exists()
        # The hypervisor's own view is not a debug access.
        stored = await view(g, HEARTBEAT, 24)
        if policy is None:
            assert heartbeat_record(stored)[0] == b"SEVDHB01"
            assert await hmp(g, "info sev") == "SEV is not enabled\r\n"
        else:
            assert b"SEVDHB01" not in stored
            assert "debug: off\r\n" in await hmp(g, "info sev")


async def test_plain_guest_reads_equal_the_hypervisor_view(control: Qmp, dumps: Path) -> None:
    async with launched(control, "milan", policy=None) as guest, qmp(guest.socket) as g:
        assert await hmp(g, "info sev") == "SEV is not enabled\r\n"
        for gpa, size in ((HEARTBEAT, 4096), TABLES, ROM, (0, 4096),
                          (SHARED_WINDOW[0], 4096)):
            stored = await view(g, gpa, size)
            assert dump_bytes(await hmp(g, f"xp /{size // 8}xg {gpa:#x}"), 8) == stored
        # The workload may tick between `cont` and `stop`: at least the boot's own beat.
        magic, beats, boots = heartbeat_record(await view(g, HEARTBEAT, 24))
        assert (magic, boots) == (b"SEVDHB01", 1) and beats >= 1
        # The identity map: x reads the same bytes as xp.
        assert await hmp(g, f"x /64xg {HEARTBEAT:#x}") == \
            await hmp(g, f"xp /64xg {HEARTBEAT:#x}")
        # A large dump equals the stored bytes, page tables, heartbeat and holes included.
        await g.execute("pmemsave", {"val": 0, "size": 4 << 20, "filename": "plain.bin"})
        assert (dumps / "plain.bin").read_bytes() == await view(g, 0, 4 << 20)
        # The tables of a guest without SEV carry no C-bit.
        pml4 = int.from_bytes(await view(g, TABLES[0], 8), "little")
        assert pml4 == 0xA023


@pytest.mark.parametrize("policy", [None, 0x0], ids=["plain", "sev"])
async def test_a_physical_read_across_the_firmware_and_high_ram(control: Qmp, dumps: Path,
                                                                policy: int | None) -> None:
    """With 3 GiB, RAM continues at 4 GiB right where the firmware ends: QEMU's xp reads
    across that boundary (observed on QEMU 7.2 with -m 3072: `xp /2xg 0xfffffff8` prints
    two values), and so does sevd, each part through its own path."""
    async with launched(control, "milan", policy=policy, memory=3 << 30) as guest, \
            qmp(guest.socket) as g:
        both = dump_bytes(await hmp(g, "xp /2xg 0xfffffff8"), 8)
        rom = dump_bytes(await hmp(g, "xp /1xg 0xfffffff8"), 8)
        high = dump_bytes(await hmp(g, "xp /1xg 0x100000000"), 8)
        assert both == rom + high
        await g.execute("pmemsave", {"val": 0xFFFFFFF8, "size": 16, "filename": "4g.bin"})
        assert (dumps / "4g.bin").read_bytes() == both
        if policy is None:
            assert both == await view(g, 0xFFFFFFF8, 8) + await view(g, 1 << 32, 8)
        # below the firmware, the hole after the RAM under 2 GiB is unmapped
        assert await hmp(g, "xp /2xg 0x7ffffff8") == "000000007ffffff8: Cannot access memory\r\n"


@pytest.mark.parametrize("policy", [0x0, 0x1, None], ids=["sev", "nodbg", "plain"])
async def test_sevd_memory_map_agrees_with_both_views(control: Qmp, policy: int | None) -> None:
    """`info x-sevd-memory` (sevd's own command) tells private, shared and untouched ranges
    apart; each kind reads as it says: private ranges are stored as something else than
    what the debug path shows (with NODBG clear), shared ranges read the same both ways,
    untouched ranges are zeros to the hypervisor."""
    async with launched(control, "milan", policy=policy) as guest, qmp(guest.socket) as g:
        text = await hmp(g, "info x-sevd-memory")
        ranges = []
        for line in text.split("\r\n")[:-1]:
            span, size, kind = line.split()
            lo, hi = (int(x, 16) for x in span.split("-"))
            assert hi - lo == int(size, 16) and hi > lo, line
            ranges.append((lo, hi, kind))
        assert [r[:2] for r in ranges] == sorted(r[:2] for r in ranges)
        kinds = {(lo, kind) for lo, _hi, kind in ranges}
        written = "shared" if policy is None else "private"
        assert {(0x9000, written), (HEARTBEAT, written), (0xFFFE0000, written)} <= kinds
        if policy is not None:
            assert (SHARED_WINDOW[0], "shared") in kinds
        for lo, hi, kind in ranges:
            n = min(64, hi - lo)
            stored = await view(g, lo, n)
            if kind == "untouched":
                assert stored == bytes(n), hex(lo)
                continue
            shown = dump_bytes(await hmp(g, f"xp /{n}xb {lo:#x}"), 1)
            if kind == "shared" or policy == 0x1:
                assert shown == stored, hex(lo)
            else:
                assert shown != stored, hex(lo)
