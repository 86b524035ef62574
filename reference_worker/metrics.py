"""Prometheus metrics for GET /metrics (M0-W-1350), on a registry owned by one worker.

Every metric carries a `quant_kind` label so dashboards can tell models apart.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Milliseconds, from one fast token to the spec's default 300 s timeout.
_DURATION_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000, 300000)


class WorkerMetrics:
    """The M0 basic metric set: VRAM bytes, requests by outcome, tokens, latency, uptime."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, quant_kind: str, vram_bytes: int):
        self.registry = CollectorRegistry()
        labels = ["quant_kind"]
        self._quant_kind = quant_kind
        self._started = time.monotonic()
        self._vram = Gauge("worker_vram_bytes", "VRAM bytes in use by the worker",
                           labels, registry=self.registry).labels(quant_kind)
        self._requests = Counter("worker_requests", "Execute requests by outcome",
                                 ["outcome", *labels], registry=self.registry)
        self._tokens = Counter("worker_tokens_generated", "Output tokens generated",
                               labels, registry=self.registry).labels(quant_kind)
        self._duration = Histogram("worker_inference_duration_ms", "Inference duration in milliseconds",
                                   labels, buckets=_DURATION_BUCKETS_MS,
                                   registry=self.registry).labels(quant_kind)
        Gauge("worker_uptime_seconds", "Seconds since the worker started", labels,
              registry=self.registry).labels(quant_kind).set_function(self.uptime_seconds)
        self._vram.set(vram_bytes)

    def uptime_seconds(self) -> float:
        return time.monotonic() - self._started

    def record_request(self, outcome: str) -> None:
        """Count one execute request; `outcome` is "success" or a lower-cased error code."""
        self._requests.labels(outcome, self._quant_kind).inc()

    def record_inference(self, tokens_out: int, duration_ms: float, vram_bytes: int) -> None:
        self._tokens.inc(tokens_out)
        self._duration.observe(duration_ms)
        self._vram.set(vram_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
