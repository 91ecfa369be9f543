"""`citizen-lookup queue …`: RQ queues, failed jobs, and the sweeper."""

from __future__ import annotations

import json
from typing import Any

import click
from rq import Queue
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.cli.output import counted
from citizen_lookup.queue import all_queues
from citizen_lookup.runtime import Runtime
from citizen_lookup.sweeper import reopen_failed, sweep_unqueued


@click.group("queue")
def group() -> None:
    """Job queues."""


def _failed_reasons(queue: Queue, limit: int) -> list[dict[str, str]]:
    failed = FailedJobRegistry(queue=queue)
    entries = []
    for job_id in failed.get_job_ids()[:limit]:
        job = queue.fetch_job(job_id)
        result = job.latest_result() if job else None
        reason = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        entries.append({"id": job_id, "reason": reason[0] if reason else "unknown"})
    return entries


@group.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def status(runtime: Runtime, as_json: bool) -> None:
    """Queued, running, scheduled (retries) and failed jobs, for each connection's queue."""
    queues = all_queues(runtime)
    rows: list[dict[str, Any]] = []
    for queue in queues:
        rows.append(
            {
                "queue": queue.name,
                "queued": queue.count,
                "running": StartedJobRegistry(queue=queue).count,
                "scheduled": ScheduledJobRegistry(queue=queue).count,  # type: ignore[no-untyped-call]
                "failed": FailedJobRegistry(queue=queue).count,
            }
        )
    totals: dict[str, int] = {
        key: sum(row[key] for row in rows) for key in ("queued", "running", "scheduled", "failed")
    }
    failed_jobs: list[dict[str, str]] = []
    for queue, row in zip(queues, rows, strict=True):
        if row["failed"] and len(failed_jobs) < 20:
            failed_jobs += _failed_reasons(queue, 20 - len(failed_jobs))
    if as_json:
        document = {
            "queue": runtime.queue.name,
            **totals,
            "queues": rows,
            "failed_jobs": failed_jobs,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"queues {runtime.queue.name}[:CONNECTION] (served in turn)")
    click.echo(f"  queued:    {totals['queued']}")
    click.echo(f"  running:   {totals['running']}")
    click.echo(f"  scheduled: {totals['scheduled']}  (retries waiting)")
    click.echo(f"  failed:    {totals['failed']}")
    busy = [
        row for row in rows if any(row[k] for k in ("queued", "running", "scheduled", "failed"))
    ]
    if busy:
        click.echo("  by queue (queued/running/scheduled/failed):")
        for row in busy:
            click.echo(
                f"    {row['queue']}: {row['queued']}/{row['running']}/{row['scheduled']}"
                f"/{row['failed']}"
            )
    for entry in failed_jobs:
        click.echo(f"    {entry['id']}: {entry['reason']}")


@group.command("retry-failed")
@pass_runtime
def retry_failed(runtime: Runtime) -> None:
    """Put every failed job back on its queue (failed replies are sent again)."""
    registries = [FailedJobRegistry(queue=queue) for queue in all_queues(runtime)]
    ids_by_registry = [(registry, registry.get_job_ids()) for registry in registries]
    ids = [job_id for _, job_ids in ids_by_registry for job_id in job_ids]
    inbound_ids = [int(i.removeprefix("inbound-")) for i in ids if i.startswith("inbound-")]
    reopened = reopen_failed(runtime, inbound_ids, current_actor())
    for registry, job_ids in ids_by_registry:
        for job_id in job_ids:
            registry.requeue(job_id)
    click.echo(
        f"requeued {counted(len(ids), 'failed job')} "
        f"({counted(reopened, 'failed reply', 'failed replies')} will be sent again)"
    )


@group.command("sweep")
@click.option("--older-than", type=int, help="Seconds [default: the sweep_grace_seconds setting].")
@pass_runtime
def sweep(runtime: Runtime, older_than: int | None) -> None:
    """Queue stored messages that no job holds (after Redis was down)."""
    count = sweep_unqueued(runtime, older_than_seconds=older_than)
    click.echo(f"queued {counted(count, 'stored message')}")
