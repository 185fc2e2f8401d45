"""bot.verdict: PR metrics against the baseline's, per metric. Plain data in, plain data out."""
from __future__ import annotations

import math

import pytest

from bot.core.config import Metric, Tolerance, parse_tolerance
from bot.core.verdict import compare, summarize, table

ACC = Metric("accuracy", "higher", Tolerance(0.01))
LOSS = Metric("loss", "lower", Tolerance(5.0, relative=True))


def verdicts(baseline: dict, candidate: dict, metrics: list[Metric]) -> dict[str, str]:
    return {row.metric: row.verdict for row in compare(baseline, candidate, metrics).rows}


def test_within_absolute_tolerance_passes() -> None:
    result = compare({"accuracy": 0.912}, {"accuracy": 0.905}, [ACC])
    assert result.conclusion == "success"
    assert [r.verdict for r in result.rows] == ["ok"]
    assert result.title == "0 regressions / 1 metric"


def test_drop_beyond_absolute_tolerance_is_a_regression() -> None:
    result = compare({"accuracy": 0.912}, {"accuracy": 0.80}, [ACC])
    assert result.conclusion == "failure"
    [row] = result.rows
    assert row.verdict == "regression"
    assert row.delta == pytest.approx(-0.112)
    assert row.delta_pct == pytest.approx(-12.28, abs=0.01)


def test_exactly_at_the_tolerance_passes() -> None:
    assert verdicts({"accuracy": 0.9}, {"accuracy": 0.89}, [ACC]) == {"accuracy": "ok"}


def test_relative_tolerance_is_a_percentage_of_the_baseline() -> None:
    # 5% of 0.2 is 0.01: 0.209 is within, 0.215 is not
    assert verdicts({"loss": 0.2}, {"loss": 0.209}, [LOSS]) == {"loss": "ok"}
    assert verdicts({"loss": 0.2}, {"loss": 0.215}, [LOSS]) == {"loss": "regression"}


def test_direction_decides_which_way_is_worse() -> None:
    lower = Metric("loss", "lower", Tolerance(0.0))
    higher = Metric("loss", "higher", Tolerance(0.0))
    assert verdicts({"loss": 0.3}, {"loss": 0.2}, [lower]) == {"loss": "improved"}
    assert verdicts({"loss": 0.3}, {"loss": 0.2}, [higher]) == {"loss": "regression"}


def test_improvement_never_fails() -> None:
    result = compare({"accuracy": 0.8, "loss": 0.5}, {"accuracy": 0.95, "loss": 0.1}, [ACC, LOSS])
    assert result.conclusion == "success"
    assert {r.verdict for r in result.rows} == {"improved"}


@pytest.mark.parametrize("value", [None, float("nan"), float("inf"), "0.9", [], [0.9, float("nan")], True,
                                   {"mean": 0.9}])
def test_missing_or_unusable_gated_metric_fails(value: object) -> None:
    candidate = {} if value is None else {"accuracy": value}
    result = compare({"accuracy": 0.9}, candidate, [ACC])
    assert result.conclusion == "failure"
    assert result.rows[0].verdict == "missing"
    assert result.missing == 1


def test_metric_absent_from_the_baseline_is_new_not_a_failure() -> None:
    result = compare({"accuracy": 0.9}, {"accuracy": 0.9, "loss": 0.3}, [ACC, LOSS])
    assert verdicts({"accuracy": 0.9}, {"accuracy": 0.9, "loss": 0.3}, [ACC, LOSS]) == {"accuracy": "ok",
                                                                                      "loss": "new"}
    assert result.conclusion == "success"


def test_only_gated_metrics_count() -> None:
    result = compare({"accuracy": 0.9, "f1": 0.9}, {"accuracy": 0.9, "f1": 0.1}, [ACC])
    assert [r.metric for r in result.rows] == ["accuracy"]
    assert result.conclusion == "success"


def test_title_counts_regressions_over_metrics() -> None:
    metrics = [ACC, LOSS, Metric("f1", "higher", Tolerance(0.0)), Metric("auc", "higher", Tolerance(0.0))]
    result = compare({"accuracy": 0.9, "loss": 0.2, "f1": 0.8, "auc": 0.7},
                     {"accuracy": 0.7, "loss": 0.2, "f1": 0.8, "auc": 0.7}, metrics)
    assert result.title == "1 regression / 4 metrics"
    two = compare({"accuracy": 0.9, "loss": 0.2}, {"accuracy": 0.7}, [ACC, LOSS])
    assert two.title == "2 regressions / 2 metrics"


def test_seed_lists_are_averaged() -> None:
    assert summarize([0.9, 0.92, 0.94]) == pytest.approx((0.92, 0.02, 3))
    assert summarize(0.5) == (0.5, 0.0, 1)
    assert summarize([1, 2]) == pytest.approx((1.5, math.sqrt(0.5), 2))


def test_seed_spread_on_both_sides_widens_the_band_by_the_standard_error() -> None:
    base = [0.90, 0.92, 0.94]  # mean 0.92, stdev 0.02
    pr = [0.89, 0.90, 0.91]  # mean 0.90, stdev 0.01: 0.02 worse, tolerance 0.01
    [row] = compare({"accuracy": base}, {"accuracy": pr}, [ACC]).rows
    assert row.noise == pytest.approx(math.sqrt(0.02 ** 2 / 3 + 0.01 ** 2 / 3))
    assert row.allowed == pytest.approx(0.01 + row.noise)
    assert row.verdict == "ok"
    # the same means as single values: no noise known, so the drop is a regression
    assert verdicts({"accuracy": 0.92}, {"accuracy": 0.90}, [ACC]) == {"accuracy": "regression"}


def test_more_seeds_tighten_the_band() -> None:
    base, pr = [0.90, 0.92, 0.94] * 2, [0.89, 0.90, 0.91] * 2  # same spread, twice the seeds
    [row] = compare({"accuracy": base}, {"accuracy": pr}, [ACC]).rows
    assert row.verdict == "regression"
    assert row.allowed < 0.02


def test_seed_spread_on_one_side_only_does_not_widen() -> None:
    [row] = compare({"accuracy": [0.90, 0.92, 0.94]}, {"accuracy": 0.895}, [ACC]).rows
    assert row.noise == 0.0 and row.verdict == "regression"


def test_noise_does_not_hide_a_real_drop() -> None:
    base, pr = [0.90, 0.92, 0.94], [0.70, 0.72, 0.74]
    assert verdicts({"accuracy": base}, {"accuracy": pr}, [ACC]) == {"accuracy": "regression"}


def test_relative_tolerance_with_a_zero_baseline_allows_nothing() -> None:
    zero = Metric("errors", "lower", parse_tolerance("10%"))
    assert verdicts({"errors": 0}, {"errors": 0}, [zero]) == {"errors": "ok"}
    assert verdicts({"errors": 0}, {"errors": 1}, [zero]) == {"errors": "regression"}
    [row] = compare({"errors": 0}, {"errors": 1}, [zero]).rows
    assert row.delta_pct is None  # no percentage of zero


def test_no_baseline_at_all_marks_every_metric_new() -> None:
    result = compare({}, {"accuracy": 0.9, "loss": 0.2}, [ACC, LOSS])
    assert {r.verdict for r in result.rows} == {"new"}
    assert result.regressions == 0


def test_table_has_every_column_and_formats_numbers() -> None:
    text = table(compare({"accuracy": 0.912, "loss": 0.2}, {"accuracy": 0.8, "loss": 0.19}, [ACC, LOSS]))
    lines = text.splitlines()
    assert lines[0] == "| metric | direction | baseline | PR | delta | delta % | tolerance | verdict |"
    assert lines[2] == "| accuracy | higher | 0.912 | 0.8 | -0.112 | -12.28% | 0.01 | ❌ regression |"
    assert lines[3] == "| loss | lower | 0.2 | 0.19 | -0.01 | -5.00% | 5% | 🟢 improved |"


def test_table_shows_missing_values_and_seed_noise() -> None:
    text = table(compare({"accuracy": [0.90, 0.92, 0.94], "loss": 0.2},
                         {"accuracy": [0.91, 0.92, 0.93]}, [ACC, LOSS]))
    assert "| 0.01 (+0.0129 seed noise) |" in text
    assert "| loss | lower | 0.2 | — | — | — | 5% | ❌ missing |" in text


@pytest.mark.parametrize("value", [1e300, -1e300, [1e308, 1e308], [0.9, 2e15]])
def test_a_huge_value_is_no_metric_and_never_overflows(value: object) -> None:
    """A workload's metrics.json is what it likes: [1e308, 1e308] overflowed the mean (the report
    raised), and 1e300 went through as a number hundreds of digits long in the charts."""
    result = compare({"accuracy": 0.9}, {"accuracy": value}, [ACC])
    assert result.rows[0].verdict == "missing" and result.conclusion == "failure"
    assert compare({"accuracy": value}, {"accuracy": 0.9}, [ACC]).rows[0].verdict == "new"


def test_a_baseline_near_zero_gives_a_short_percentage() -> None:
    text = table(compare({"accuracy": 1e-300}, {"accuracy": 0.9}, [ACC]))
    assert "+9e+301%" in text and max(len(line) for line in text.splitlines()) < 200
