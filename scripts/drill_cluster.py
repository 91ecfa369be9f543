"""`scripts/drill --cluster`: the fault drill on the production topology (issue 17).

Messages go in at --rate per second for --seconds through nginx (two gunicorn web nodes),
PgBouncer in transaction pooling (PostgreSQL primary + streaming replica) and Redis through
Sentinel (primary + replica, three Sentinels), to three workers and a fake provider on loopback
that records every reply. Meanwhile, one after the other:

1. the Redis primary is SIGKILLed and the Sentinels promote the replica. Just before, the
   replica falls behind for --replication-gap seconds (it is frozen with SIGSTOP and its
   primary drops its link): jobs queued in that gap exist only on the primary that dies, as
   Redis's asynchronous replication allows. The drill names those still waiting in the queue at
   the kill, and shows that the outbox sweeper queued each again and that each was answered.
   The killed node comes back as a replica of the new primary.
2. one web node is SIGKILLed (its whole process group) and started again after 10 s;
3. the PostgreSQL replica is stopped (``pg_ctl -m fast``) and started after 20 s;
4. a worker is SIGKILLed (with its RQ scheduler) and started again after 3 s.

The sender plays the provider: any answer but 200 (or none) is resent after 0.5 s, the same
message id each time. It reports: lost (acknowledged, never answered), duplicated (answered by two
different replies; a reply resent under its own id, from a worker killed between the provider's
answer and our commit, is counted apart), the seconds without a writable Redis primary (a client
going through the Sentinels, as the service does, writing every 50 ms), webhook answers by status
within each fault's window, lookups read by the replica and by the primary (counted by each
server's pg_stat_statements, and by the service's own counter), and `audit verify`.

It uses the cluster of `scripts/cluster up` if one is up (and leaves it up); otherwise it starts
one and stops it at the end. Exit 1 unless lost = 0, duplicated = 0, every vanished job was
answered, and `audit verify` passes.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cluster_topology import (
    DATABASE,
    HISTORY_STATEMENT,
    LOOKUP_STATEMENT,
    POINTER,
    Cluster,
    wait_for,
)
from drill import Provider, log, start_provider

from citizen_lookup.providers.generic import sign
from citizen_lookup.redis_connection import connect

QUEUE = "citizen-lookup"  # the default queue name
PREFIX = "citizen-lookup"  # the default Redis key prefix


# -- what the drill measures ---------------------------------------------------------------------
@dataclass
class Timeline:
    """Every webhook answer (time, status; 0 = no answer) and every fault's window."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answers: list[tuple[float, int]] = field(default_factory=list)
    windows: dict[str, tuple[float, float]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def answer(self, status: int) -> None:
        with self.lock:
            self.answers.append((time.monotonic(), status))

    def by_window(self) -> dict[str, dict[str, int]]:
        result: dict[str, Counter[str]] = {name: Counter() for name in self.windows}
        result["outside the faults"] = Counter()
        for moment, status in self.answers:
            name = next(
                (n for n, (a, b) in self.windows.items() if a <= moment <= b), "outside the faults"
            )
            result[name][str(status or "no answer")] += 1
        return {name: dict(sorted(counts.items())) for name, counts in result.items()}


class StatementCounter:
    """Sums the growth of pg_stat_statements' counts on one server, across its restarts."""

    def __init__(self, cluster: Cluster, node: str, pattern: str) -> None:
        self.cluster, self.node, self.pattern = cluster, node, pattern
        self.total, self.last = 0, self._read()

    def _read(self) -> int | None:
        try:
            return self.cluster.statement_calls(self.node, self.pattern)
        except Exception:
            return None  # the server is down: counted when it is back

    def sample(self) -> None:
        now = self._read()
        if now is None:
            return
        if self.last is not None:
            # A count lower than the last one: the server restarted without its saved counts.
            self.total += now - self.last if now >= self.last else now
        self.last = now


def redis_probe(cluster: Cluster, stop: threading.Event, timeline: Timeline) -> None:
    """Write through the Sentinels every 50 ms; note the longest span without a success."""
    client = connect(cluster.redis_url)
    last_ok = time.monotonic()
    longest = 0.0
    while not stop.wait(0.05):
        try:
            client.set(f"{PREFIX}:drill-probe", "1", ex=60)
        except Exception:  # noqa: S112 (no primary: the span being measured goes on)
            continue
        moment = time.monotonic()
        longest = max(longest, moment - last_ok - 0.05)
        last_ok = moment
        timeline.notes["seconds_without_redis_primary"] = round(longest, 2)


# -- the faults ----------------------------------------------------------------------------------
def fail_redis_primary(cluster: Cluster, gap: float, timeline: Timeline) -> None:
    primary = cluster.redis_primary()
    assert primary is not None, "no Redis primary to fail"
    replica = 1 - primary
    old = cluster.redis_client(primary)
    frozen = cluster.processes[f"redis_{replica}"]
    start = time.monotonic()
    if gap > 0:
        # The replica falls behind: frozen, and dropped by its primary, so what is queued
        # meanwhile exists only on the primary about to die (replication is asynchronous).
        frozen.signal(signal.SIGSTOP, group=False)
        old.client_kill_filter(_type="replica")
        time.sleep(gap)
    waiting = [j.decode() for j in old.lrange(f"rq:queue:{QUEUE}", 0, -1)]
    cluster.processes[f"redis_{primary}"].kill()
    if gap > 0:
        frozen.signal(signal.SIGCONT, group=False)
    log(f"redis: primary node {primary} SIGKILLed ({len(waiting)} jobs waiting on it)")
    wait_for(lambda: cluster.redis_primary() == replica, 60, "the Sentinels to promote", 0.05)
    promoted = time.monotonic()
    new = cluster.redis_client(replica)
    vanished = [job for job in waiting if not new.exists(f"rq:job:{job}")]
    timeline.notes["redis_promoted_after_s"] = round(promoted - start, 2)
    timeline.notes["jobs_waiting_at_the_kill"] = len(waiting)
    timeline.notes["vanished_jobs"] = vanished
    log(f"redis: node {replica} promoted; {len(vanished)} queued jobs vanished with the old one")
    cluster.start_redis(primary, replica_of=cluster.ports[f"redis_{replica}"])
    wait_for(lambda: cluster.replication_up(primary), 60, "the old primary to rejoin")
    wait_for(lambda: cluster.sentinels_agree(replica, 1), 60, "the Sentinels to see it")
    timeline.windows["redis primary SIGKILL"] = (start, time.monotonic())
    log(f"redis: node {primary} back as a replica of node {replica}")


def fail_web_node(cluster: Cluster, timeline: Timeline, down: float) -> None:
    start = time.monotonic()
    cluster.processes["web_1"].kill()  # master and its workers: the node is gone
    log("web: node 1 SIGKILLed")
    time.sleep(down)
    cluster.start_web(1)
    timeline.windows["web node SIGKILL"] = (start, time.monotonic())
    log("web: node 1 started again")


def fail_replica(cluster: Cluster, timeline: Timeline, down: float) -> None:
    start = time.monotonic()
    cluster.stop_postgres("pg_replica", "fast")
    log("postgres: replica stopped")
    time.sleep(down)
    cluster.start_postgres("pg_replica")
    wait_for(cluster.replica_streaming, 60, "the replica to stream again")
    timeline.windows["postgres replica stopped"] = (start, time.monotonic())
    log("postgres: replica started and streaming")


def fail_worker(cluster: Cluster, timeline: Timeline, down: float) -> None:
    start = time.monotonic()
    cluster.processes["worker_1"].kill()
    log("worker: worker 1 SIGKILLed (with its scheduler, if it held one)")
    time.sleep(down)
    cluster.start_worker(1)
    timeline.windows["worker SIGKILL"] = (start, time.monotonic())
    log("worker: worker 1 started again")


def inject_faults(
    args: argparse.Namespace, cluster: Cluster, timeline: Timeline, t0: float
) -> None:
    schedule = [
        (0.15, lambda: fail_redis_primary(cluster, args.replication_gap, timeline)),
        (0.35, lambda: fail_web_node(cluster, timeline, 10.0)),
        (0.55, lambda: fail_replica(cluster, timeline, 20.0)),
        (0.75, lambda: fail_worker(cluster, timeline, 3.0)),
    ]
    for share, fault in schedule:
        delay = t0 + share * args.seconds - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        fault()
        cluster.save()  # new pids, for `scripts/cluster down`


# -- sending -------------------------------------------------------------------------------------
def send_all(
    args: argparse.Namespace,
    url: str,
    secret: str,
    slug: str,
    citizens: list[tuple[str, str]],
    timeline: Timeline,
) -> tuple[set[str], dict[str, float], int]:
    """Send every message at its time; resend on anything but 200, as providers do."""
    total = int(args.seconds * args.rate)
    rng = random.Random(args.seed)
    plan = []
    for i in range(total):
        id_number, phone = citizens[i % len(citizens)]
        roll = rng.random()
        sender = phone if roll < 0.9 else f"+8498{rng.randrange(10_000_000):07d}"
        kind = rng.random()
        text = (
            f"DC {id_number}" if kind < 0.55
            else f"DC CT {id_number}" if kind < 0.7
            else f"DC MST {id_number}" if kind < 0.8
            else f"DC NK {id_number}" if kind < 0.95
            else "HELP"
        )  # fmt: skip
        plan.append((f"{slug}-{i}", sender, text))
    acknowledged: set[str] = set()
    first_sent: dict[str, float] = {}
    attempts = 0
    lock = threading.Lock()
    local = threading.local()
    start = time.monotonic()

    def one(i: int) -> None:
        nonlocal attempts
        message_id, sender, text = plan[i]
        body = json.dumps(
            {"id": message_id, "from": sender, "to": "8077", "text": text,
             "timestamp": int(time.time())}
        ).encode()  # fmt: skip
        delay = start + i / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        with lock:
            first_sent[message_id] = time.time()
        for _ in range(600):
            with lock:
                attempts += 1
            try:
                answer = session.post(
                    url,
                    data=body,
                    timeout=15,
                    headers={"Content-Type": "application/json", "X-Signature": sign(secret, body)},
                )
                timeline.answer(answer.status_code)
                if answer.status_code == 200:
                    with lock:
                        acknowledged.add(message_id)
                    return
            except requests.RequestException:
                timeline.answer(0)
                session.close()
                session = local.session = requests.Session()
            time.sleep(0.5)

    with ThreadPoolExecutor(max_workers=args.senders) as pool:
        list(pool.map(one, range(total)))
    return acknowledged, first_sent, attempts


# -- setting up on the cluster -------------------------------------------------------------------
def prepare(cluster: Cluster, args: argparse.Namespace, provider_url: str) -> tuple[str, str]:
    slug, secret = f"drill-{time.strftime('%H%M%S')}", secrets.token_hex(24)
    cluster.cli(
        "connections", "add", slug, "--kind", "generic", "--focal-name", "Drill",
        "--focal-title", "Fault drill", "--focal-phone", "+842430000000",
        "--focal-email", "drill@example.invalid", "--assessment", "DRILL",
        "--outbound-url", provider_url, "--credential", "secret=-", input=secret + "\n",
    )  # fmt: skip
    have = int(cluster.psql("SELECT count(*) FROM citizens", database=DATABASE))
    if have < args.citizens:
        log(f"seeding {args.citizens} citizens (through PgBouncer)")
        cluster.cli("demo", "seed", "--citizens", str(args.citizens))
    return slug, secret


def citizens_in_random_order(cluster: Cluster, seed: int) -> list[tuple[str, str]]:
    rows = cluster.psql(
        "SELECT c.id_number || ' ' || min(p.msisdn) FROM citizens c "
        "JOIN citizen_phones p ON p.citizen_id = c.id GROUP BY c.id_number ORDER BY 1",
        database=DATABASE,
    ).splitlines()
    pairs = [tuple(row.split()) for row in rows]
    random.Random(seed).shuffle(pairs)
    return pairs  # type: ignore[return-value]


def scrape(cluster: Cluster) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(f"{cluster.public_url}/metrics", timeout=10).text
    return {
        sample.name + "".join(f"{{{v}}}" for v in sample.labels.values()): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def drain(cluster: Cluster, slug: str, provider: Provider, timeout: float) -> bool:
    """Until no message of the drill is unanswered in the database (the truth)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        waiting = cluster.psql(  # the slug is the drill's own
            "SELECT count(*) FROM inbound_messages i JOIN connections c "  # noqa: S608
            "ON c.id = i.connection_id "
            f"WHERE c.slug = '{slug}' AND i.state = 'received'",
            database=DATABASE,
        )
        if waiting == "0":
            time.sleep(2)  # replies in flight land
            return True
        time.sleep(1)
    return False


# -- the drill -----------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    started_here = False
    if POINTER.exists() and Cluster.load(POINTER).processes.get("nginx", None) is not None:
        cluster = Cluster.load(POINTER)
        down = [name for name, p in cluster.processes.items() if not p.alive()]
        if down:
            raise SystemExit(f"the running cluster has parts down ({', '.join(down)}): "
                             "scripts/cluster status")  # fmt: skip
        log(f"using the running cluster in {cluster.base}")
    else:
        cluster = Cluster.create()
        log(f"no cluster up: starting one in {cluster.base}")
        started_here = True
    provider = Provider()
    server = start_provider(provider)
    timeline = Timeline()
    stop = threading.Event()
    try:
        if started_here:
            cluster.up(say=log)
        slug, secret = prepare(cluster, args, f"http://127.0.0.1:{server.server_address[1]}/mt")
        citizens = citizens_in_random_order(cluster, args.seed)
        wait_for(cluster.replay_caught_up, 60, "the replica to replay the citizens")
        counters = {
            (node, name): StatementCounter(cluster, node, pattern)
            for node in ("pg_primary", "pg_replica")
            for name, pattern in (("lookup", LOOKUP_STATEMENT), ("history", HISTORY_STATEMENT))
        }
        metrics_before = scrape(cluster)

        def sample_counts() -> None:
            while not stop.wait(1.0):
                for counter in counters.values():
                    counter.sample()

        threading.Thread(target=sample_counts, daemon=True).start()
        threading.Thread(target=redis_probe, args=(cluster, stop, timeline), daemon=True).start()
        log(f"sending {int(args.seconds * args.rate)} messages at {args.rate}/s through "
            f"{cluster.public_url} (connection {slug})")  # fmt: skip
        t0 = time.monotonic()
        faults = threading.Thread(target=inject_faults, args=(args, cluster, timeline, t0))
        faults.start()
        acknowledged, first_sent, attempts = send_all(
            args, f"{cluster.public_url}/webhooks/{slug}/sms", secret, slug, citizens, timeline
        )
        send_seconds = time.monotonic() - t0
        faults.join()
        log(f"sent in {send_seconds:.0f} s; draining")
        drained = drain(cluster, slug, provider, args.drain_timeout)
        stop.set()
        for counter in counters.values():
            counter.sample()
        verify = subprocess_verify(cluster)
        return report(
            cluster, slug, provider, timeline, acknowledged, first_sent, attempts, counters,
            metrics_before, send_seconds, drained, verify,
        )  # fmt: skip
    finally:
        stop.set()
        server.shutdown()
        cluster.save()
        if started_here and not args.keep_cluster:
            log("stopping the cluster the drill started")
            cluster.down()
        elif started_here:
            cluster.save(POINTER)
            log(f"cluster left up in {cluster.base} (scripts/cluster down stops it)")


def subprocess_verify(cluster: Cluster) -> tuple[bool, str]:
    try:
        return True, cluster.cli("audit", "verify").strip()
    except RuntimeError as exc:
        return False, str(exc)


def report(
    cluster: Cluster,
    slug: str,
    provider: Provider,
    timeline: Timeline,
    acknowledged: set[str],
    first_sent: dict[str, float],
    attempts: int,
    counters: dict[tuple[str, str], StatementCounter],
    metrics_before: dict[str, float],
    send_seconds: float,
    drained: bool,
    verify: tuple[bool, str],
) -> dict[str, Any]:
    rows = cluster.psql(  # the slug is the drill's own
        "SELECT i.id || ' ' || i.provider_message_id FROM inbound_messages i "  # noqa: S608
        f"JOIN connections c ON c.id = i.connection_id WHERE c.slug = '{slug}'",
        database=DATABASE,
    ).splitlines()
    by_inbound = {int(a): b for a, b in (row.split() for row in rows)}
    # A reply names the message it answers by the provider's id ("in_reply_to").
    replied = {m for m in acknowledged if provider.replies_to.get(m)}
    answered_twice = [m for m, replies in provider.replies_to.items() if len(replies) > 1]
    resent = sum(n - 1 for n in provider.receipts.values())
    latency = sorted(
        provider.first_answer[m] - first_sent[m] for m in provider.first_answer if m in first_sent
    )
    vanished = timeline.notes.get("vanished_jobs", [])
    primary = cluster.redis_client(cluster.redis_primary() or 0)
    swept = {
        job: int(primary.hget(f"{PREFIX}:sweeps", job.removeprefix("inbound-")) or 0)
        for job in vanished
    }
    recovered = [
        job
        for job in vanished
        if provider.replies_to.get(by_inbound.get(int(job.removeprefix("inbound-")), ""))
    ]
    metrics_after = scrape(cluster)

    def grew(name: str) -> int:
        return int(metrics_after.get(name, 0) - metrics_before.get(name, 0))

    result = {
        "messages": len(first_sent),
        "http_requests": attempts,
        "acknowledged": len(acknowledged),
        "stored": len(by_inbound),
        "replied": len(replied),
        "lost": len(acknowledged - replied),
        "duplicated": len(answered_twice),
        "resent_in_window": resent,
        "send_seconds": round(send_seconds, 1),
        "drained": drained,
        "mo_to_mt_p50_ms": round(statistics.median(latency) * 1000) if latency else None,
        "mo_to_mt_p99_ms": round(latency[int(len(latency) * 0.99) - 1] * 1000) if latency else None,
        "seconds_without_redis_primary": timeline.notes.get("seconds_without_redis_primary"),
        "redis_promoted_after_s": timeline.notes.get("redis_promoted_after_s"),
        "jobs_waiting_at_the_kill": timeline.notes.get("jobs_waiting_at_the_kill"),
        "vanished_jobs": len(vanished),
        "vanished_swept_again": sum(1 for n in swept.values() if n > 0),
        "vanished_answered": len(recovered),
        "webhook_answers": timeline.by_window(),
        "fault_windows_s": {name: round(b - a, 1) for name, (a, b) in timeline.windows.items()},
        "lookups_on_replica": counters[("pg_replica", "lookup")].total,
        "lookups_on_primary": counters[("pg_primary", "lookup")].total,
        "history_reads_on_replica": counters[("pg_replica", "history")].total,
        "history_reads_on_primary": counters[("pg_primary", "history")].total,
        "service_reads_replica": grew("citizen_lookup_lookup_reads_total{replica}"),
        "service_reads_primary": grew("citizen_lookup_lookup_reads_total{primary}"),
        "service_replica_fallbacks": grew("citizen_lookup_replica_fallbacks_total"),
        # Stored and acknowledged while Redis could not take the job: queued by the sweeper.
        "service_enqueue_failures": grew("citizen_lookup_enqueue_failures_total"),
        "audit_ok": verify[0],
        "audit_verify": verify[1],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cluster", action="store_true", help="(the flag scripts/drill reads)")
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--rate", type=float, default=60.0, help="messages per second")
    parser.add_argument("--citizens", type=int, default=20000)
    parser.add_argument("--senders", type=int, default=48, help="concurrent sender threads")
    parser.add_argument(
        "--replication-gap",
        type=float,
        default=1.0,
        help="seconds the Redis replica lags (frozen) before its primary is killed (0: none)",
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--keep-cluster", action="store_true", help="leave a cluster it started up")
    parser.add_argument("--json", action="store_true", help="print the report as JSON only")
    args = parser.parse_args(argv)
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        width = max(len(k) for k in result)
        for key, value in result.items():
            print(f"{key:<{width}}  {value}")
    ok = (
        result["lost"] == 0
        and result["duplicated"] == 0
        and result["drained"]
        and result["vanished_answered"] == result["vanished_jobs"]
        and result["audit_ok"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
