"""A node's metrics: counters, latency histograms and gauges in a ``prometheus_client`` registry of
the node's own, exposed at ``GET /metrics``.

Every metric is declared here, with its help text and label names, so ``/metrics`` describes itself
and ``docs/operating.md`` can list what exists. Each :class:`Metrics` has its own
:class:`~prometheus_client.CollectorRegistry` (never the library's global one), so two nodes in one
process count separately.

    metrics = Metrics(process=True)           # with process_* and python_* metrics
    metrics.inc("crdtmem_frames_resent_total", peer="laptop")
    with metrics.timer("crdtmem_apply_seconds", source="push"):
        ...
    body, content_type = metrics.exposition(request.headers.get("Accept"))

Hazard: a label value becomes a separate time series. Label only with bounded values (status codes,
error classes, replica ids that passed validation), never with paths, memory ids or user input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

Labels = tuple[tuple[str, str], ...]

COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "crdtmem_http_requests_total": ("HTTP responses, by status code", ("status",)),
    "crdtmem_http_errors_total": ("HTTP requests refused with a crdtmem error, by error class", ("code",)),
    "crdtmem_auth_failures_total": ("requests without a valid bearer token", ()),
    "crdtmem_rate_limited_total": ("writes refused with 429, by principal", ("principal",)),
    "crdtmem_deltas_sent_total": ("deltas pushed to a peer over a replication link", ("peer",)),
    "crdtmem_deltas_received_total": ("deltas received from a peer's link and applied", ("peer",)),
    "crdtmem_frames_sent_total": (
        "deltas frames pushed; source=listener: by the commit listener itself, commit: by the sender"
        " from committed deltas, log: read from the log",
        ("peer", "source"),
    ),
    "crdtmem_pull_deltas_total": ("deltas served to pull requests", ()),
    "crdtmem_compactions_total": ("compactions of the log run by the node's interval", ()),
    "crdtmem_compaction_errors_total": ("compactions (or stream folds) that failed unexpectedly", ()),
    "crdtmem_frames_rejected_total": ("inbound frames refused, by error class", ("reason",)),
    "crdtmem_deltas_rejected_total": (
        "deltas of a link's frame that failed their checks and were rejected while the rest applied",
        ("peer",),
    ),
    "crdtmem_deltas_unauthenticated_total": (
        "deltas of a link's frame refused because the peer may not introduce their origin",
        ("peer",),
    ),
    "crdtmem_frames_resent_total": ("frames re-exported after an acknowledgement timeout", ("peer",)),
    "crdtmem_frames_refused_by_peer_total": ("our frames the peer answered with an error", ("reason",)),
    "crdtmem_peers_moved_to_pull_total": ("slow peers switched to pull mode", ("peer",)),
    "crdtmem_told_to_pull_total": ("times a peer told this node to catch up by pulling", ("peer",)),
    "crdtmem_peer_errors_total": ("outbound peer connection failures, by error class", ("peer", "kind")),
    "crdtmem_peer_waits_total": ("pulls a peer answered 429 to, waited out and sent again", ("peer",)),
    "crdtmem_ws_connections_total": ("replication WebSockets opened, as server or client", ("side",)),
    "crdtmem_event_streams_total": ("event feed streams opened, by transport (sse, ws)", ("transport",)),
    "crdtmem_event_overflows_total": ("event feed streams dropped for falling behind", ("transport",)),
    "crdtmem_bus_published_total": ("log entries published to the NATS bus and acknowledged by it", ()),
    "crdtmem_bus_publish_duplicates_total": (
        "log entries published to the bus that it already held (deduplicated by message id)",
        (),
    ),
    "crdtmem_bus_publish_errors_total": ("publishes the bus did not acknowledge, by error class", ("kind",)),
    "crdtmem_bus_deltas_applied_total": ("deltas received from the bus and applied", ()),
    "crdtmem_bus_duplicates_total": ("deltas received from the bus that were stored here already", ()),
    "crdtmem_bus_messages_refused_total": (
        "bus messages not applied (malformed, wrong subject, refused), by error class",
        ("reason",),
    ),
    "crdtmem_bus_connects_total": ("connections to the bus established", ()),
    "crdtmem_bus_errors_total": ("bus sessions that ended in an error, by error class", ("kind",)),
    "crdtmem_bus_states_fetched_total": ("catch-ups from states another node served over the bus", ()),
    "crdtmem_bus_states_failures_total": ("attempts to catch up from states that no node could serve", ()),
    "crdtmem_bus_states_requests_total": ("states requests from other nodes answered here", ()),
    "crdtmem_bus_requests_refused_total": (
        "states and pull requests from other nodes refused (TooManyRequests: over their rate), by op",
        ("op", "reason"),
    ),
    "crdtmem_bus_pull_requests_total": ("pull offers and pages asked of this node by other nodes", ()),
    "crdtmem_bus_pulled_deltas_total": ("deltas this node served in pull pages to other nodes", ()),
    "crdtmem_bus_pulled_total": ("pulls since this node's version vectors over the bus", ()),
    "crdtmem_bus_folded_messages_total": ("stream messages folded behind every node's consumer", ()),
    "crdtmem_bus_erased_messages_total": ("stream messages of forgotten memories replaced by stubs", ()),
}

HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "crdtmem_write_seconds": (
        "REST writes (create, update, delete, resolve) from request to durable acknowledgement; "
        "successful ones only",
        ("op",),
    ),
    "crdtmem_apply_seconds": (
        "applying a remote payload and committing it; source=link (pushed frame), pull, push (HTTP), bus",
        ("source",),
    ),
    "crdtmem_push_seconds": (
        "a pushed deltas frame from sending to the peer's acknowledgement (its durable apply included)",
        ("peer",),
    ),
    "crdtmem_search_seconds": ("REST searches, from request to response; successful ones only", ()),
}

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CHILDREN_AT_MOST = 10_000
"""Labelled metric children kept for the next call (:meth:`Metrics.inc`)."""


class Metrics:
    """The metrics of one node, in a registry of its own.

    Args:
        process: also collect the process's CPU, memory and file descriptors (``process_*``), the
            Python version (``python_info``) and garbage collection (``python_gc_*``), as
            ``prometheus_client`` defines them.
    """

    def __init__(self, *, process: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._counters: dict[str, Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._children: dict[tuple[object, ...], Any] = {}
        for name, (_, labels) in COUNTERS.items():
            self._counter(name, labels)
        for name, (_, labels) in HISTOGRAMS.items():
            self._histogram(name, labels)
        if process:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            if GC_COLLECTOR is not None:
                GCCollector(registry=self.registry)

    # -- counting ------------------------------------------------------------------------------

    def inc(self, name: str, amount: float = 1, **labels: str) -> None:
        """Add ``amount`` to the counter ``name`` (declared in :data:`COUNTERS`)."""
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:
            counter = self._counters.get(name) or self._counter(name, tuple(sorted(labels)))
            child = self._child(key, counter.labels(**labels) if labels else counter)
        child.inc(amount)

    def observe(self, name: str, seconds: float, **labels: str) -> None:
        """Record one duration in the histogram ``name`` (declared in :data:`HISTOGRAMS`)."""
        key = (name, *labels.items())
        child = self._children.get(key)
        if child is None:
            histogram = self._histograms.get(name) or self._histogram(name, tuple(sorted(labels)))
            child = self._child(key, histogram.labels(**labels) if labels else histogram)
        child.observe(seconds)

    def _child(self, key: tuple[object, ...], child: Any) -> Any:
        """Keep a metric's labelled child for the next call: ``labels()`` validates and locks on
        every call, and the hot paths count with the same few labels (bounded: the children are
        forgotten, not the counts, when they grow past :data:`CHILDREN_AT_MOST`)."""
        if len(self._children) >= CHILDREN_AT_MOST:
            self._children.clear()
        self._children[key] = child
        return child

    @contextmanager
    def timer(self, name: str, **labels: str) -> Iterator[None]:
        """Observe how long the block took, if it finished without an exception."""
        started = time.perf_counter()
        yield
        self.observe(name, time.perf_counter() - started, **labels)

    def gauge(self, name: str, text: str, read: Callable[[], Iterable[tuple[Labels, float]]]) -> None:
        """A gauge read at every scrape: ``read()`` yields ``(labels, value)`` pairs."""
        self.registry.register(_GaugeCollector(name, text, read))

    # -- reading -------------------------------------------------------------------------------

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 if it was never counted)."""
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def total(self, name: str) -> float:
        """The sum of a counter's samples over every label value."""
        return sum(
            sample.value
            for family in self.registry.collect()
            for sample in family.samples
            if sample.name == name
        )

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """The registry in the format ``accept`` asks for (OpenMetrics or the Prometheus text
        format), and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type

    # -- declaring -----------------------------------------------------------------------------

    def _counter(self, name: str, labels: tuple[str, ...]) -> Counter:
        text, declared = COUNTERS.get(name, (f"{name} (undeclared)", labels))
        counter = Counter(name, text, declared, registry=self.registry)
        self._counters[name] = counter
        return counter

    def _histogram(self, name: str, labels: tuple[str, ...]) -> Histogram:
        text, declared = HISTOGRAMS.get(name, (f"{name} (undeclared)", labels))
        histogram = Histogram(name, text, declared, registry=self.registry, buckets=LATENCY_BUCKETS)
        self._histograms[name] = histogram
        return histogram


class _GaugeCollector(Collector):
    def __init__(self, name: str, text: str, read: Callable[[], Iterable[tuple[Labels, float]]]):
        self.name = name
        self.text = text
        self.read = read

    def describe(self) -> list[Metric]:
        return [GaugeMetricFamily(self.name, self.text)]

    def collect(self) -> list[Metric]:
        samples = list(self.read())
        names = [key for key, _ in samples[0][0]] if samples else []
        family = GaugeMetricFamily(self.name, self.text, labels=names)
        for labels, value in samples:
            family.add_metric([v for _, v in labels], value)
        return [family]
