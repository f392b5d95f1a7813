"""QMP throughput and latency: sevd against a real QEMU and against Python's ceiling.

In one run, with the same client code (``bench/common.py``: pre-encoded compact commands on
non-blocking sockets, replies counted as lines), three servers are measured:

* **sevd**, on the monitor socket of one paused SEV guest (what QEMU ``-S`` is);
* **ceiling**, a trivial asyncio server (greeting, then one fixed ``query-status`` reply per
  input line, nothing parsed): the fastest a Python asyncio server can answer here;
* **QEMU**, ``qemu-system-x86_64 -machine q35,accel=tcg -S -nodefaults -display none -nic
  none`` with 16 ``-qmp unix:…,server=on,wait=off`` sockets (one client each).

Measurements, each repeated ``--rounds`` times with the servers interleaved (so that the
noise of a shared machine hits all three alike) and reported as the median round:

a. sequential ``query-status`` round trips/s, with median and p99 latency (measured in
   slices alternating between the servers, so that the machine's drift hits all alike);
b. a pipelined burst of 20,000 ``query-status`` in one stream (commands/s, first byte sent
   to last reply read);
c. 16 concurrent clients in closed loop (total commands/s; one socket per client on QEMU,
   all on the one guest socket for sevd and the ceiling);
d. sequential ``human-monitor-command`` ``info status`` round trips/s;
e. sevd's cold start to ``READY=1`` with an existing state directory (median of
   ``--starts``), received on a ``NOTIFY_SOCKET`` datagram socket this script owns.

It prints a table with the ratios sevd/QEMU and sevd/ceiling against the targets of issue
#3, and sevd's own work per round trip (median latency minus the ceiling's): the ratio to
the ceiling depends on how cheap the client is, that difference does not.

Run from the repository root (about two minutes on two cores)::

    /work/venv/bin/python bench/qmp_throughput.py [--rounds 5] [--client lean|streams]
        [--before TREE]

``--before TREE`` adds a fourth server, sevd run from another source tree, measured in the
same interleaved rounds: a before/after of an optimisation without the noise between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# bench/ is not a package: common.py is found beside this script.
from common import (
    NEGOTIATE,
    ROOT,
    Client,
    Result,
    Server,
    machine_facts,
    pct,
    run,
    seed_state,
    sevd_command,
    start_qemu,
    start_responder,
    start_sevd,
)

QUERY_STATUS = b'{"execute":"query-status","id":%d}\n'
INFO_STATUS = (b'{"execute":"human-monitor-command","arguments":'
               b'{"command-line":"info status"},"id":%d}\n')

# Issue #3's targets (2-core machine).
TARGETS = {"seq_qemu": 1.2, "seq_ceiling": 0.75, "pipe_qemu": 6.0, "conc_qemu": 1.5,
           "own_us": 40.0, "start_ms": 500.0}


@dataclass
class Round:
    seq: Result
    pipe: Result
    conc: Result
    hmp: Result


# -- the two clients ---------------------------------------------------------------------------

class Lean:
    """The selectors-driven client of common.py: a few microseconds per message."""

    def open(self, path: str) -> Any:
        return Client.connect(path)

    def close(self, conn: Any) -> None:
        conn.close()

    def closed_loop(self, conn: Any, template: bytes, n: int) -> Result:
        return run([conn], [[template % i for i in range(n)]], 1)

    def burst(self, path: str, template: bytes, n: int) -> Result:
        c = Client.connect(path)
        try:
            return run([c], [[template % i for i in range(n)]], n)
        finally:
            c.close()

    def concurrent(self, paths: list[str], template: bytes, per: int) -> Result:
        clients = [Client.connect(p) for p in paths]
        try:
            return run(clients, [[template % i for i in range(per)] for _ in clients], 1)
        finally:
            for c in clients:
                c.close()


class Streams:
    """asyncio StreamReader/StreamWriter, a readline per reply, as a typical asyncio client
    does: it costs the client tens of microseconds per message, so the servers'
    differences shrink in proportion."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    async def _open(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_unix_connection(path, limit=1 << 24)
        await r.readline()
        w.write(NEGOTIATE)
        await r.readline()
        return r, w

    def open(self, path: str) -> Any:
        return self.loop.run_until_complete(self._open(path))

    def close(self, conn: Any) -> None:
        conn[1].close()

    async def _closed_loop(self, conn: Any, template: bytes, n: int) -> Result:
        r, w = conn
        clock = time.perf_counter
        lat = []
        line = b""
        start = clock()
        for i in range(n):
            t0 = clock()
            w.write(template % i)
            line = await r.readline()
            lat.append(clock() - t0)
        return Result(clock() - start, n, lat, line.rstrip())

    def closed_loop(self, conn: Any, template: bytes, n: int) -> Result:
        return self.loop.run_until_complete(self._closed_loop(conn, template, n))

    async def _burst(self, path: str, template: bytes, n: int) -> Result:
        r, w = await self._open(path)
        t0 = time.perf_counter()
        w.write(b"".join(template % i for i in range(n)))
        line = b""
        for _ in range(n):
            line = await r.readline()
        w.close()
        return Result(time.perf_counter() - t0, n, [], line.rstrip())

    def burst(self, path: str, template: bytes, n: int) -> Result:
        return self.loop.run_until_complete(self._burst(path, template, n))

    async def _concurrent(self, paths: list[str], template: bytes, per: int) -> Result:
        conns = [await self._open(p) for p in paths]
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self._closed_loop(c, template, per) for c in conns))
        for c in conns:
            c[1].close()
        return Result(time.perf_counter() - t0, per * len(paths), [], results[0].last_line)

    def concurrent(self, paths: list[str], template: bytes, per: int) -> Result:
        return self.loop.run_until_complete(self._concurrent(paths, template, per))


# -- one round -----------------------------------------------------------------------------------

def interleaved(driver: Lean | Streams, servers: list[Server], template: bytes, total: int,
                slices: int) -> dict[str, Result]:
    """Closed-loop round trips on every server, `total` each, in `slices` alternating
    slices: this machine's latency drifts over seconds, and a drift must hit every server
    alike, not the one that happened to be measured then."""
    conns = {s.name: driver.open(s.socket_for(0)) for s in servers}
    try:
        for s in servers:
            driver.closed_loop(conns[s.name], template, 200)  # warm-up
        per = max(1, total // slices)
        parts: dict[str, list[Result]] = {s.name: [] for s in servers}
        for _ in range(slices):
            for s in servers:
                parts[s.name].append(driver.closed_loop(conns[s.name], template, per))
    finally:
        for c in conns.values():
            driver.close(c)
    return {name: Result(sum(r.seconds for r in rs), sum(r.commands for r in rs),
                         [x for r in rs for x in r.latencies], rs[-1].last_line)
            for name, rs in parts.items()}


def one_round(driver: Lean | Streams, servers: list[Server],
              args: argparse.Namespace) -> dict[str, Round]:
    seq = interleaved(driver, servers, QUERY_STATUS, args.sequential, args.slices)
    hmp = interleaved(driver, servers, INFO_STATUS, args.hmp, args.slices)
    out = {}
    for s in servers:
        pipe = driver.burst(s.socket_for(0), QUERY_STATUS, args.burst)
        conc = driver.concurrent([s.socket_for(i) for i in range(args.clients)],
                                 QUERY_STATUS, args.per_client)
        out[s.name] = Round(seq[s.name], pipe, conc, hmp[s.name])
    return out


# -- cold start ----------------------------------------------------------------------------------

def cold_starts(n: int) -> list[float]:
    """Seconds from exec to READY=1 for `n` starts on one existing state directory (after
    one unmeasured start that puts the interpreter and sevd's modules in the page cache)."""
    base = Path(tempfile.mkdtemp(prefix="svc", dir="/tmp"))
    seed_state(base / "state")
    address = str(base / "notify")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    times: list[float] = []
    env = {**os.environ, "NOTIFY_SOCKET": address, "PYTHONPATH": str(ROOT)}
    try:
        for i in range(n + 1):
            t0 = time.perf_counter()
            proc = subprocess.Popen(sevd_command(base), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env, cwd=base)
            listener.settimeout(30)
            while True:
                msg = listener.recv(4096).decode()
                if "READY=1" in msg.split("\n"):
                    break
            if i:
                times.append(time.perf_counter() - t0)
            proc.terminate()
            proc.wait(30)
    finally:
        listener.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)
    return times


# -- report ------------------------------------------------------------------------------------

def median_of(rounds: list[Round], get: Callable[[Round], float]) -> float:
    return statistics.median(get(r) for r in rounds)


def check(rounds: dict[str, list[Round]]) -> None:
    """Every measured reply must be a success: a benchmark of error replies measures
    nothing."""
    for name, rs in rounds.items():
        for r in rs:
            for what, res in (("sequential", r.seq), ("pipelined", r.pipe),
                              ("16 clients", r.conc), ("HMP", r.hmp)):
                if not res.last_line.startswith(b'{"return"'):
                    raise SystemExit(f"{name} {what}: unexpected reply {res.last_line!r}")


def report(rounds: dict[str, list[Round]], starts: list[float]) -> None:
    names = list(rounds)

    def per_server(get: Callable[[Round], float]) -> dict[str, float]:
        return {n: median_of(rs, get) for n, rs in rounds.items()}

    m = {
        "seq": per_server(lambda r: r.seq.rate),
        "seq_med": per_server(lambda r: statistics.median(r.seq.latencies) * 1e6),
        "seq_p99": per_server(lambda r: pct(r.seq.latencies, 0.99) * 1e6),
        "pipe": per_server(lambda r: r.pipe.rate),
        "conc": per_server(lambda r: r.conc.rate),
        "hmp": per_server(lambda r: r.hmp.rate),
        "hmp_med": per_server(lambda r: statistics.median(r.hmp.latencies) * 1e6),
    }
    rows = [("(a) sequential query-status, round trips/s", "seq", "rate"),
            ("    median latency, µs", "seq_med", "latency"),
            ("    p99 latency, µs", "seq_p99", "latency"),
            ("(b) pipelined burst of 20,000, commands/s", "pipe", "rate"),
            ("(c) 16 concurrent clients, commands/s", "conc", "rate"),
            ("(d) HMP info status, round trips/s", "hmp", "rate"),
            ("    median latency, µs", "hmp_med", "latency")]
    has_qemu = "qemu" in rounds
    has_before = "before" in rounds
    print(f"{'':44}" + "".join(f"{n:>11}" for n in names)
          + f"{'sevd/QEMU':>11}" * has_qemu + f"{'sevd/ceil':>11}"
          + f"{'sevd/before':>12}" * has_before)
    for label, key, kind in rows:
        values = m[key]
        line = f"{label:44}" + "".join(f"{values[n]:>11.1f}" for n in names)
        def ratio(a: float, b: float, kind: str = kind) -> float:
            # For latencies the ratio is inverted: above 1 always means sevd is faster.
            return a / b if kind == "rate" else b / a

        if has_qemu:
            line += f"{ratio(values['sevd'], values['qemu']):>10.2f}x"
        line += f"{ratio(values['sevd'], values['ceiling']):>10.2f}x"
        if has_before:
            line += f"{ratio(values['sevd'], values['before']):>11.2f}x"
        print(line)
    own = m["seq_med"]["sevd"] - m["seq_med"]["ceiling"]
    hmp_own = m["hmp_med"]["sevd"] - m["hmp_med"]["ceiling"]
    print(f"\nsevd's own work per round trip (median latency minus the ceiling's): "
          f"query-status {own:.1f} µs, HMP info status {hmp_own:.1f} µs")
    if has_before:
        print(f"  before: query-status "
              f"{m['seq_med']['before'] - m['seq_med']['ceiling']:.1f} µs, HMP info status "
              f"{m['hmp_med']['before'] - m['hmp_med']['ceiling']:.1f} µs")
    if starts:
        print(f"(e) cold start to READY=1, existing state dir: median "
              f"{statistics.median(starts) * 1000:.0f} ms over {len(starts)} starts "
              f"(min {min(starts) * 1000:.0f}, max {max(starts) * 1000:.0f})")
    print("\ntargets (issue #3, 2-core machine):")
    verdicts: list[tuple[str, float, float, bool]] = []
    if has_qemu:
        verdicts += [(f"sequential >= {TARGETS['seq_qemu']}x QEMU",
                      m["seq"]["sevd"] / m["seq"]["qemu"], TARGETS["seq_qemu"], True),
                     (f"pipelined >= {TARGETS['pipe_qemu']}x QEMU",
                      m["pipe"]["sevd"] / m["pipe"]["qemu"], TARGETS["pipe_qemu"], True),
                     (f"16 clients >= {TARGETS['conc_qemu']}x QEMU",
                      m["conc"]["sevd"] / m["conc"]["qemu"], TARGETS["conc_qemu"], True)]
    verdicts.append((f"sequential >= {TARGETS['seq_ceiling']}x ceiling",
                     m["seq"]["sevd"] / m["seq"]["ceiling"], TARGETS["seq_ceiling"], True))
    verdicts.append((f"own work <= {TARGETS['own_us']:.0f} µs", own, TARGETS["own_us"], False))
    if starts:
        verdicts.append((f"cold start <= {TARGETS['start_ms']:.0f} ms",
                         statistics.median(starts) * 1000, TARGETS["start_ms"], False))
    for label, value, target, at_least in verdicts:
        ok = value >= target if at_least else value <= target
        print(f"  {label:32} {value:9.2f}  {'met' if ok else 'NOT met'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--client", choices=("lean", "streams"), default="lean",
                   help="lean: selectors on non-blocking sockets (default); streams: "
                   "asyncio StreamReader/StreamWriter")
    p.add_argument("--sequential", type=int, default=5000, help="round trips in (a)")
    p.add_argument("--burst", type=int, default=20000, help="commands in (b)")
    p.add_argument("--clients", type=int, default=16, help="clients in (c)")
    p.add_argument("--per-client", type=int, default=1000, help="commands per client in (c)")
    p.add_argument("--hmp", type=int, default=3000, help="round trips in (d)")
    p.add_argument("--slices", type=int, default=10, help="alternating slices of (a), (d)")
    p.add_argument("--starts", type=int, default=9, help="cold starts in (e); 0 to skip")
    p.add_argument("--no-qemu", action="store_true", help="measure sevd and the ceiling only")
    p.add_argument("--pin", choices=("split", "same", "none"), default="split",
                   help="split (default): the client on CPU 0, every server on CPU 1; same: "
                   "all on CPU 0 (no cross-CPU wake-ups); none: as the scheduler likes")
    p.add_argument("--before", metavar="TREE", type=Path,
                   help="also measure sevd run from another source tree (e.g. `git archive "
                   "<commit> | tar -x -C TREE`), as a before/after in the same run")
    args = p.parse_args()

    facts = machine_facts()
    print(f"machine: {facts['nproc']} CPUs, {facts['cpu']}; Python {facts['python']}; "
          f"{facts['qemu']}")
    print(f"client: {args.client}; CPUs: {args.pin}; {args.rounds} rounds, median round "
          "reported\n")
    driver = Lean() if args.client == "lean" else Streams()
    servers: list[Server] = []
    try:
        servers.append(start_sevd())
        if args.before:
            servers.append(start_sevd(root=args.before.resolve(), name="before"))
        servers.append(start_responder())
        if not args.no_qemu:
            servers.append(start_qemu(args.clients))
        if args.pin != "none" and (os.cpu_count() or 1) >= 2:
            # Where the client and a server run decides a round trip here more than either
            # program: on this VM, waking a process on the other (idle) vCPU costs ~40 µs,
            # on the same vCPU a context switch. Unpinned, the scheduler's placement drifts
            # and the servers' latencies jump between the two (13 vs 55 µs for the ceiling).
            os.sched_setaffinity(0, {0})
            for s in servers:
                s.pin({1} if args.pin == "split" else {0})
        rounds: dict[str, list[Round]] = {s.name: [] for s in servers}
        for i in range(args.rounds):
            for name, r in one_round(driver, servers, args).items():
                rounds[name].append(r)
            print(f"  round {i + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for s in servers:
            s.stop()
    check(rounds)
    starts = cold_starts(args.starts) if args.starts else []
    print()
    report(rounds, starts)


if __name__ == "__main__":
    main()
