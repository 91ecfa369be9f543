"""`citizen-lookup queue …`: RQ queues, failed jobs, and the sweeper."""

from __future__ import annotations

import json

import click
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from citizen_lookup.cli import current_actor, pass_runtime
from citizen_lookup.runtime import Runtime
from citizen_lookup.sweeper import reopen_failed, sweep_unqueued


@click.group("queue")
def group() -> None:
    """Job queues."""


@group.command("status")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@pass_runtime
def status(runtime: Runtime, as_json: bool) -> None:
    """Queued, running, scheduled (retries) and failed jobs."""
    queue = runtime.queue
    failed = FailedJobRegistry(queue=queue)
    scheduled = ScheduledJobRegistry(queue=queue)  # type: ignore[no-untyped-call]
    failed_jobs = []
    for job_id in failed.get_job_ids()[:20]:
        job = queue.fetch_job(job_id)
        result = job.latest_result() if job else None
        reason = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        failed_jobs.append({"id": job_id, "reason": reason[0] if reason else "unknown"})
    counts = {
        "queued": queue.count,
        "running": StartedJobRegistry(queue=queue).count,
        "scheduled": scheduled.count,
        "failed": failed.count,
    }
    if as_json:
        document = {"queue": queue.name, **counts, "failed_jobs": failed_jobs}
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(f"queue {queue.name}")
    click.echo(f"  queued:    {counts['queued']}")
    click.echo(f"  running:   {counts['running']}")
    click.echo(f"  scheduled: {counts['scheduled']}  (retries waiting)")
    click.echo(f"  failed:    {counts['failed']}")
    for entry in failed_jobs:
        click.echo(f"    {entry['id']}: {entry['reason']}")


@group.command("retry-failed")
@pass_runtime
def retry_failed(runtime: Runtime) -> None:
    """Put every failed job back on the queue (failed replies are sent again)."""
    failed = FailedJobRegistry(queue=runtime.queue)
    ids = failed.get_job_ids()
    inbound_ids = [int(i.removeprefix("inbound-")) for i in ids if i.startswith("inbound-")]
    reopened = reopen_failed(runtime, inbound_ids, current_actor())
    for job_id in ids:
        failed.requeue(job_id)
    click.echo(f"requeued {len(ids)} failed jobs ({reopened} failed replies will be sent again)")


@group.command("sweep")
@click.option("--older-than", type=int, help="Seconds [default: the sweep_grace_seconds setting].")
@pass_runtime
def sweep(runtime: Runtime, older_than: int | None) -> None:
    """Queue stored messages that no job holds (after Redis was down)."""
    count = sweep_unqueued(runtime, older_than_seconds=older_than)
    click.echo(f"queued {count} stored messages")
