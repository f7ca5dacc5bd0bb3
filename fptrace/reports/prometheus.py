"""`fptrace agent --metrics`: the running totals as Prometheus/OpenMetrics at ``/metrics``.

prometheus-client serves the page (text format 0.0.4, or OpenMetrics when the scraper asks
for it) from its own thread; a custom collector reads the totals under the agent's lock, so
a scrape sees whole intervals only.  Metric names (docs/fleet.md):

- ``fptrace_saves_total``, ``fptrace_restores_total``, ``fptrace_bytes_saved_total``
  {cgroup, state}: since the agent started (analysis/metrics.py);
- ``fptrace_drops_total`` {kind}: what the kernel side could not count (map full, …);
- ``fptrace_parts_dropped_total``: drains not written to disk (full disk), tracing went on;
- ``fptrace_tracer_cpu_seconds_total``: the agent process's CPU time (user + system: its
  drains, rotations and scrapes; the BPF programs' own time is charged to the traced tasks);
- ``fptrace_rotations_total``, ``fptrace_intervals_total``, ``fptrace_cgroups`` {series}
  (cgroups with a series of their own, and those summed under ``other``), ``fptrace_probes``
  {kind} (attached probes by kind), ``fptrace_info`` {version, kernel, backend, host}.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fptrace.analysis.metrics import MetricTotals


@dataclass
class AgentState:
    """What the agent knows besides the counts, updated from its main thread."""

    totals: MetricTotals
    lock: threading.Lock = field(default_factory=threading.Lock)
    drops: dict[str, int] = field(default_factory=dict)  # cumulative, from the kernel
    parts_dropped: int = 0
    rotations: int = 0
    probes: dict[str, int] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)


class AgentCollector:
    """A prometheus_client collector over :class:`AgentState` (read at each scrape)."""

    def __init__(self, state: AgentState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            InfoMetricFamily,
        )

        s = self.state
        with s.lock:
            t = s.totals
            families: list[Any] = []
            for name, counters, what in (
                ("fptrace_saves", t.saves, "FPU state saves at context switch"),
                ("fptrace_restores", t.restores, "FPU state restores on return to user"),
                ("fptrace_bytes_saved", t.bytes_saved, "estimated bytes written by saves"),
            ):
                fam = CounterMetricFamily(
                    name, what + ", by cgroup and widest live state", labels=("cgroup", "state")
                )
                for labels, value in t.series(counters):
                    fam.add_metric(list(labels), value)
                families.append(fam)
            drops = CounterMetricFamily(
                "fptrace_drops", "events the kernel side could not count", labels=("kind",)
            )
            for kind, n in sorted(s.drops.items()):
                drops.add_metric([kind], n)
            families.append(drops)
            families.append(
                CounterMetricFamily(
                    "fptrace_parts_dropped",
                    "drained intervals not written to disk (full disk); metrics went on",
                    value=s.parts_dropped,
                )
            )
            families.append(
                CounterMetricFamily(
                    "fptrace_rotations", "recordings finished by rotation", value=s.rotations
                )
            )
            families.append(
                CounterMetricFamily("fptrace_intervals", "kernel maps drained", value=t.intervals)
            )
            cgroups = GaugeMetricFamily(
                "fptrace_cgroups", "cgroups seen, by how they are labelled", labels=("series",)
            )
            cgroups.add_metric(["own"], len(t.labelled))
            cgroups.add_metric(["other"], len(t.folded))
            families.append(cgroups)
            probes = GaugeMetricFamily("fptrace_probes", "attached probes", labels=("kind",))
            for kind, n in sorted(s.probes.items()):
                probes.add_metric([kind], n)
            families.append(probes)
            info = InfoMetricFamily("fptrace", "the agent and what it traces")
            info.add_metric([], dict(s.info))
            families.append(info)
        cpu = CounterMetricFamily(
            "fptrace_tracer_cpu_seconds",
            "CPU time of the agent process (user + system)",
            value=time.process_time(),
        )
        families.append(cpu)
        yield from families


def serve(state: AgentState, host: str, port: int) -> Any:
    """Start the /metrics server on ``host:port``; returns it (``shutdown()`` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(state))  # type: ignore[arg-type]
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
