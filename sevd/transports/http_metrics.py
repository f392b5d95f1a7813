"""Prometheus metrics of the daemon, with prometheus-client, read at scrape time.

The QMP hot path and the simulated firmware keep plain counters only (`App.stats`,
`SevFirmware.stats`): an integer increment per command. This module turns them into metric
families when Prometheus scrapes (a custom collector), so that serving metrics costs the QMP
side nothing between scrapes. The one instrument updated on the hot path, the command
latency histogram, exists only while the HTTP side is on (`App.wrap_handlers`).

Nothing here calls a firmware command: a scrape must not change the firmware's counters nor
consume a fault armed for a client (ASID use is KVM's bookkeeping, read from the platform).

Metric names (all prefixed `sevd_`):

======================================== ======= ==============================================
name                                     type    labels
======================================== ======= ==============================================
sevd_info                                gauge   version, qemu_version, profile
sevd_guests                              gauge   run_state, sev_state ("none": no SEV)
sevd_asids                               gauge   range ("sev", "es"), state ("used", "free")
sevd_firmware_commands_total             counter command (AMD name, e.g. LAUNCH_START)
sevd_firmware_command_failures_total     counter command, status (AMD name), code (number)
sevd_firmware_bytes_encrypted_total      counter —  (plaintext bytes written encrypted)
sevd_firmware_bytes_decrypted_total      counter —
sevd_qmp_commands_total                  counter command, result ("ok", "error")
sevd_qmp_sessions                        gauge   socket ("control", "guest")
sevd_http_event_streams                  gauge   —  (connected /api/v1/events clients)
sevd_http_requests_total                 counter handler (route), code
sevd_qmp_command_duration_seconds        histo   command (handler time, while HTTP is on)
======================================== ======= ==============================================

Must not import `sevd.domain` (DESIGN §2); the domain's state is read through the `App`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sevd import __version__

if TYPE_CHECKING:
    from sevd.commands.app import App
    from sevd.commands.registry import Ctx, Handler

# The run states a simulated guest takes (sevd.domain.guest.RunState); listed, not imported,
# because transports read the domain only through the App. A state seen at scrape time that
# is not listed still gets its series.
RUN_STATES = ("prelaunch", "running", "paused", "shutdown")
# QMP command latencies: sevd answers in tens of microseconds, launches take milliseconds.
LATENCY_BUCKETS = (0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                   0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)


class SevdCollector:
    """Reads the App's plain counters and state at scrape time."""

    def __init__(self, app: App, sev_states: list[str], sessions: Callable[[], dict[str, int]],
                 event_streams: Callable[[], int]) -> None:
        self.app = app
        self.sev_states = sev_states
        self.sessions = sessions
        self.event_streams = event_streams

    def describe(self) -> list[Metric]:
        return []  # no up-front description: registration must not scrape

    def collect(self) -> Iterator[Metric]:
        app = self.app
        plat = app.platform
        major, minor, micro = app.qemu_version
        info = GaugeMetricFamily("sevd_info", "sevd's version, emulated QEMU version and "
                                 "simulated EPYC profile", labels=["version", "qemu_version",
                                                                  "profile"])
        info.add_metric([__version__, f"{major}.{minor}.{micro}",
                         plat.profile.name if plat else "none"], 1)
        yield info

        counts: dict[tuple[str, str], int] = {
            (r, s): 0 for r in RUN_STATES for s in [*self.sev_states, "none"]}
        for slot in app.slots.values():
            g = slot.guest
            key = (g.state.value, g.sev.state.value if g.sev is not None else "none")
            counts[key] = counts.get(key, 0) + 1
        guests = GaugeMetricFamily("sevd_guests", "Guests by run state and SEV state",
                                   labels=["run_state", "sev_state"])
        for (run, sev), n in counts.items():
            guests.add_metric([run, sev], n)
        yield guests

        if plat is not None:
            asids = GaugeMetricFamily("sevd_asids", "ASIDs per range (SEV-ES: 1..EDX-1, "
                                      "SEV: EDX..ECX), used and free", labels=["range", "state"])
            for name, es in (("es", True), ("sev", False)):
                size = len(plat.asid_range(es))
                used = plat.asids_used(es)
                asids.add_metric([name, "used"], used)
                asids.add_metric([name, "free"], size - used)
            yield asids

            st = plat.fw.stats
            calls = CounterMetricFamily("sevd_firmware_commands", "SEV firmware commands "
                                        "called", labels=["command"])
            for cmd, n in sorted(st.calls.items()):
                calls.add_metric([cmd], n)
            yield calls
            fails = CounterMetricFamily("sevd_firmware_command_failures", "SEV firmware "
                                        "commands failed, by AMD status", labels=[
                                            "command", "status", "code"])
            for (cmd, status), n in sorted(st.failures.items()):
                code = app.firmware_status_code(status)
                fails.add_metric([cmd, status, "" if code is None else str(code)], n)
            yield fails
            yield CounterMetricFamily("sevd_firmware_bytes_encrypted", "Bytes the firmware "
                                      "encrypted into guest memory", value=st.bytes_encrypted)
            yield CounterMetricFamily("sevd_firmware_bytes_decrypted", "Bytes the firmware "
                                      "decrypted from guest memory", value=st.bytes_decrypted)

        qmp = CounterMetricFamily("sevd_qmp_commands", "QMP commands run (after argument "
                                  "checks), by result", labels=["command", "result"])
        stats = app.stats
        for cmd, n in sorted(stats.commands.items()):
            errors = stats.errors.get(cmd, 0)
            qmp.add_metric([cmd, "ok"], n - errors)
            qmp.add_metric([cmd, "error"], errors)
        yield qmp

        sessions = GaugeMetricFamily("sevd_qmp_sessions", "Connected QMP clients",
                                     labels=["socket"])
        for kind, n in sorted(self.sessions().items()):
            sessions.add_metric([kind], n)
        yield sessions
        yield GaugeMetricFamily("sevd_http_event_streams", "Connected /api/v1/events clients",
                                value=self.event_streams())


class Metrics:
    """The registry served at /metrics, and the instruments the HTTP side updates."""

    def __init__(self, app: App, sev_states: list[str], sessions: Callable[[], dict[str, int]],
                 event_streams: Callable[[], int]) -> None:
        # No `_created` series: they double the output and no dashboard here uses them
        # (process-wide in prometheus-client, and this process serves only these metrics).
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SevdCollector(app, sev_states, sessions, event_streams))
        self.latency = Histogram("sevd_qmp_command_duration_seconds", "Time in the QMP "
                                 "command handler (measured while the HTTP side is on)",
                                 ["command"], registry=self.registry, buckets=LATENCY_BUCKETS)
        self.requests = Counter("sevd_http_requests", "HTTP requests served",
                                ["handler", "code"], registry=self.registry)

    def timed(self, name: str, handler: Handler) -> Handler:
        """`handler`, observed into the latency histogram (for App.wrap_handlers)."""
        hist = self.latency
        child: list[Callable[[float], None]] = []

        def observe(seconds: float) -> None:
            # The labelled child is created on the first call: commands never called have
            # no series (35 commands x 18 bucket lines would bloat every scrape).
            if not child:
                child.append(hist.labels(name).observe)
            child[0](seconds)

        clock = time.perf_counter
        import inspect

        if inspect.iscoroutinefunction(handler):
            async def run_async(ctx: Ctx, args: dict[str, Any]) -> Any:
                t0 = clock()
                try:
                    return await handler(ctx, args)
                finally:
                    observe(clock() - t0)

            return run_async

        def run(ctx: Ctx, args: dict[str, Any]) -> Any:
            t0 = clock()
            try:
                result = handler(ctx, args)
            except BaseException:
                observe(clock() - t0)
                raise
            if isinstance(result, Awaitable):
                # A plain function that returned an awaitable: time until it completes.
                return _finish(result, t0, observe, clock)
            observe(clock() - t0)
            return result

        return run


async def _finish(result: Awaitable[Any], t0: float, observe: Callable[[float], None],
                  clock: Callable[[], float]) -> Any:
    try:
        return await result
    finally:
        observe(clock() - t0)
