"""The status page at `/`: server-rendered HTML, no build step, no third-party assets.

It shows the host (profile, firmware API, sessions), ASID usage per range, every guest with
its run and SEV state, and a memory map per guest: each region of guest-physical memory as a
row of cells, coloured by what the cell holds — private (stored encrypted under the guest's
VEK), shared (plaintext), both, or untouched (never written). A small script
(`http_static/status.js`, served from this origin so that the Content-Security-Policy can
forbid inline script) appends live events from /api/v1/events.

Everything interpolated into the page goes through `html.escape`. Reads the domain through
the `App` (never imports `sevd.domain`), and calls no firmware command: a dashboard that
refreshes must not change the firmware's counters or consume a fault armed for a client.
"""

from __future__ import annotations

import time
from html import escape
from typing import TYPE_CHECKING, Any

from sevd import __version__
from sevd.transports.http_views import memory_view

if TYPE_CHECKING:
    from sevd.commands.app import App

CELLS = 128          # cells per region row
MAX_MAPS = 64        # memory maps rendered on the page; the rest link to the JSON


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            v = n / (1 << shift)
            return f"{v:.0f} {unit}" if v == int(v) else f"{v:.1f} {unit}"
    return f"{n} B"


def _cells(region: dict[str, Any]) -> list[tuple[int, int, dict[str, int]]]:
    """Split a region into CELLS cells: (start, end, bytes per kind) for each."""
    start, end = region["start"], region["end"]
    width = max(-(-(end - start) // CELLS), 4096)
    width = -(-width // 4096) * 4096  # whole pages
    cells = [(a, min(a + width, end), {"private": 0, "shared": 0, "untouched": 0})
             for a in range(start, end, width)]
    for run in region["runs"]:
        lo, hi, kind = run["start"], run["end"], run["kind"]
        i = (lo - start) // width
        while lo < hi and i < len(cells):
            _, c_hi, acc = cells[i]
            take = min(hi, c_hi) - lo
            acc[kind] += take
            lo += take
            i += 1
    return cells


def _cell_class(acc: dict[str, int]) -> str:
    if acc["private"] and acc["shared"]:
        return "mixed"
    if acc["private"]:
        return "private"
    if acc["shared"]:
        return "shared"
    return "untouched"


def memory_map_html(app: App, name: str) -> str:
    view = memory_view(app, name)
    rows = []
    for region in view["regions"]:
        cells = []
        for lo, hi, acc in _cells(region):
            cls = _cell_class(acc)
            title = (f"0x{lo:x}–0x{hi:x}: private {_size(acc['private'])}, "
                     f"shared {_size(acc['shared'])}")
            cells.append(f'<span class="cell {cls}" title="{escape(title)}"></span>')
        label = (f"{escape(region['kind'])} 0x{region['start']:x}–0x{region['end']:x} "
                 f"({_size(region['end'] - region['start'])})")
        rows.append(f'<div class="region" data-kind="{escape(region["kind"])}">'
                    f'<div class="region-label">{label}</div>'
                    f'<div class="map">{"".join(cells)}</div></div>')
    t = view["totals"]
    totals = (f'<p class="totals">private <b data-kind="private">{_size(t["private"])}</b>, '
              f'shared <b data-kind="shared">{_size(t["shared"])}</b>, untouched '
              f'{_size(t["untouched"])}</p>')
    return totals + "".join(rows)


def _asid_rows(app: App) -> str:
    plat = app.platform
    if plat is None:
        return "<p>SEV is not enabled on this host.</p>"
    out = []
    for label, key, es in (("SEV-ES", "es", True), ("SEV", "sev", False)):
        r = plat.asid_range(es)
        used = plat.asids_used(es)
        span = f"{r.start}–{r.stop - 1}" if len(r) else "none"
        pct = 100 * used / len(r) if len(r) else 0
        out.append(
            f'<tr data-range="{key}"><th>{label} ASIDs</th><td>{span}</td>'
            f'<td class="num" data-used="{used}">{used} used</td>'
            f'<td class="num" data-free="{len(r) - used}">{len(r) - used} free</td>'
            f'<td class="bar"><meter min="0" max="{max(len(r), 1)}" value="{used}" '
            f'title="{pct:.1f}% used"></meter></td></tr>')
    return "<table class=\"asids\">" + "".join(out) + "</table>"


def render(app: App, sessions: dict[str, int]) -> str:
    """The whole page."""
    plat = app.platform
    prof = plat.profile if plat else None
    major, minor, micro = app.qemu_version
    rows = []
    for slot in app.slots.values():
        g = slot.guest
        s = g.sev
        name = escape(g.name)
        sev_state = s.state.value if s else "—"
        rows.append(
            f'<tr class="guest" data-name="{name}" data-status="{g.state.value}" '
            f'data-sev-state="{escape(s.state.value) if s else "none"}">'
            f'<td><a href="#guest-{name}">{name}</a></td>'
            f'<td class="status {g.state.value}">{g.state.value}</td>'
            f'<td class="sev-state">{escape(sev_state)}</td>'
            f'<td class="num">{s.asid if s else "—"}</td>'
            f'<td class="num">{s.handle if s else "—"}</td>'
            f'<td class="num">{f"0x{s.spec.policy:x}" if s else "—"}</td>'
            f'<td class="num">{_size(g.config.memory)}</td>'
            f'<td class="num">{g.config.cpus}</td></tr>')
    maps = []
    for i, slot in enumerate(app.slots.values()):
        name = escape(slot.guest.name)
        if i >= MAX_MAPS:
            maps.append(f'<p>… and {len(app.slots) - MAX_MAPS} more guests: see '
                        f'<code>/api/v1/guests/NAME/memory</code>.</p>')
            break
        maps.append(f'<section class="guest-map" id="guest-{name}" data-name="{name}">'
                    f'<h3>{name} <small>{slot.guest.state.value}</small></h3>'
                    f'{memory_map_html(app, slot.guest.name)}</section>')
    host = (f"profile <b id=\"profile\">{escape(prof.name)}</b>, SEV API "
            f"{prof.api_major}.{prof.api_minor} build {prof.build}, C-bit {prof.cbitpos}"
            if prof else "no SEV platform")
    guests_table = (
        "<table class=\"guests\"><thead><tr><th>name</th><th>run state</th><th>SEV state</th>"
        "<th>ASID</th><th>handle</th><th>policy</th><th>memory</th><th>vCPUs</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>" if rows else
        "<p id=\"no-guests\">No guests. Add one with <code>sevctl guest add NAME</code>.</p>")
    generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sevd — {len(app.slots)} guests</title>
<link rel="stylesheet" href="/static/status.css">
<script src="/static/status.js" defer></script>
</head><body data-generated="{generated}">
<header><h1>sevd <small>{escape(__version__)}</small></h1>
<p class="host">{host}; QEMU {major}.{minor}.{micro} (emulated);
<span id="sessions">{sessions.get("control", 0)} control and {sessions.get("guest", 0)} guest
QMP sessions</span>; page generated {generated}.
<span id="live" class="live">static</span></p></header>
<main>
<section id="asid-usage"><h2>ASID usage</h2>{_asid_rows(app)}</section>
<section id="guests"><h2>Guests ({len(app.slots)})</h2>{guests_table}</section>
<section id="memory"><h2>Memory maps</h2>
<p class="legend"><span class="cell private"></span> private (encrypted)
<span class="cell shared"></span> shared (plaintext) <span class="cell mixed"></span> both
<span class="cell untouched"></span> untouched</p>
{"".join(maps)}</section>
<section id="events-section"><h2>Live events</h2>
<p id="stale" hidden>The host changed since this page was generated: <a href="">reload</a>.</p>
<ol id="events" reversed></ol></section>
</main>
<footer>Read-only. Metrics: <a href="/metrics">/metrics</a>; API:
<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>.</footer>
</body></html>
"""
