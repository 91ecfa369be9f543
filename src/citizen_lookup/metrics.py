"""Prometheus metrics of this process (exposed on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

WEBHOOK_REQUESTS = Counter(
    "citizen_lookup_webhook_requests_total",
    "Webhook requests by route and HTTP status",
    ["route", "status"],
    registry=REGISTRY,
)
INBOUND_STORED = Counter(
    "citizen_lookup_inbound_stored_total",
    "Inbound messages stored, by connection kind",
    ["kind"],
    registry=REGISTRY,
)
ENQUEUE_FAILURES = Counter(
    "citizen_lookup_enqueue_failures_total",
    "Stored messages that could not be queued at once (Redis unreachable); the sweeper queues them",
    registry=REGISTRY,
)
WEBHOOK_SECONDS = Histogram(
    "citizen_lookup_webhook_seconds",
    "Time to answer a webhook request",
    ["route"],
    registry=REGISTRY,
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
AUDIT_LAG_SECONDS = Gauge(
    "citizen_lookup_audit_lag_seconds",
    "Age of the oldest audit event not yet sealed into the tree (0 when all are sealed)",
    registry=REGISTRY,
)
AUDIT_UNSEALED = Gauge(
    "citizen_lookup_audit_unsealed_events",
    "Audit events written but not yet sealed by the sequencer",
    registry=REGISTRY,
)
AUDIT_TREE_SIZE = Gauge(
    "citizen_lookup_audit_tree_size",
    "Events sealed into the audit trail's Merkle tree (the latest checkpoint's size)",
    registry=REGISTRY,
)
