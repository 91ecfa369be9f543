"""Prometheus metrics (exposed on /metrics), aggregated across processes when so configured.

Several processes serve one deployment: gunicorn's workers and the RQ workers. With
``PROMETHEUS_MULTIPROC_DIR`` set (to one empty folder shared by every process of a machine,
before they start), prometheus-client's multiprocess mode writes each process's values to files
there and :func:`exposition` sums them, so a scrape of any web process reports the machine's
figures, not one process's. Without it, each process reports its own (fine for one process).
Processes on several machines or containers may share the folder (one volume): each writes
files named by its host and pid. A gauge added here needs a ``multiprocess_mode`` that says how
processes combine (``livesum``, ``max``…).
"""

from __future__ import annotations

import os
import socket

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


def process_identifier(pid: int | None = None) -> str:
    """Names a process's files in the shared folder: host and pid, so containers that share
    one volume (each with its own pid 1, 2, …) never write to the same file."""
    return f"{socket.gethostname()}-{os.getpid() if pid is None else pid}"


if os.environ.get(MULTIPROCESS_DIR):  # before any metric is made: they take the value class
    values.ValueClass = values.MultiProcessValue(process_identifier)  # type: ignore[no-untyped-call]

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
    multiprocess_mode="mostrecent",  # whichever process measured last
)
AUDIT_UNSEALED = Gauge(
    "citizen_lookup_audit_unsealed_events",
    "Audit events written but not yet sealed by the sequencer",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # whichever process measured last
)
AUDIT_TREE_SIZE = Gauge(
    "citizen_lookup_audit_tree_size",
    "Events sealed into the audit trail's Merkle tree (the latest checkpoint's size)",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # whichever process measured last
)
AUDIT_SEQUENCER_HALTED = Gauge(
    "citizen_lookup_audit_sequencer_halted",
    "1 when the audit sequencer refuses to sign (the trail is not what it signed; see /readyz)",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # whichever process measured last
)
AUDIT_WITNESS_LAG_EVENTS = Gauge(
    "citizen_lookup_audit_witness_lag_events",
    "Events in signed checkpoints that a witness has not cosigned yet",
    ["witness"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
AUDIT_WITNESS_LAG_SECONDS = Gauge(
    "citizen_lookup_audit_witness_lag_seconds",
    "Age of the oldest signed checkpoint a witness has not cosigned (0 when it is up to date)",
    ["witness"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",
)
AUDIT_WITNESS_REQUESTS = Counter(
    "citizen_lookup_audit_witness_requests_total",
    "Checkpoints sent to witnesses, by witness and outcome (cosigned, down, refused, halted…)",
    ["witness", "outcome"],
    registry=REGISTRY,
)
REPLIES = Counter(
    "citizen_lookup_replies_total",
    "Replies handed to providers by the workers, by outcome (sent, retry, failed)",
    ["outcome"],
    registry=REGISTRY,
)
REPLY_SECONDS = Histogram(
    "citizen_lookup_reply_seconds",
    "From an inbound message's storage to its reply's acceptance by the provider",
    registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0),
)

CIRCUIT_STATE = Gauge(
    "citizen_lookup_connection_circuit_state",
    "Each connection's circuit as its last change left it: 0 closed, 1 half-open, 2 open",
    ["connection"],
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # whichever process changed it last
)
CIRCUIT_CHANGES = Counter(
    "citizen_lookup_connection_circuit_changes_total",
    "Changes of each connection's circuit, by the state entered",
    ["connection", "state"],
    registry=REGISTRY,
)
SENDS_IN_FLIGHT = Gauge(
    "citizen_lookup_sends_in_flight",
    "Replies being sent (claimed and not yet recorded), by connection",
    ["connection"],
    registry=REGISTRY,
    multiprocess_mode="livesum",  # every live worker's senders
)
# The read replica (CITIZEN_LOOKUP_READ_DATABASE_URL): counted only when one is configured.
LOOKUP_READS = Counter(
    "citizen_lookup_lookup_reads_total",
    "Lookups and DC NK history reads, by the database that answered (replica or primary)",
    ["database"],
    registry=REGISTRY,
)
REPLICA_FALLBACKS = Counter(
    "citizen_lookup_replica_fallbacks_total",
    "Reads meant for the replica that the primary answered (the replica failed or was down)",
    registry=REGISTRY,
)
REPLICA_UP = Gauge(
    "citizen_lookup_replica_up",
    "1 while lookups read the replica, 0 while they fall back to the primary",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # whichever process saw it last
)
REPLICA_LAG_SECONDS = Gauge(
    "citizen_lookup_replica_lag_seconds",
    "The replica's replay lag, measured at scrape time (NaN while it is down)",
    registry=REGISTRY,
    multiprocess_mode="mostrecent",  # whichever process measured last
)


def multiprocess_enabled() -> bool:
    return bool(os.environ.get(MULTIPROCESS_DIR))


def exposition() -> bytes:
    """The text a scrape gets: every process's values summed in multiprocess mode."""
    if not multiprocess_enabled():
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return generate_latest(registry)


def process_exited(pid: int) -> None:
    """Forget a finished process's live gauges (its counters stay in the sums)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(process_identifier(pid))  # type: ignore[no-untyped-call]
