"""No oracle: an unknown ID and a number not registered on a known ID read and cost the same."""

from __future__ import annotations

import statistics
import time

from citizen_lookup.domain.syntax import parse_command
from citizen_lookup.services.lookup import answer
from tests.helpers import OWNER_ID, STRANGER_PHONE, add_citizen, runtime_of

SAMPLES = 400


def _quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, median, q3


def test_not_found_and_not_registered_are_indistinguishable(app):
    for n in range(200):  # a table that is not empty, so "found" has rows to find
        add_citizen(
            app, id_number=f"0010990{n:05d}", phones=(f"+849100{n:05d}",), health=False, tax=False
        )
    add_citizen(app, id_number=OWNER_ID, phones=("+84912345678",))
    runtime = runtime_of(app)
    known = parse_command(f"DC {OWNER_ID}")  # exists, but not for this sender
    unknown = parse_command("DC 079199000001")  # does not exist
    timings: dict[str, list[float]] = {"not_registered": [], "not_found": []}
    texts: dict[str, set[bytes]] = {"not_registered": set(), "not_found": set()}

    with runtime.session_factory() as session:
        for i in range(SAMPLES * 2):
            # interleaved, so drift in the machine's load falls on both alike
            name, command = (("not_registered", known), ("not_found", unknown))[i % 2]
            started = time.perf_counter()
            reply = answer(session, command, STRANGER_PHONE, "vi", runtime.lookup_context)
            timings[name].append(time.perf_counter() - started)
            texts[name].add(reply.text.encode())
            assert reply.outcome == "not_matched"

    assert texts["not_registered"] == texts["not_found"]
    assert len(texts["not_found"]) == 1
    # The difference of the medians must be inside the noise: smaller than the spread (IQR) of
    # either sample. A real oracle (an extra query, say) would shift one median by far more.
    a, b = _quartiles(timings["not_registered"]), _quartiles(timings["not_found"])
    noise = max(a[2] - a[0], b[2] - b[0])
    assert abs(a[1] - b[1]) <= noise, (a, b)


def test_the_comparison_would_see_an_oracle(app):
    """The statistic above is not blind: one extra query on one path is detected."""
    add_citizen(app)
    runtime = runtime_of(app)
    command = parse_command("DC 079199000001")
    fast, slow = [], []
    with runtime.session_factory() as session:
        for i in range(SAMPLES * 2):
            started = time.perf_counter()
            answer(session, command, STRANGER_PHONE, "vi", runtime.lookup_context)
            if i % 2:
                for _ in range(5):  # what an oracle costs: more work on one path
                    answer(session, command, STRANGER_PHONE, "vi", runtime.lookup_context)
                slow.append(time.perf_counter() - started)
            else:
                fast.append(time.perf_counter() - started)
    a, b = _quartiles(fast), _quartiles(slow)
    assert abs(a[1] - b[1]) > max(a[2] - a[0], b[2] - b[0])
