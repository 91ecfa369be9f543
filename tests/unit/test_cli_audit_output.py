"""What `citizen-lookup audit …` prints: Vietnam time with its offset (and --since/--until read
in it), `detail` as an object in --json, counts in the right number, `stats --by outcome` one
count per outcome, and a checkpoint signed by another key said to be that."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from citizen_lookup.cli.times import local_time
from citizen_lookup.models import AuditEvent
from citizen_lookup.services.audit import CheckpointSigner
from citizen_lookup.services.limits import VIETNAM
from tests.helpers import runtime_of
from tests.unit.test_cli_audit import _traffic

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True


def _one_event(app: Any, **detail: Any) -> AuditEvent:
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session, "inbound.received", connection="gw", outcome="ok", detail=detail or None
        )
    with runtime.session_factory() as session:
        event = session.scalars(select(AuditEvent).order_by(AuditEvent.id)).one()
        session.expunge(event)
    return event


def _vietnam(event: AuditEvent) -> Any:
    moment = event.occurred_at
    if moment.tzinfo is None:  # SQLite gives the stored UTC moment without its zone
        from datetime import UTC

        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(VIETNAM)


# -- search: one zone, with its offset, and detail as an object -----------------------------------
def test_search_shows_vietnam_time_with_its_offset_and_says_one_event(app: Any, cli: Any) -> None:
    event = _one_event(app)
    lines = cli("audit", "search").output.splitlines()
    assert lines[0].split()[:4] == ["SEQ", "ID", "TIME", "(VIETNAM)"]
    shown = _vietnam(event).isoformat(sep=" ", timespec="seconds")
    assert shown.endswith("+07:00")
    assert lines[1].split() == ["-", str(event.id), *shown.split(), "inbound.received", "gw",
                                "-", "-", "-", "ok"]  # fmt: skip
    assert lines[2:] == ["1 event"]


def test_search_json_gives_detail_as_an_object_and_the_time_in_vietnam(app: Any, cli: Any) -> None:
    event = _one_event(app, reason="a reason", count=2)
    [line] = cli("audit", "search", "--json").output.splitlines()
    row = json.loads(line)
    assert row["detail"] == {"reason": "a reason", "count": 2}
    assert row["occurred_at"] == _vietnam(event).isoformat(timespec="seconds")
    assert row["occurred_at"].endswith("+07:00")


def test_export_keeps_detail_as_stored_and_times_in_utc(app: Any, cli: Any, tmp_path: Path) -> None:
    _one_event(app, reason="kept")
    out = tmp_path / "a.jsonl"
    result = cli("audit", "export", "--format", "jsonl", "-o", str(out))
    assert result.output == f"exported 1 event to {out}\n"
    exported = json.loads(out.read_text().splitlines()[0])
    assert json.loads(exported["detail"]) == {"reason": "kept"}  # the hashed text, as it is


def test_since_and_until_are_read_in_vietnam_time(app: Any, cli: Any) -> None:
    event = _one_event(app)
    local = _vietnam(event).replace(tzinfo=None, microsecond=0)
    before, after = (local - timedelta(seconds=1)).isoformat(), (local + timedelta(seconds=1))

    def found(*args: str) -> int:
        output = cli("audit", "search", "--connection", "gw", "--json", *args).output
        return len(output.splitlines())  # (each search is audited, without a connection)

    # A time without an offset is Vietnam time: read as UTC it would be 7 hours off.
    assert found("--since", before) == 1
    assert found("--since", after.isoformat()) == 0
    assert found("--until", before) == 0
    assert found("--since", local.date().isoformat(), "--until", local.date().isoformat()) == 1
    previous = (local.date() - timedelta(days=1)).isoformat()
    assert found("--until", previous) == 0


# -- stats ---------------------------------------------------------------------------------------
def test_stats_by_outcome_counts_each_outcome_once(app: Any, cli: Any, fake_provider: Any) -> None:
    _traffic(app, fake_provider)
    assert cli("audit", "stats", "--by", "outcome").output.splitlines() == [
        "OUTCOME         TOTAL",
        "granted             1",
        "not_matched         1",
    ]
    as_json = cli("audit", "stats", "--by", "outcome", "--json").output
    rows = [json.loads(line) for line in as_json.splitlines()]
    assert rows == [{"outcome": "granted", "total": 1}, {"outcome": "not_matched", "total": 1}]


def test_stats_by_day_counts_the_day_in_vietnam(app: Any, cli: Any, fake_provider: Any) -> None:
    _traffic(app, fake_provider)
    with runtime_of(app).session_factory() as session:
        event = session.scalars(
            select(AuditEvent).where(AuditEvent.event_type == "lookup.decision")
        ).first()
        assert event is not None
        day = _vietnam(event).date().isoformat()
    rows = [json.loads(line) for line in cli("audit", "stats", "--json").output.splitlines()]
    assert rows == [{"day": day, "total": 2, "outcomes": {"granted": 1, "not_matched": 1}}]


# -- counts in the right number ------------------------------------------------------------------
def test_one_event_is_said_in_the_singular(app: Any, cli: Any, tmp_path: Path) -> None:
    _one_event(app)
    assert cli("audit", "seal").output == "sealed 1 event\n"
    verified = cli("audit", "verify").output.splitlines()
    assert verified[0].startswith("audit trail intact: 1 event checked, 1 sealed (last seq 1), ")
    kept = tmp_path / "checkpoint.txt"
    assert cli("audit", "checkpoint", "-o", str(kept)).output == (
        f"checkpoint of 1 event written to {kept}\n"
    )


def test_verify_shows_when_the_trail_began_in_vietnam_time(app: Any, cli: Any) -> None:
    _one_event(app)
    cli("audit", "seal")
    report = json.loads(cli("audit", "verify", "--json").output)
    began = report["first_checkpoint_at"]
    assert began.endswith("+07:00")
    text = cli("audit", "verify").output
    assert f"the trail began {began.replace('T', ' ')} (its first checkpoint" in text
    assert local_time(began, "seconds") == began.replace("T", " ")


# -- a checkpoint signed by another key of the same name ----------------------------------------
def test_verify_with_another_key_names_both_key_ids(
    app: Any, cli: Any, fake_provider: Any, tmp_path: Path
) -> None:
    _traffic(app, fake_provider)
    kept = tmp_path / "checkpoint.txt"
    cli("audit", "checkpoint", "-o", str(kept))
    ours = cli("audit", "public-key").output.strip().split("+")[1]
    assert cli("audit", "keygen", "-o", str(tmp_path / "other.pem")).exit_code == 0
    other = CheckpointSigner.from_file("citizen-lookup.local/audit", tmp_path / "other.pem")
    (tmp_path / "other-vkey").write_text(other.vkey())
    result = cli(
        "audit", "verify", "--since-checkpoint", str(kept),
        "--public-key", str(tmp_path / "other-vkey"),
    )  # fmt: skip
    assert result.exit_code == 1
    assert ours != other.key_id.hex()
    assert (
        "audit trail BROKEN at the head [forged-checkpoint]: the given checkpoint: the checkpoint "
        f"is signed by citizen-lookup.local/audit with key ID {ours}, not the key ID "
        f"{other.key_id.hex()} of the public key given (another key)"
    ) in result.output
    assert "carries no signature" not in result.output


def test_a_checked_proof_shows_its_times_in_vietnam_and_its_tree_in_events(
    app: Any, cli: Any, tmp_path: Path
) -> None:
    event = _one_event(app)
    cli("audit", "seal")
    vkey = tmp_path / "vkey"
    vkey.write_text(cli("audit", "public-key").output)
    proof = tmp_path / "proof.json"
    made = cli("audit", "prove", "1", "-o", str(proof))
    assert made.output.startswith("inclusion proof of event 1 in the tree of 1 event written to ")
    document = json.loads(proof.read_text())
    assert document["event"]["occurred_at"].endswith("+00:00")  # the file keeps the trail's UTC
    checked = cli("audit", "verify-proof", str(proof), "--public-key", str(vkey)).output
    when = _vietnam(event).isoformat(sep=" ", timespec="seconds")
    assert checked.startswith(
        f"proof OK: event 1 (#{event.id}, {when}, inbound.received, outcome ok) is leaf 0 of the "
        "tree of 1 event that citizen-lookup.local/audit signed at "
    )
    signed_at = checked.split(" signed at ", 1)[1].split("\n", 1)[0]
    assert signed_at.endswith("+07:00"), signed_at
