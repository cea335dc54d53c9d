"""The worker's Prometheus metrics (scraped from ACCRUAL_METRICS_PORT)."""
from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

MESSAGES = Counter(
    "accrual_messages_total", "Inbound messages by outcome (applied, duplicate, held, not_eligible, rejected)",
    ["outcome"], registry=REGISTRY,
)
REJECTED = Counter("accrual_rejected_total", "Rejected inbound messages by reason", ["reason"], registry=REGISTRY)
BATCH_SIZE = Histogram(
    "accrual_batch_messages", "Messages per applied batch",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000), registry=REGISTRY,
)
BATCH_SECONDS = Histogram(
    "accrual_batch_seconds", "Time to apply a batch and commit it (database and offsets)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY,
)
VISIBLE_SECONDS = Histogram(
    "accrual_visible_seconds",
    "From a record's producer timestamp to its batch's commit (events and inbox; the read models follow "
    "in their own process)",
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2, 5, 10, 30, 60),
    registry=REGISTRY,
)
STORE_COMMIT_SECONDS = Histogram(
    "accrual_store_commit_seconds",
    "Time of a batch's insert and commit on PostgreSQL (the event-table lock is held for part of it)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1), registry=REGISTRY,
)
LAG = Gauge("accrual_consumer_lag", "Messages behind the end of each assigned partition", ["topic", "partition"],
            registry=REGISTRY)
PUBLISHED = Counter("accrual_published_total", "Records published to the outbound topics", ["topic"],
                    registry=REGISTRY)
PUBLISH_POSITION = Gauge("accrual_publisher_position", "Event-log position the publisher has published up to",
                         registry=REGISTRY)
LEADER = Gauge("accrual_leader", "1 when this worker runs the publisher and the daily tick", registry=REGISTRY)
STORE_AVAILABLE = Gauge("accrual_store_available",
                        "1 while the worker's last use of the store succeeded, 0 during an outage", registry=REGISTRY)
TICKS = Counter("accrual_ticks_total", "Daily ticks run by this worker", registry=REGISTRY)
TICK_HELD = Counter("accrual_tick_held_total",
                    "Checks that held a due daily tick back, by reason (lagging, lag_unknown)", ["reason"],
                    registry=REGISTRY)
TICK_WAITED = Gauge("accrual_tick_waited_seconds",
                    "How long the due daily tick has been held back (0 when it is not waiting)", registry=REGISTRY)


def serve(port: int, host: str, health: Any) -> None:
    """/metrics, /healthz and /readyz on `host:port` (accrual/health.py)."""
    from accrual import health as endpoint

    endpoint.serve(port, host, health, REGISTRY)
