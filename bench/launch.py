"""Benchmark of the SEV launch flow as a client sees it, and of guest density.

Starts its own daemon (``python -m sevd``) on a temporary folder and talks to it over its
unix sockets with qemu.qmp and the guest owner's package, ``sevowner``:

* **launch**: per launch, the owner's session for the PDH, ``guest-add`` (paused, built-in
  image), connect + negotiate on the guest socket, ``query-sev-launch-measure`` and
  ``query-sev``, the owner's check of the measurement, the secret packet,
  ``sev-inject-launch-secret``, ``cont``. Median and p99 over ``--launches`` launches
  (target: median <= 20 ms), with the time of each step, and beside it the same flow for a
  plain (non-SEV) guest measured in the same run (guest-add, connect, cont) as the baseline.
* **density** (Rome profile): all 509 SEV ASIDs filled by paused 4 GiB-nominal SEV guests
  with the built-in image and an owner session each (sessions made before the clock
  starts); the rate of ``guest-add``, and the daemon's RSS (``VmRSS`` in
  ``/proc/<pid>/status``) before and after (target: <= 500 MB); the 510th guest must fail
  with QEMU's init text.

No peer offers this, so the targets are absolute. Run from the repository root::

    python bench/launch.py [--launches 200] [--profile milan] [--skip-density]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import identity
from qemu.qmp import ExecuteError, QMPClient
from sevowner.measurement import expected_launch_digest, verify_launch_measurement
from sevowner.secret import build_launch_secret
from sevowner.session import LaunchSession, create_session

ROOT = Path(__file__).resolve().parents[1]
BUILTIN = ROOT / "sevd" / "data" / "sevd-builtin.fd"
SECRET_GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
CBITPOS = {"naples": 47, "rome": 47, "milan": 51, "genoa": 51}
MEDIAN_TARGET_MS = 20.0
RSS_TARGET_MB = 500.0


# -- the daemon -------------------------------------------------------------------------------


@dataclass
class Daemon:
    base: Path
    profile: str
    proc: subprocess.Popen[bytes] = field(init=False)

    @property
    def control(self) -> str:
        return str(self.base / "run" / "sevd.sock")

    def start(self) -> None:
        state = self.base / "state"
        state.mkdir(mode=0o700, parents=True)
        ident = state / f"platform-{self.profile}.identity"
        ident.write_bytes(identity(self.profile))
        ident.chmod(0o600)
        log = open(self.base / "sevd.log", "wb")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sevd", "--runtime-dir", str(self.base / "run"),
             "--state-dir", str(state), "--profile", self.profile],
            stdout=log, stderr=log, cwd=self.base)
        deadline = time.monotonic() + 30
        while not os.path.exists(self.control):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"sevd did not start: {(self.base / 'sevd.log').read_text()}")
            time.sleep(0.01)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@contextmanager
def daemon(profile: str) -> Iterator[Daemon]:
    base = Path(tempfile.mkdtemp(prefix="svb", dir="/tmp"))
    d = Daemon(base, profile)
    try:
        d.start()
        yield d
    finally:
        if hasattr(d, "proc"):
            d.stop()
        shutil.rmtree(base, ignore_errors=True)


# -- measurements -----------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    """The q-quantile by the nearest-rank method (p99 of 50 values is the largest)."""
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(len(s) * q) - 1))] if s else float("nan")


STEPS = ("session", "guest-add", "connect", "measure", "verify+secret", "inject", "cont")


async def sev_launch(control: QMPClient, pdh: bytes, cbitpos: int, name: str,
                     digest: bytes) -> dict[str, float]:
    """One launch as a management stack with its guest owner performs it; times in s."""
    t: dict[str, float] = {}
    clock = time.perf_counter
    t0 = clock()
    session: LaunchSession = create_session(pdh, 0x1)
    t1 = clock()
    info: Any = await control.execute("guest-add", {"name": name, "sev-guest": {
        "policy": 0x1, "cbitpos": cbitpos, "reduced-phys-bits": 1,
        "dh-cert": session.godh_b64, "session": session.session_b64}})
    t2 = clock()
    g = QMPClient(name)
    await g.connect(info["socket"])
    t3 = clock()
    measure: Any = await g.execute("query-sev-launch-measure")
    blob = base64.b64decode(measure["data"])
    sev: Any = await g.execute("query-sev")
    t4 = clock()
    verify_launch_measurement(blob, session.tik, api_major=sev["api-major"],
                              api_minor=sev["api-minor"], build_id=sev["build-id"],
                              policy=sev["policy"], digest=digest)
    packet = build_launch_secret(session.tek, session.tik, blob, {SECRET_GUID: b"key\x00"})
    t5 = clock()
    await g.execute("sev-inject-launch-secret", packet.qmp_arguments())
    t6 = clock()
    await g.execute("cont")
    t7 = clock()
    await g.disconnect()
    for step, (a, b) in zip(STEPS, ((t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5),
                                    (t5, t6), (t6, t7)), strict=True):
        t[step] = b - a
    t["total"] = t7 - t0
    return t


async def plain_launch(control: QMPClient, name: str) -> float:
    t0 = time.perf_counter()
    info: Any = await control.execute("guest-add", {"name": name})
    g = QMPClient(name)
    await g.connect(info["socket"])
    await g.execute("cont")
    t1 = time.perf_counter()
    await g.disconnect()
    return t1 - t0


async def bench_launch(profile: str, launches: int, warmup: int = 3) -> dict[str, Any]:
    with daemon(profile) as d:
        control = QMPClient("bench")
        await control.connect(d.control)
        caps: Any = await control.execute("query-sev-capabilities")
        pdh = base64.b64decode(caps["pdh"])
        digest = expected_launch_digest(BUILTIN.read_bytes())
        runs: list[dict[str, float]] = []
        plain: list[float] = []
        removes: list[float] = []
        for i in range(warmup + launches):
            name = f"l{i}"
            r = await sev_launch(control, pdh, CBITPOS[profile], name, digest)
            t0 = time.perf_counter()
            await control.execute("guest-remove", {"name": name})
            rm = time.perf_counter() - t0
            p = await plain_launch(control, f"p{i}")
            await control.execute("guest-remove", {"name": f"p{i}"})
            if i >= warmup:
                runs.append(r)
                plain.append(p)
                removes.append(rm)
        await control.disconnect()
    return {"runs": runs, "plain": plain, "removes": removes}


async def bench_density(memory: int = 4 << 30) -> dict[str, Any]:
    profile = "rome"
    with daemon(profile) as d:
        control = QMPClient("bench")
        await control.connect(d.control)
        plat: Any = await control.execute("query-sev-platform")
        asids = plat["asids"]["sev-max"] - plat["asids"]["sev-min"] + 1
        caps: Any = await control.execute("query-sev-capabilities")
        pdh = base64.b64decode(caps["pdh"])
        sessions = [create_session(pdh, 0x1) for _ in range(asids + 1)]
        rss0 = d.rss_mb()
        times = []
        t0 = time.perf_counter()
        for i in range(asids):
            s = sessions[i]
            a = time.perf_counter()
            await control.execute("guest-add", {"name": f"d{i}", "memory": memory, "sev-guest": {
                "policy": 0x1, "cbitpos": CBITPOS[profile], "reduced-phys-bits": 1,
                "dh-cert": s.godh_b64, "session": s.session_b64}})
            times.append(time.perf_counter() - a)
        elapsed = time.perf_counter() - t0
        rss1 = d.rss_mb()
        plat = await control.execute("query-sev-platform")
        used = plat["asids"]["sev-used"]
        s = sessions[-1]
        try:
            await control.execute("guest-add", {"name": "over", "memory": memory, "sev-guest": {
                "policy": 0x1, "cbitpos": CBITPOS[profile], "reduced-phys-bits": 1,
                "dh-cert": s.godh_b64, "session": s.session_b64}})
            over = "accepted (wrong)"
        except ExecuteError as e:
            over = str(e)
        t1 = time.perf_counter()
        for i in range(asids):
            await control.execute("guest-remove", {"name": f"d{i}"})
        removal = time.perf_counter() - t1
        await control.disconnect()
    return {"asids": asids, "used": used, "times": times, "elapsed": elapsed, "rss0": rss0,
            "rss1": rss1, "over": over, "removal": removal}


# -- report -----------------------------------------------------------------------------------

def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}; "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}")


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def report(launch: dict[str, Any] | None, density: dict[str, Any] | None,
           profile: str) -> bool:
    ok = True
    print(f"machine: {machine()}")
    if launch is not None:
        runs = launch["runs"]
        n = len(runs)
        print(f"\nlaunch flow, {profile} profile, built-in image, {n} launches (ms)")
        print(f"{'step':<18}{'median':>9}{'p99':>9}{'max':>9}")
        for step in (*STEPS, "total"):
            vals = [r[step] * 1000 for r in runs]
            print(f"{step:<18}{statistics.median(vals):>9.2f}{pct(vals, 0.99):>9.2f}"
                  f"{max(vals):>9.2f}")
        plain = [v * 1000 for v in launch["plain"]]
        rm = [v * 1000 for v in launch["removes"]]
        print(f"{'guest-remove':<18}{statistics.median(rm):>9.2f}{pct(rm, 0.99):>9.2f}"
              f"{max(rm):>9.2f}")
        print(f"{'baseline: plain':<18}{statistics.median(plain):>9.2f}"
              f"{pct(plain, 0.99):>9.2f}{max(plain):>9.2f}   (guest-add, connect, cont)")
        med = statistics.median(r["total"] for r in runs) * 1000
        good = med <= MEDIAN_TARGET_MS
        ok &= good
        print(f"SEV flow / plain flow (medians): {med / statistics.median(plain):.1f}x")
        print(f"target median <= {MEDIAN_TARGET_MS:.0f} ms: {med:.2f} ms  {verdict(good)}")
    if density is not None:
        t = [v * 1000 for v in density["times"]]
        rate = density["asids"] / density["elapsed"]
        print(f"\ndensity, rome profile: {density['asids']} paused SEV guests of 4 GiB "
              "(built-in image, owner session each)")
        print(f"{'guest-add rate':<28}{rate:>10.0f} guests/s")
        print(f"{'guest-add latency median':<28}{statistics.median(t):>10.2f} ms")
        print(f"{'guest-add latency p99':<28}{pct(t, 0.99):>10.2f} ms")
        print(f"{'ASIDs in use':<28}{density['used']:>10d}")
        print(f"{'RSS before':<28}{density['rss0']:>10.1f} MB")
        print(f"{'RSS with all guests':<28}{density['rss1']:>10.1f} MB")
        per = (density["rss1"] - density["rss0"]) * 1024 / density["asids"]
        print(f"{'RSS per guest':<28}{per:>10.1f} KiB")
        print(f"{'removing all':<28}{density['removal']:>10.2f} s")
        print(f"guest {density['asids'] + 1}: {density['over']}")
        good = density["rss1"] <= RSS_TARGET_MB
        full = density["used"] == density["asids"] and "ret=-16" in density["over"]
        ok &= good and full
        print(f"target RSS <= {RSS_TARGET_MB:.0f} MB: {density['rss1']:.1f} MB  {verdict(good)}")
        print(f"every ASID used, the next guest refused: {verdict(full)}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launches", type=int, default=200, help="timed launches (>= 20)")
    ap.add_argument("--profile", default="milan", choices=sorted(CBITPOS),
                    help="profile of the launch benchmark")
    ap.add_argument("--skip-density", action="store_true")
    ap.add_argument("--skip-launch", action="store_true")
    args = ap.parse_args()
    if args.launches < 20:
        ap.error("--launches must be at least 20")
    launch = None if args.skip_launch else asyncio.run(bench_launch(args.profile, args.launches))
    density = None if args.skip_density else asyncio.run(bench_density())
    return 0 if report(launch, density, args.profile) else 1


if __name__ == "__main__":
    sys.exit(main())
