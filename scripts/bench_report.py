"""The benchmark's output: a table of figures beside their anchors and ratios, and JSON.

Each row names a figure of ours, the anchor it is measured against in the same run (if any),
the ratio, and the SPEC section 11 target. Rows whose figures a run did not measure are left
out; every measured key also goes to ``--json FILE`` as it is, so two runs can be compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple


class Row(NamedTuple):
    label: str
    ours: str  # key of our figure
    anchor: str | None  # key of the anchor's figure
    ratio: str | None  # key of the ratio
    unit: str
    target: str


ROWS = (
    Row("webhook ingest, wrk 32 connections", "ingest_rps", "ingest_anchor_rps", "ingest_ratio",
        "req/s", ">= 0.5x"),
    Row("ingest p99 at 300 req/s", "ingest_p99_ms", "ingest_anchor_p99_ms", None, "ms", "< 25 ms"),
    Row("one worker, MO to MT", "worker_msgs_per_s", "worker_anchor_jobs_per_s", "worker_ratio",
        "msg/s", ">= 0.6x"),
    Row("worker peak RSS while draining", "worker_peak_rss_mb", None, None, "MB", "< 150 MB"),
    Row("end to end p99 at 100 MO/s, 2 workers", "e2e_p99_ms", None, None, "ms", "< 500 ms"),
    Row("end to end p50", "e2e_p50_ms", None, None, "ms", ""),
    Row("whole lookup p99 (ID, sender, links)", "lookup_p99_ms", "lookup_raw_p99_ms",
        "lookup_ratio", "ms", "< 1 ms, <= 4x"),
    Row("whole lookup p50", "lookup_p50_ms", "lookup_raw_p50_ms", "lookup_ratio_p50", "ms", ""),
    Row("answer (lookup + reply text) p99", "answer_p99_ms", None, None, "ms", ""),
    Row("citizens in the lookup database", "lookup_citizens", None, None, "", "10,000,000"),
    Row("demo seed (COPY of new citizens)", "seed_citizens_per_s", None, None, "citizens/s", ""),
    Row("citizens import FILE (CSV, validated)", "import_citizens_per_s", "raw_copy_citizens_per_s",
        "import_ratio", "citizens/s", ">= 100,000/s, >= 0.4x"),
    Row("the same file again (every row an update)", "import_update_citizens_per_s", None, None,
        "citizens/s", ""),
    Row("audit append, short trail", "audit_append_per_s_short", None, None, "/s", ""),
    Row("audit append, long trail", "audit_append_per_s_long", None, None, "/s",
        "independent of length"),
    Row("audit verify", "audit_verify_events_per_s", None, None, "events/s", ">= 200,000/s"),
    Row("national day: sustained", "day_msgs_per_s", None, None, "msg/s", ""),
    Row("national day: end to end p50", "day_p50_ms", None, None, "ms", ""),
    Row("national day: end to end p99", "day_p99_ms", None, None, "ms", ""),
    Row("national day: lost", "day_lost", None, None, "", "0"),
    Row("national day: duplicated", "day_duplicated", None, None, "", "0"),
    Row("national day: hours for a million", "day_hours_per_million", None, None, "h", "< 1 h"),
)  # fmt: skip


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if value < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    """The figures as a plain-text table (ours | anchor | ratio | target)."""
    lines = [("what", "ours", "anchor", "ratio", "target")]
    for row in ROWS:
        if row.ours not in results:
            continue
        ours = f"{_text(results[row.ours])} {row.unit}".strip()
        anchor = _text(results[row.anchor]) if row.anchor and row.anchor in results else ""
        ratio = _text(results[row.ratio]) if row.ratio and row.ratio in results else ""
        lines.append((row.label, ours, anchor, ratio, row.target))
    shown = {key for row in ROWS for key in (row.ours, row.anchor, row.ratio) if key}
    for key, value in results.items():  # figures no row names yet still show
        if key not in shown:
            lines.append((key, _text(value), "", "", ""))
    widths = [max(len(line[i]) for line in lines) for i in range(5)]
    out = []
    for n, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
