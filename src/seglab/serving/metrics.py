"""The service's Prometheus metrics, in a registry of its own (one per app, so two services in one process,
as in the tests, never share counts)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds from a request's arrival to its answer: loopback 64 px answers take milliseconds, a queued 512 px
# batch on a CPU seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServeMetrics:
    """Requests by endpoint and status, /predict latency, images per forward pass, forward seconds, the queue's
    depth and refusals by code."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("seglab_requests", "HTTP requests answered, by endpoint and status",
                                ("endpoint", "status"), registry=self.registry)
        self.latency = Histogram("seglab_predict_latency_seconds", "POST /predict, arrival to answer",
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("seglab_batch_size", "images per forward pass", buckets=BATCH_SIZE_BUCKETS,
                                    registry=self.registry)
        self.forward_seconds = Histogram("seglab_forward_seconds", "seconds per forward pass",
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("seglab_queue_depth", "images waiting for a forward pass", registry=self.registry)
        self.rejections = Counter("seglab_rejections", "requests refused or dropped, by reason", ("reason",),
                                  registry=self.registry)

    def text(self) -> bytes:
        """All metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)
