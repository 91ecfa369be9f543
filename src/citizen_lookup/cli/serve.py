"""`citizen-lookup serve` (development server) and `citizen-lookup worker` (RQ worker).

Why a non-forking worker: a forking RQ worker forks once per job, which costs milliseconds and
throws away the database pool and Redis connections each time. ``SimpleWorker`` runs jobs in
its own process and keeps them; ``rq_worker.SendingWorker`` runs many at once in sender threads
(a reply waits on its provider for most of its life), fairly across connections; run as many
worker processes as cores.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import click

from citizen_lookup.cli import pass_runtime
from citizen_lookup.logging_setup import configure_logging
from citizen_lookup.metrics import (
    AUDIT_SEQUENCER_HALTED,
    AUDIT_WITNESS_REQUESTS,
    process_exited,
)
from citizen_lookup.rq_worker import SendingWorker
from citizen_lookup.runtime import Runtime
from citizen_lookup.services.audit.cosigning import Cosigner, WitnessEndpoint
from citizen_lookup.services.audit.sequencer import SequencerHalted
from citizen_lookup.services.refusals import write_due_summaries
from citizen_lookup.settings import Settings
from citizen_lookup.startup import describe_backends, remove_dev_server, write_dev_server
from citizen_lookup.sweeper import Sweeper, sweep_unqueued

log = logging.getLogger(__name__)


def _configure_logging(runtime: Runtime) -> None:
    configure_logging(runtime.settings.log_format)


def _start_sweeper(runtime: Runtime, stop: threading.Event) -> threading.Thread:
    """Queue stored-but-unqueued messages periodically, beside the worker's own scheduler."""
    every = runtime.settings.sweep_interval_seconds
    from flask import current_app

    app_context = current_app._get_current_object().app_context  # type: ignore[attr-defined]

    sweeper = Sweeper(runtime)

    def loop() -> None:
        with app_context():
            while not stop.wait(every):
                try:
                    sweeper.run_once()
                    # Refusal summaries of minutes with no later refusal to write them.
                    write_due_summaries(runtime.refusals, runtime.session_factory, runtime.audit)
                except Exception as exc:  # a sweep that fails (Redis down) is retried next round
                    log.warning("sweep failed (%s); retrying in %.0f s", type(exc).__name__, every)

    thread = threading.Thread(target=loop, name="sweeper", daemon=True)
    thread.start()
    return thread


def _start_sequencer(runtime: Runtime, stop: threading.Event) -> threading.Thread:
    """Seal committed audit events into the tree within a second (one sequencer at a time
    across all machines holds the lock; the others find it taken and wait for the next round)."""
    every = runtime.settings.audit_seal_interval_seconds
    batch = runtime.settings.audit_seal_batch_size

    def loop() -> None:
        failures = 0
        while not stop.wait(every if failures == 0 else min(30.0, every * 2**failures)):
            try:
                runtime.audit.seal_all(runtime.session_factory, batch_size=batch)
                failures = 0
                AUDIT_SEQUENCER_HALTED.set(0)
            except SequencerHalted as exc:  # logged and recorded where it was found; signs nothing
                AUDIT_SEQUENCER_HALTED.set(1)
                if failures == 0:
                    log.error("audit sequencer halted: %s", exc)
                failures = min(failures + 1, 6)
            except Exception as exc:  # database down: try again, backing off, and say so once
                if failures == 0:
                    log.warning("audit sealing failed (%s); retrying", type(exc).__name__)
                failures = min(failures + 1, 6)

    thread = threading.Thread(target=loop, name="audit-sequencer", daemon=True)
    thread.start()
    cosigner = runtime.cosigner
    for endpoint in cosigner.endpoints if cosigner is not None else ():
        # One thread per witness: one that is down or slow delays only its own cosignatures.
        threading.Thread(
            target=_cosign_loop, args=(cosigner, endpoint, every, stop), daemon=True
        ).start()
    return thread


def _cosign_loop(cosigner: Cosigner, endpoint: WitnessEndpoint, every: float, stop: Any) -> None:
    while not stop.wait(every):
        try:
            outcome = cosigner.submit(endpoint)
        except Exception as exc:  # the database is down: the next round tries again
            log.warning("witness %s round failed (%s)", endpoint.name, type(exc).__name__)
            continue
        if outcome.detail != "backing off":
            AUDIT_WITNESS_REQUESTS.labels(witness=endpoint.name, outcome=outcome.status).inc()


@click.command("worker")
@click.option("--burst", is_flag=True, help="Drain the queues (and due retries), then exit.")
@pass_runtime
def worker(runtime: Runtime, burst: bool) -> None:
    """Run a non-forking RQ worker with its scheduler (and the outbox sweeper)."""
    _configure_logging(runtime)
    log.info("worker process %s: %s", os.getpid(), describe_backends(runtime.settings))
    runtime.checkpoint_signer  # noqa: B018 (a missing or unreadable signing key stops us here)
    runtime.witnesses  # noqa: B018 (so does a witness list that cannot be read)
    stop = threading.Event()
    if burst:
        sweep_unqueued(runtime, older_than_seconds=0)
    else:
        _start_sweeper(runtime, stop)
        _start_sequencer(runtime, stop)
    # Maintenance (cleaning registries of abandoned jobs, restarting a scheduler that died with
    # a lost Redis connection) every minute rather than RQ's default ten.
    from flask import current_app

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    rq_worker = SendingWorker(runtime, app.app_context, maintenance_interval=60)
    try:
        rq_worker.work(burst=burst, with_scheduler=True, logging_level="INFO")
    finally:
        stop.set()
        process_exited(os.getpid())
    if burst:  # leave what this run wrote sealed
        try:
            runtime.audit.seal_all(
                runtime.session_factory, batch_size=runtime.settings.audit_seal_batch_size
            )
        except SequencerHalted as exc:
            raise click.ClickException(f"the audit sequencer refuses to sign: {exc}") from exc


# Recognised in --host (a server bound to all of them is reached on loopback), never bound here.
ALL_INTERFACES = frozenset({"0.0.0.0", "::", ""})  # noqa: S104


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--worker/--no-worker",
    "with_worker",
    default=True,
    show_default=True,
    help="Also run an RQ worker process beside the server.",
)
@pass_runtime
def serve(runtime: Runtime, host: str, port: int, with_worker: bool) -> None:
    """Development server (use gunicorn in production), with a worker beside it.

    While it runs, instance/dev-server.json says where it listens, so commands in another
    terminal (`simulate`, `connections add`) reach it without --url, on any --port.
    """
    _configure_logging(runtime)
    log.info("development server %s: %s", os.getpid(), describe_backends(runtime.settings))
    url = f"http://{'127.0.0.1' if host in ALL_INTERFACES else host}:{port}"
    if runtime.settings.public_base_url.rstrip("/") == Settings().public_base_url:
        # The public base URL was never set: on a laptop it is where this server listens (Twilio
        # signatures, status callbacks and the demo's replies are checked against it).
        runtime.settings = dataclasses.replace(runtime.settings, public_base_url=url)
        runtime.provider_context = dataclasses.replace(
            runtime.provider_context, public_base_url=url
        )
    public_base_url = runtime.settings.public_base_url.rstrip("/")
    env = {**os.environ, "CITIZEN_LOOKUP_PUBLIC_BASE_URL": public_base_url}
    if runtime.settings.embedded_redis:
        # The worker joins this process's embedded Redis through its socket.
        socket_file = runtime.redis.connection_pool.connection_kwargs["path"]
        env["CITIZEN_LOOKUP_REDIS_URL"] = f"unix://{socket_file}"
    record = write_dev_server(runtime.settings, url, public_base_url)
    worker_process = None
    from flask import current_app

    def stop(_signum: int, _frame: object) -> None:
        raise SystemExit(0)  # so that `finally` below stops the worker too

    signal.signal(signal.SIGTERM, stop)
    try:
        if with_worker:
            worker_process = subprocess.Popen(
                [sys.executable, "-m", "citizen_lookup.cli", "worker"], env=env
            )
        current_app.run(host=host, port=port, threaded=True, use_reloader=False)
    finally:
        remove_dev_server(record)
        if worker_process is not None:
            worker_process.terminate()
            try:
                worker_process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker_process.kill()
