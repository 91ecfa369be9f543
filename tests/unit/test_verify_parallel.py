"""`audit verify` with a pool of workers (issue 18): the same chunk boundaries, given
checkpoints and first damage as tests/unit/test_verify_mutants.py checks in one process, and
the unsealed events split among one, two or three workers, each checked once.

Kept apart: each verify here starts a pool of processes, too slow to run for every mutant of
verify.py (scripts/mutation runs this file for runner.py, the pool's own code)."""

from __future__ import annotations

import pytest

from tests.helpers import runtime_of
from tests.unit.test_verify_mutants import (
    check_chunk_boundaries,
    check_first_damage,
    check_given_checkpoint,
    check_unsealed_split,
)


@pytest.mark.parametrize("n", [15, 16, 17, 33])
def test_chunk_boundaries_with_two_workers(app, clock, n):
    check_chunk_boundaries(runtime_of(app), n, workers=2)


@pytest.mark.parametrize("size", [15, 16, 17])
def test_a_checkpoint_given_near_a_chunk_boundary_with_two_workers(app, clock, size):
    check_given_checkpoint(runtime_of(app), size, workers=2)


def test_the_first_damage_is_named_when_workers_check_several_damaged_chunks(app, clock):
    check_first_damage(runtime_of(app), workers=2)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_unsealed_events_are_split_among_workers_and_each_checked_once(app, clock, workers):
    check_unsealed_split(runtime_of(app), workers=workers)
