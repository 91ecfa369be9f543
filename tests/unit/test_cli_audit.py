"""`citizen-lookup audit …`: verify finds every kind of tampering and names it; seal, checkpoints,
keys; search, export, stats and purge as an auditor uses them."""

from __future__ import annotations

import csv
import json
import struct
from pathlib import Path

from sqlalchemy import delete, func, select, text, update

from citizen_lookup.models import AuditEvent, AuditTreeHead
from citizen_lookup.services.audit import CheckpointVerifier
from tests.conftest import run_worker
from tests.helpers import (
    OWNER_ID,
    OWNER_PHONE,
    STRANGER_PHONE,
    add_citizen,
    add_connection,
    generic_sms,
    runtime_of,
)

# Also run against the machine's PostgreSQL and Redis (integration; see conftest).
ALSO_ON_POSTGRES = True


def _traffic(app, fake_provider, *, seal=True):
    add_citizen(app)
    add_connection(app, outbound_url=f"{fake_provider.url}/mt")
    client = app.test_client()
    generic_sms(client, text=f"DC {OWNER_ID}", message_id="a")
    generic_sms(client, text=f"DC {OWNER_ID}", sender=STRANGER_PHONE, message_id="b")
    run_worker(runtime_of(app), app)
    if seal:
        runtime = runtime_of(app)
        assert runtime.audit.seal_all(runtime.session_factory) == 7


def _tamper(app, statement, params=None):
    with runtime_of(app).session_factory.begin() as session:
        session.execute(statement, params or {})


def _broken(cli, *args):
    result = cli("audit", "verify", *args)
    assert result.exit_code == 1, result.output
    return result.output


def test_verify_passes_on_an_untouched_trail(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "verify")
    assert result.exit_code == 0 and "intact: 7 events checked, 7 sealed" in result.output


def test_unsealed_events_verify_and_the_lag_is_reported(app, cli, fake_provider):
    _traffic(app, fake_provider, seal=False)
    result = cli("audit", "verify", "--json")
    assert result.exit_code == 0
    report = json.loads(result.output)
    assert report["ok"] and report["unsealed"] == 7 and report["tree_size"] == 0
    assert report["lag_seconds"] >= 0


def test_verify_names_an_edited_sealed_event(app, cli, fake_provider):
    _traffic(app, fake_provider)
    _tamper(app, update(AuditEvent).where(AuditEvent.seq == 4).values(outcome="edited"))
    assert "BROKEN at event 4 [edited]" in _broken(cli)


def test_verify_names_an_edited_unsealed_event(app, cli, fake_provider):
    _traffic(app, fake_provider, seal=False)
    first = _first_id(app)
    _tamper(app, update(AuditEvent).where(AuditEvent.id == first + 2).values(outcome="granted"))
    assert f"unsealed event #{first + 2} [unsealed-edited]" in _broken(cli)


def _first_id(app):
    with runtime_of(app).session_factory() as session:
        return session.scalar(select(func.min(AuditEvent.id)))


def test_verify_names_an_event_deleted_from_the_middle(app, cli, fake_provider):
    _traffic(app, fake_provider)
    _tamper(app, delete(AuditEvent).where(AuditEvent.seq == 3))
    assert "BROKEN at event 3 [deleted]" in _broken(cli)


def test_verify_names_a_reordered_pair(app, cli, fake_provider):
    _traffic(app, fake_provider)
    _tamper(app, text("UPDATE audit_events SET seq = -1 WHERE seq = 5"))
    _tamper(app, text("UPDATE audit_events SET seq = 5 WHERE seq = 6"))
    _tamper(app, text("UPDATE audit_events SET seq = 6 WHERE seq = -1"))
    output = _broken(cli)
    assert "BROKEN at event 5 [reordered]" in output and "sealed as 6" in output


def test_verify_names_an_inserted_event(app, cli, fake_provider):
    _traffic(app, fake_provider)
    with runtime_of(app).session_factory.begin() as session:
        original = session.scalar(select(AuditEvent).where(AuditEvent.seq == 2))
        session.execute(text("UPDATE audit_events SET seq = seq + 100 WHERE seq >= 3"))
        session.execute(text("UPDATE audit_events SET seq = seq - 99 WHERE seq >= 103"))
        session.execute(
            text(
                "INSERT INTO audit_events (seq, occurred_at, event_type, leaf_hash, seal, "
                "hash_version) VALUES (3, :t, 'forged', :leaf, :seal, 2)"
            ),
            {"t": original.occurred_at, "leaf": original.leaf_hash, "seal": original.seal},
        )
    assert "BROKEN at event 3 [inserted]" in _broken(cli)


def test_deleting_the_newest_events_is_caught_by_the_head_and_by_a_kept_checkpoint(
    app, cli, fake_provider, tmp_path
):
    _traffic(app, fake_provider)
    kept = tmp_path / "checkpoint.txt"
    assert cli("audit", "checkpoint", "-o", str(kept)).exit_code == 0
    assert kept.read_text().splitlines()[1] == "7"
    assert cli("audit", "verify", "--since-checkpoint", str(kept)).exit_code == 0
    _tamper(app, delete(AuditEvent).where(AuditEvent.seq >= 6))
    assert "[truncated]" in _broken(cli)
    # An insider holding the signing key re-signs a head that matches the shorter trail:
    # the kept checkpoints still cover the deleted events.
    _resign_head(app, size=5)
    assert "covers 7 events but the trail has 5" in _broken(cli)
    # If the insider also rewrites the kept checkpoints, the trail alone looks whole again,
    # but the checkpoint kept elsewhere still shows the loss (and so would a witness).
    _resign_head(app, size=5, history=True)
    assert cli("audit", "verify").exit_code == 0
    output = _broken(cli, "--since-checkpoint", str(kept))
    assert "BROKEN at event 6 [truncated]" in output and "covers 7 events" in output


def _resign_head(app, size, history=False):
    from datetime import UTC, datetime

    from citizen_lookup.services.audit import Checkpoint
    from citizen_lookup.services.audit.merkle import Frontier, leaf_hash
    from citizen_lookup.services.audit.trail import tree_entry

    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        rows = session.execute(
            select(AuditEvent.seq, AuditEvent.id, AuditEvent.leaf_hash)
            .where(AuditEvent.seq <= size)
            .order_by(AuditEvent.seq)
        ).all()
    frontier = Frontier()
    for seq, event_id, leaf in rows:
        frontier.append_leaf_hash(leaf_hash(tree_entry(seq, event_id, leaf)))
    note = runtime.checkpoint_signer.sign(
        Checkpoint(runtime.audit.origin, size, frontier.root(), datetime.now(UTC))
    )
    _tamper(
        app,
        text(
            "UPDATE audit_head SET tree_size = :n, seq = :n, frontier = :f, "
            "root = :r, checkpoint = :c"
        ),
        {"n": size, "f": json.dumps(frontier.to_hex()), "r": frontier.root().hex(), "c": note},
    )
    if history:
        _tamper(app, text("DELETE FROM audit_tree_heads WHERE tree_size >= :n"), {"n": size})
        with runtime.session_factory.begin() as session:
            before = session.scalar(text("SELECT max(tree_size) FROM audit_tree_heads"))
            session.add(
                AuditTreeHead(
                    tree_size=size,
                    root=frontier.root().hex(),
                    note=note,
                    signed_at=datetime.now(UTC),
                    previous_size=before,
                )
            )


def test_a_rewritten_head_fails_its_signature(app, cli, fake_provider):
    _traffic(app, fake_provider)
    runtime = runtime_of(app)
    with runtime.session_factory() as session:
        note = session.scalar(text("SELECT checkpoint FROM audit_head"))
    lines = note.split("\n")
    lines[1] = "5"  # a forger without the key edits the size and keeps the old signature
    _tamper(app, text("UPDATE audit_head SET checkpoint = :c"), {"c": "\n".join(lines)})
    assert "[forged-checkpoint]" in _broken(cli)


def test_a_forged_checkpoint_given_to_verify_is_refused(app, cli, fake_provider, tmp_path):
    _traffic(app, fake_provider)
    kept = tmp_path / "checkpoint.txt"
    cli("audit", "checkpoint", "-o", str(kept))
    forged = kept.read_text().replace("\n7\n", "\n9\n", 1)
    (tmp_path / "forged.txt").write_text(forged)
    assert "[forged-checkpoint]" in _broken(cli, "--since-checkpoint", str(tmp_path / "forged.txt"))


def test_a_checkpoint_verifies_with_only_the_public_key(app, cli, fake_provider, tmp_path):
    _traffic(app, fake_provider)
    kept = tmp_path / "checkpoint.txt"
    cli("audit", "checkpoint", "-o", str(kept))
    vkey = cli("audit", "public-key").output.strip()
    verifier = CheckpointVerifier.from_vkey(vkey)  # nothing but the printed public key
    checkpoint = verifier.open(kept.read_text())
    assert checkpoint.size == 7 and checkpoint.origin == "citizen-lookup.local/audit"
    (tmp_path / "vkey").write_text(vkey)
    ok = cli(
        "audit", "verify", "--since-checkpoint", str(kept), "--public-key", str(tmp_path / "vkey")
    )
    assert ok.exit_code == 0 and "extends the given checkpoint of 7 events" in ok.output
    # Another key does not verify it.
    assert cli("audit", "keygen", "-o", str(tmp_path / "other.pem")).exit_code == 0
    from citizen_lookup.services.audit import CheckpointSigner

    other = CheckpointSigner.from_file("citizen-lookup.local/audit", tmp_path / "other.pem")
    (tmp_path / "other-vkey").write_text(other.vkey())
    assert "[forged-checkpoint]" in _broken(
        cli, "--since-checkpoint", str(kept), "--public-key", str(tmp_path / "other-vkey")
    )


def test_keygen_never_overwrites(cli, tmp_path):
    target = tmp_path / "key.pem"
    assert cli("audit", "keygen", "-o", str(target)).exit_code == 0
    assert "PRIVATE KEY" in target.read_text() and (target.stat().st_mode & 0o077) == 0
    before = target.read_bytes()
    again = cli("audit", "keygen", "-o", str(target))
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    assert target.read_bytes() == before


# -- search, export ----------------------------------------------------------------------------
def test_search_by_msisdn_finds_that_senders_events_and_is_audited(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "search", "--msisdn", "0912345678", "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert rows and all(r["sender_masked"] == "+8491****678" for r in rows)
    assert all(r["sealed"] for r in rows)
    assert OWNER_PHONE not in result.output
    with runtime_of(app).session_factory() as session:
        assert (
            session.scalars(select(AuditEvent.event_type).order_by(AuditEvent.id.desc())).first()
            == "audit.search"
        )


def test_search_prints_a_header_and_shows_unsealed_events(app, cli, fake_provider):
    _traffic(app, fake_provider, seal=False)
    lines = cli("audit", "search").output.splitlines()
    assert lines[0].split()[:4] == ["SEQ", "ID", "TIME", "(VIETNAM)"]
    assert all(line.split()[0] == "-" for line in lines[1:8])  # none sealed yet
    assert lines[8:] == ["7 events"]


def test_search_by_id_and_outcome(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "search", "--id", OWNER_ID, "--outcome", "not_matched", "--json")
    rows = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [r["sender_masked"] for r in rows] == ["+8498****321"]


def test_search_refuses_an_outcome_no_event_has_and_lists_the_known_ones(app, cli, fake_provider):
    _traffic(app, fake_provider)
    result = cli("audit", "search", "--outcome", "granteed")
    assert result.exit_code == 2
    assert "known outcomes:" in result.output and "granted" in result.output
    assert "not_matched" in result.output


def test_export_csv_and_jsonl(app, cli, fake_provider, tmp_path):
    _traffic(app, fake_provider)
    assert cli("audit", "export", "--format", "csv", "-o", str(tmp_path / "a.csv")).exit_code == 0
    assert (
        cli("audit", "export", "--format", "jsonl", "-o", str(tmp_path / "a.jsonl")).exit_code == 0
    )
    with (tmp_path / "a.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(rows) == 7  # created, 2 received, 2 decisions, 2 sent
    assert len(lines) == len(rows) + 1  # the csv export was itself audited
    assert {"seq", "leaf_hash", "seal", "sealed", "sender_hash"} <= set(rows[0])
    # Our own masks stay readable; only free text is guarded against formulas.
    assert "+8491****678" in {r["sender_masked"] for r in rows}
    assert json.loads(lines[-1])["sealed"] is False  # the export event awaits the sequencer


HOSTILE_IDS = [
    '=HYPERLINK("http://x.test","y")',
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "\t=1+1",
    "\r=1+1",
]


def test_export_csv_neutralises_formulas_from_providers(app, cli, tmp_path):
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        for value in HOSTILE_IDS:
            runtime.audit.append(session, "inbound.received", provider_message_id=value)
    cli("audit", "export", "--format", "csv", "-o", str(tmp_path / "a.csv"))
    with (tmp_path / "a.csv").open(newline="") as fh:
        cells = [row["provider_message_id"] for row in csv.DictReader(fh)]
    assert len(cells) == len(HOSTILE_IDS)
    for cell in cells:
        assert cell.startswith("'") and cell[1] in "=+-@", cell
    assert not any("\t" in cell or "\r" in cell for cell in cells)


BIDI = "evil\u202eexe.txt\u0085\u009b31m"


def test_control_and_bidi_characters_never_reach_the_terminal_or_json(app, cli, tmp_path):
    runtime = runtime_of(app)
    with runtime.session_factory.begin() as session:
        runtime.audit.append(
            session, "inbound.received", connection=BIDI, provider_message_id=BIDI, outcome="ok"
        )
    for args in (("search",), ("search", "--json")):
        output = cli("audit", *args).output
        for bad in ("\u202e", "\u0085", "\u009b"):
            assert bad not in output and json.dumps(bad)[1:-1] not in output
        assert "evilexe.txt31m" in output
    cli("audit", "export", "--format", "jsonl", "-o", str(tmp_path / "a.jsonl"))
    exported = json.loads((tmp_path / "a.jsonl").read_text().splitlines()[0])
    assert exported["provider_message_id"] == "evilexe.txt31m"


# -- stats ---------------------------------------------------------------------------------------
def test_stats_by_outcome_and_connection(app, cli, fake_provider):
    _traffic(app, fake_provider)
    table = cli("audit", "stats", "--by", "outcome").output.splitlines()
    assert table[0].split()[:2] == ["OUTCOME", "TOTAL"]
    totals = {line.split()[0]: int(line.split()[1]) for line in table[1:]}
    assert totals == {"granted": 1, "not_matched": 1}
    rows = [
        json.loads(line)
        for line in cli("audit", "stats", "--by", "connection", "--json").output.splitlines()
    ]
    assert rows == [{"connection": "gw", "total": 2, "outcomes": {"granted": 1, "not_matched": 1}}]


def test_stats_chart_is_a_real_png_of_the_expected_size(app, cli, fake_provider, tmp_path):
    _traffic(app, fake_provider)
    chart = tmp_path / "lookups.png"
    result = cli("audit", "stats", "--by", "day", "--chart", str(chart))
    assert result.exit_code == 0, result.output
    data = chart.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == (1000, 500)


def test_stats_chart_as_svg(app, cli, fake_provider, tmp_path):
    import xml.etree.ElementTree as ET

    _traffic(app, fake_provider)
    chart = tmp_path / "lookups.svg"
    assert cli("audit", "stats", "--by", "channel", "--chart", str(chart)).exit_code == 0
    root = ET.parse(chart).getroot()  # noqa: S314 (our own file)
    assert root.tag.endswith("svg")
    assert (root.get("width"), root.get("height")) == ("720pt", "360pt")
    assert cli("audit", "stats", "--chart", str(tmp_path / "x.gif")).exit_code == 2


# -- purge -----------------------------------------------------------------------------------------
def test_purge_refuses_the_future_and_the_retention_period(app, cli, fake_provider):
    _traffic(app, fake_provider)
    future = cli("audit", "purge", "--before", "2999-01-01", "--yes")
    assert future.exit_code == 2 and "in the future" in future.output
    recent = cli("audit", "purge", "--before", "2000-01-01", "--yes")
    assert recent.exit_code == 0 and "purged 0 events" in recent.output
    from datetime import UTC, datetime, timedelta

    inside = (datetime.now(UTC) - timedelta(days=10)).date().isoformat()
    refused = cli("audit", "purge", "--before", inside, "--yes")
    assert refused.exit_code == 2 and "at least 180 days" in refused.output


def test_purge_keeps_a_signed_checkpoint_so_verify_still_passes(app, cli, fake_provider, tmp_path):
    _traffic(app, fake_provider)
    # Events cannot be aged without editing them, so the retention floor is lowered instead.
    runtime = runtime_of(app)
    from dataclasses import replace

    runtime.settings = replace(runtime.settings, audit_min_retention_days=0)
    from datetime import UTC, datetime

    now = datetime.now(UTC).isoformat()
    result = cli("audit", "purge", "--before", now, "--yes")
    assert result.exit_code == 0 and "purged 7 events" in result.output, result.output
    assert cli("audit", "verify").exit_code == 0
    assert runtime.audit.seal_all(runtime.session_factory) == 1  # the purge's own event
    assert cli("audit", "verify").exit_code == 0
    _tamper(app, text("UPDATE audit_checkpoints SET tree_size = 6"))
    broken = _broken(cli)
    assert "checkpoint" in broken


def test_metrics_report_the_sequencer_lag(app, client, fake_provider):
    _traffic(app, fake_provider, seal=False)
    body = client.get("/metrics").get_data(as_text=True)
    assert "citizen_lookup_audit_unsealed_events 7.0" in body
    assert "citizen_lookup_audit_lag_seconds" in body
    runtime = runtime_of(app)
    runtime.audit.seal_all(runtime.session_factory)
    body = client.get("/metrics").get_data(as_text=True)
    assert "citizen_lookup_audit_lag_seconds 0.0" in body
    assert "citizen_lookup_audit_tree_size 7.0" in body


def test_paths_are_not_written_outside_the_given_file(tmp_path: Path):
    assert not list(tmp_path.iterdir())
