"""What the hub counts for Prometheus (``/metrics`` on the HTTP port).

Every metric lives in the hub's own registry (several hubs can share a process in
tests). Labels are bounded: a connection's kind is one of :data:`KINDS` or
``other``; a channel label names at most :data:`MAX_CHANNEL_LABELS` channels, later
ones count as ``other``; per-agent figures are in ``wsbus status``, never labels.
What the hot paths count (events in and out, deliveries, latencies) is plain
Python arithmetic, a fraction of a microsecond, exported by a collector of
prometheus_client when scraped; the rest are prometheus_client's own metrics.
The gauges that need the store or the engine (pending deliveries, engine lag, store
size) are refreshed when scraped, at most every :data:`REFRESH` seconds.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from .session import Session
from .store import ReceiptRecord

__all__ = ["CONTENT_TYPE_LATEST", "KINDS", "MAX_CHANNEL_LABELS", "HubMetrics"]

# the ``_created`` series say when a counter began: the process's start time says it
disable_created_metrics()  # type: ignore[no-untyped-call]

#: connection kinds with a label of their own (``hello.kind``); others count as ``other``
KINDS = ("agent", "human", "bridge", "relay")
#: channels with a label of their own, first come first labelled
MAX_CHANNEL_LABELS = 100
#: seconds a scrape reuses the gauges the store and the engine answer
REFRESH = 5.0
#: the reasons an authentication or authorization failure is counted under
AUTH_REASONS = ("unauthorized", "forbidden", "origin", "host")

#: a bridge's receipt that says the message did not reach the pane
BRIDGE_FAILURES = ("unsubmitted", "failed", "session_down")

log = logging.getLogger("wsbus.hub")

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def kind_label(session: Session) -> str:
    kind = session.info.get("kind")
    return kind if kind in KINDS else "other"


class Count:
    """A counter on a hot path: a plain int (no lock: the hub is one thread), read by
    :class:`_HotPath` when scraped."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


class ChannelCounts:
    """Counts per channel on a hot path, at most ``limit`` channels by name; the rest
    are counted as ``other``."""

    __slots__ = ("by_channel", "limit", "other")

    def __init__(self, limit: int) -> None:
        self.by_channel: dict[str, int] = {}
        self.limit = limit
        self.other = 0

    def inc(self, channel: str, amount: int = 1) -> None:
        counts = self.by_channel
        if channel in counts:
            counts[channel] += amount
        elif len(counts) < self.limit:
            counts[channel] = amount
        else:
            self.other += amount


class Buckets:
    """A histogram on a hot path: counts per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value


class _HotPath(Collector):
    """Exports the hot-path figures of a :class:`HubMetrics` in the text format."""

    def __init__(self, m: HubMetrics) -> None:
        self.m = m

    def describe(self) -> Iterable[Metric]:
        return self.collect()

    def collect(self) -> Iterable[Metric]:
        m = self.m
        for name, doc, counts in (
            ("wsbus_events_in", "Sends this hub committed", m.events_in),
            ("wsbus_events_out", "Events this hub fanned out (from any hub)", m.events_out),
        ):
            family = CounterMetricFamily(name, doc, labels=["channel"])
            for channel, value in counts.by_channel.items():
                family.add_metric([channel], value)
            family.add_metric(["other"], counts.other)
            yield family
        yield CounterMetricFamily(
            "wsbus_deliveries",
            "Event frames written to connections (fan-out, and replays on (re)connect)",
            value=m.deliveries.value,
        )
        for name, doc, hist in (
            (
                "wsbus_delivery_latency_seconds",
                "An event's commit stamp to its fan-out on this hub",
                m.delivery_latency,
            ),
            ("wsbus_commit_seconds", "One batch's commit to the store or engine", m.commit_seconds),
        ):
            cumulative, running = [], 0
            for bound, count in zip((*hist.bounds, math.inf), hist.counts, strict=True):
                running += count
                cumulative.append((floatToGoString(bound), running))  # type: ignore[no-untyped-call]
            yield HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=hist.sum)


class HubMetrics:
    """The hub's counters, gauges and histograms, and the text Prometheus scrapes."""

    def __init__(self, *, max_channel_labels: int = MAX_CHANNEL_LABELS) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.info = Gauge(
            "wsbus_info", "The hub: version, engine, id", ["version", "engine", "hub"], registry=r
        )
        self.healthy = Gauge(
            "wsbus_healthy", "1: the hub stores sends; 0: degraded (store or engine)", registry=r
        )
        self.connections = Gauge(
            "wsbus_connections", "Open websocket connections by hello.kind", ["kind"], registry=r
        )
        for kind in (*KINDS, "other"):
            self.connections.labels(kind)
        #: the hot paths' figures: plain counting, exported by ``_HotPath``
        self.events_in = ChannelCounts(max_channel_labels)
        self.events_out = ChannelCounts(max_channel_labels)
        self.deliveries = Count()
        self.delivery_latency = Buckets(_LATENCY_BUCKETS)
        self.commit_seconds = Buckets(_LATENCY_BUCKETS)
        r.register(_HotPath(self))
        self.slow_consumers = Counter(
            "wsbus_slow_consumer_disconnects",
            "Connections closed for not reading (4008)",
            registry=r,
        )
        self.auth_failures = Counter(
            "wsbus_auth_failures",
            "Refused tokens, names, channels, origins, hosts",
            ["reason"],
            registry=r,
        )
        for reason in AUTH_REASONS:
            self.auth_failures.labels(reason)
        self.rate_limited = Counter(
            "wsbus_rate_limited",
            "Frames or requests over a rate limit",
            ["transport"],
            registry=r,
        )
        for transport in ("websocket", "http"):
            self.rate_limited.labels(transport)
        self.longpolls = Gauge("wsbus_longpolls_pending", "Blocking GET /recv waiting", registry=r)
        self.receipts = Counter(
            "wsbus_receipts", "Receipts this hub took, by status", ["status"], registry=r
        )
        self.bridge_injections = Counter(
            "wsbus_bridge_injections",
            "Receipts from bridge connections: what a delivery into a pane came to",
            ["outcome"],
            registry=r,
        )
        self.pending = Gauge(
            "wsbus_pending_deliveries",
            "Direct messages waiting for a final receipt (per agent: wsbus status)",
            registry=r,
        )
        self.engine_lag = Gauge(
            "wsbus_engine_lag_events",
            "Events in the engine's stream not yet indexed by this hub (NATS only)",
            registry=r,
        )
        self.store_bytes = Gauge("wsbus_store_bytes", "The store's files on disk", registry=r)
        self._kinds: dict[Session, str] = {}
        self._refreshed = 0.0

    # -- the hot paths

    def connected(self, session: Session) -> None:
        kind = self._kinds[session] = kind_label(session)
        self.connections.labels(kind).inc()

    def disconnected(self, session: Session) -> None:
        kind = self._kinds.pop(session, None)
        if kind is not None:
            self.connections.labels(kind).dec()

    def acked(self, session: Session, record: ReceiptRecord) -> None:
        """A receipt this hub took; a bridge's is the outcome of a delivery into a
        pane, and one that did not arrive is logged."""
        self.receipts.labels(record.status).inc()
        if session.info.get("kind") != "bridge":
            return
        self.bridge_injections.labels(record.status).inc()
        if record.status in BRIDGE_FAILURES:
            log.info(
                "bridge delivery failed seq=%d to=%s channel=%s status=%s reason=%s",
                record.seq,
                record.name,
                record.channel,
                record.status,
                record.reason or "-",
                extra={"event": "bridge_failure", "session": session.id},
            )

    def rate_limited_on(self, transport: str) -> None:
        self.rate_limited.labels(transport).inc()

    def auth_failed(self, reason: str, peer: str = "", where: str = "", why: str = "") -> None:
        """Count a refusal; with ``where`` (a refusal before any hello: the HTTP port,
        the websocket upgrade), also log it (a refused hello is logged by the hub)."""
        reason = reason if reason in AUTH_REASONS else "unauthorized"
        self.auth_failures.labels(reason).inc()
        if where:
            log.info(
                "auth failure reason=%s peer=%s on=%s: %s",
                reason,
                peer or "-",
                where,
                why,
                extra={"event": "auth_failure"},
            )

    # -- the scrape

    async def refresh(self, gauges: Callable[[], Awaitable[None]]) -> None:
        """Run ``gauges`` (which sets the store's and engine's gauges) unless it ran
        less than :data:`REFRESH` seconds ago."""
        now = time.monotonic()
        if now - self._refreshed < REFRESH:
            return
        self._refreshed = now
        await gauges()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return generate_latest(self.registry)
