"""The k-ary search core (bot/core/bisect.py): probes, narrowing, skips. Sans-I/O."""
from __future__ import annotations

import json
import random

import pytest

from bot.core import bisect


def run(n: int, k: int, culprit: int) -> tuple[int, int, int | None]:
    known: dict[int, bool] = {}
    rounds = runs = 0
    while not (step := bisect.step(n, known, k)).done:
        rounds, runs = rounds + 1, runs + len(step.probes)
        assert len(step.probes) <= k and not set(step.probes) & set(known)
        known.update({i: i >= culprit for i in step.probes})
    return rounds, runs, step.culprit


def test_twelve_candidates_three_at_a_time_take_two_rounds() -> None:
    first = bisect.step(12, {}, 3)
    assert (first.probes, first.low, first.high) == ((2, 5, 8), -1, 11)
    second = bisect.step(12, {2: False, 5: False, 8: True}, 3)
    assert second.probes == (6, 7)
    assert bisect.step(12, {2: False, 5: False, 8: True, 6: False, 7: True}, 3).culprit == 7
    assert all(run(12, 3, c)[0] <= 2 and run(12, 3, c)[1] <= 6 for c in range(12))


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 16])
def test_every_culprit_is_found(k: int) -> None:
    rng = random.Random(k)
    for _ in range(200):
        n = rng.randint(1, 300)
        culprit = rng.randrange(n)
        assert run(n, k, culprit)[2] == culprit


def test_known_results_narrow_the_range_before_anything_runs() -> None:
    # baselines already recorded at 3 (good) and 9 (bad): only 4..8 are left
    step = bisect.step(12, {3: False, 9: True}, 7)
    assert (step.low, step.high, step.probes) == (3, 9, (4, 5, 6, 7, 8))


def test_a_skipped_candidate_is_not_probed_again_and_clouds_the_answer() -> None:
    step = bisect.step(4, {0: False}, 3, skipped={1, 2})
    assert step.done and step.culprit is None and step.skipped == (1, 2) and step.high == 3


def test_a_single_candidate_is_the_culprit_without_a_run() -> None:
    step = bisect.step(1, {}, 4)
    assert step.done and step.culprit == 0


def test_no_candidates_or_no_runs_per_round_is_refused() -> None:
    with pytest.raises(ValueError):
        bisect.step(0, {}, 3)
    with pytest.raises(ValueError):
        bisect.step(5, {}, 0)


def test_the_state_reads_back_as_written_and_ignores_keys_it_does_not_know() -> None:
    state = bisect.Bisection("abc1234-def5678", "o/r", 77, "main", "a" * 40, "d" * 40,
                             {"name": "accuracy", "direction": "higher", "tolerance": 0.01}, ("b" * 40, "d" * 40), 3,
                             12, "/bisect by @ada", (7, 99), (0.9, 0.91), (("b" * 40,),))
    data = json.loads(json.dumps(state.to_json()))
    assert bisect.Bisection.from_json(data) == state and state.runs == 1
    assert bisect.Bisection.from_json({**data, "added_later": 1}) == state
    with pytest.raises(ValueError):
        bisect.Bisection.from_json([1])
