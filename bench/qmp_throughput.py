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

a. sequential ``query-status`` round trips/s, with median and p99 latency;
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# bench/ is not a package: common.py is found beside this script.
from common import (
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


# -- the measurements, for the lean client ------------------------------------------------------

def measure_lean(server: Server, args: argparse.Namespace) -> Round:
    """One round of (a)-(d) against `server` with the selectors-driven client."""
    c = Client.connect(server.socket_for(0))
    run([c], [[QUERY_STATUS % i for i in range(200)]], 1)  # warm-up
    seq = run([c], [[QUERY_STATUS % i for i in range(args.sequential)]], 1)
    c.close()
    c = Client.connect(server.socket_for(0))
    pipe = run([c], [[QUERY_STATUS % i for i in range(args.burst)]], args.burst)
    c.close()
    clients = [Client.connect(server.socket_for(i)) for i in range(args.clients)]
    conc = run(clients, [[QUERY_STATUS % i for i in range(args.per_client)]
                         for _ in clients], 1)
    for c in clients:
        c.close()
    c = Client.connect(server.socket_for(0))
    run([c], [[INFO_STATUS % i for i in range(100)]], 1)
    hmp = run([c], [[INFO_STATUS % i for i in range(args.hmp)]], 1)
    c.close()
    return Round(seq, pipe, conc, hmp)


# -- the same measurements with an asyncio-streams client ---------------------------------------

async def _streams_round(server: Server, args: argparse.Namespace) -> Round:
    """(a)-(d) with asyncio streams (readline per reply), as a typical asyncio client does;
    it costs the client tens of microseconds per message, so the servers' differences
    shrink in proportion."""
    clock = time.perf_counter

    async def connect(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        r, w = await asyncio.open_unix_connection(path, limit=1 << 24)
        await r.readline()
        w.write(b'{"execute":"qmp_capabilities"}\n')
        await r.readline()
        return r, w

    async def closed_loop(path: str, template: bytes, n: int,
                          lat: list[float] | None) -> bytes:
        r, w = await connect(path)
        line = b""
        for i in range(n):
            t0 = clock()
            w.write(template % i)
            line = await r.readline()
            if lat is not None:
                lat.append(clock() - t0)
        w.close()
        return line

    def result(t0: float, n: int, lat: list[float], last: bytes) -> Result:
        return Result(clock() - t0, n, lat, last.rstrip())

    path = server.socket_for(0)
    await closed_loop(path, QUERY_STATUS, 200, None)
    lat: list[float] = []
    t0 = clock()
    last = await closed_loop(path, QUERY_STATUS, args.sequential, lat)
    seq = result(t0, args.sequential, lat, last)

    r, w = await connect(path)
    t0 = clock()
    w.write(b"".join(QUERY_STATUS % i for i in range(args.burst)))
    for _ in range(args.burst):
        last = await r.readline()
    pipe = result(t0, args.burst, [], last)
    w.close()

    t0 = clock()
    lasts = await asyncio.gather(*(closed_loop(server.socket_for(i), QUERY_STATUS,
                                               args.per_client, None)
                                   for i in range(args.clients)))
    conc = result(t0, args.clients * args.per_client, [], lasts[0])

    await closed_loop(path, INFO_STATUS, 100, None)
    lat = []
    t0 = clock()
    last = await closed_loop(path, INFO_STATUS, args.hmp, lat)
    hmp = result(t0, args.hmp, lat, last)
    return Round(seq, pipe, conc, hmp)


def measure_streams(server: Server, args: argparse.Namespace) -> Round:
    return asyncio.run(_streams_round(server, args))


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
    print(f"{'':44}" + "".join(f"{n:>11}" for n in names)
          + f"{'sevd/QEMU':>11}" * has_qemu + f"{'sevd/ceil':>11}")
    for label, key, kind in rows:
        values = m[key]
        line = f"{label:44}" + "".join(f"{values[n]:>11.1f}" for n in names)
        # For latencies the ratio is inverted, so that above 1 always means sevd is faster.
        ratio = (lambda a, b: a / b) if kind == "rate" else (lambda a, b: b / a)
        if has_qemu:
            line += f"{ratio(values['sevd'], values['qemu']):>10.2f}x"
        line += f"{ratio(values['sevd'], values['ceiling']):>10.2f}x"
        print(line)
    own = m["seq_med"]["sevd"] - m["seq_med"]["ceiling"]
    hmp_own = m["hmp_med"]["sevd"] - m["hmp_med"]["ceiling"]
    print(f"\nsevd's own work per round trip (median latency minus the ceiling's): "
          f"query-status {own:.1f} µs, HMP info status {hmp_own:.1f} µs")
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
    p.add_argument("--starts", type=int, default=9, help="cold starts in (e); 0 to skip")
    p.add_argument("--no-qemu", action="store_true", help="measure sevd and the ceiling only")
    args = p.parse_args()

    facts = machine_facts()
    print(f"machine: {facts['nproc']} CPUs, {facts['cpu']}; Python {facts['python']}; "
          f"{facts['qemu']}")
    print(f"client: {args.client}; {args.rounds} rounds, median round reported\n")
    measure = measure_lean if args.client == "lean" else measure_streams
    servers: list[Server] = []
    try:
        servers.append(start_sevd())
        servers.append(start_responder())
        if not args.no_qemu:
            servers.append(start_qemu(args.clients))
        rounds: dict[str, list[Round]] = {s.name: [] for s in servers}
        for i in range(args.rounds):
            for s in servers:
                rounds[s.name].append(measure(s, args))
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
