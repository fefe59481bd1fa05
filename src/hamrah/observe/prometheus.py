"""Prometheus exposition (``/metrics``) of a server's telemetry and round records (``prometheus_client``).

Counters come from :class:`hamrah.observe.telemetry.Telemetry` (check-ins, answers to check-ins,
reports by status, refusals by reason, bytes each way); round phase times, the round count and
epsilon come from the committed round records. Everything is computed when Prometheus scrapes, in
the scraping thread, so the server's event loop pays nothing for the exporter beyond the telemetry
counters themselves.

Metric names (all prefixed ``hamrah_``): ``checkins_total``, ``selections_total{outcome}``,
``reports_total{status}``, ``refusals_total{reason}``, ``bytes_total{direction}``,
``round_phase_seconds{phase}`` (histogram), ``rounds_committed``, ``epsilon_spent``,
``devices_connected``, ``devices_known``, ``live_round{count}``.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from hamrah.observe.runs import epsilon_of, phases_of
from hamrah.observe.telemetry import Telemetry

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def phase_histograms(
    records: Iterable[dict], buckets: tuple[float, ...] = PHASE_BUCKETS
) -> dict[str, tuple[list[int], float, int]]:
    """Return, per phase, (cumulative counts per bucket upper bound, sum, count) over ``records``.

    Args:
        records: round records (``hamrah.observe.runs.phases_of`` reads their phase times).
        buckets: increasing upper bounds (seconds); +Inf is implied.
    """
    raw: dict[str, tuple[list[int], float, int]] = {}
    for rec in records:
        for phase, seconds in phases_of(rec).items():
            counts, total, n = raw.get(phase) or ([0] * (len(buckets) + 1), 0.0, 0)
            counts[bisect.bisect_left(buckets, seconds)] += 1
            raw[phase] = (counts, total + seconds, n + 1)
    out = {}
    for phase, (counts, total, n) in raw.items():
        cum, run = [], 0
        for c in counts:
            run += c
            cum.append(run)
        out[phase] = (cum, total, n)
    return out


class TelemetryCollector:
    """A ``prometheus_client`` collector over a telemetry registry and a source of round records.

    Args:
        telemetry: the live counters (None: a finished run's folder, records only).
        records: returns the committed round records so far.
    """

    def __init__(self, telemetry: Telemetry | None, records: Callable[[], list[dict]]):
        self.telemetry, self.records = telemetry, records

    def collect(self):
        if self.telemetry is not None:
            yield from self._counters(self.telemetry.snapshot(max_devices=0))
        recs = self.records()
        hist = HistogramMetricFamily("hamrah_round_phase_seconds", "Time of each round phase", labels=["phase"])
        for phase, (cum, total, _n) in sorted(phase_histograms(recs).items()):
            bounds = [str(b) for b in PHASE_BUCKETS] + ["+Inf"]
            hist.add_metric([phase], list(zip(bounds, cum)), total)
        yield hist
        yield GaugeMetricFamily("hamrah_rounds_committed", "Rounds committed", value=len(recs))
        eps = next((e for e in (epsilon_of(r) for r in reversed(recs)) if e is not None), None)
        if eps is not None:
            yield GaugeMetricFamily("hamrah_epsilon_spent", "Differential-privacy epsilon spent so far", value=eps)

    @staticmethod
    def _counters(snap: dict):
        c = snap["counters"]
        yield CounterMetricFamily("hamrah_checkins", "Device check-ins", value=c.get("checkins", {}).get("", 0))
        for name, label, doc in (
            ("selections", "outcome", "Answers to check-ins"),
            ("reports", "status", "Reports by status"),
            ("refusals", "reason", "Refused calls by reason"),
            ("bytes", "direction", "Bytes moved (up: to the server)"),
        ):
            fam = CounterMetricFamily(f"hamrah_{name}", doc, labels=[label])
            for value, n in sorted(c.get(name, {}).items()):
                fam.add_metric([value], n)
            yield fam
        yield GaugeMetricFamily("hamrah_devices_connected", "Devices seen recently", value=snap["connected"])
        yield GaugeMetricFamily("hamrah_devices_known", "Devices in the telemetry table", value=snap["known_devices"])
        live = GaugeMetricFamily("hamrah_live_round", "The running round's counts", labels=["count"])
        for key, n in snap["live"].items():
            live.add_metric([key], n)
        yield live


def exposition(collector: TelemetryCollector) -> bytes:
    """Return the Prometheus text exposition of ``collector`` (a private registry: nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "PHASE_BUCKETS", "TelemetryCollector", "exposition", "phase_histograms"]
