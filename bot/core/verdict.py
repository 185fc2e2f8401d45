"""Regression verdicts: PR metrics against the baseline's, per metric, from config. No I/O.

A metric is a number or a list of numbers (several seeds). Tolerance is absolute or relative
(`N%` of the baseline). With several seeds on both sides the allowed band also widens by the
noise of the comparison: the standard error of the difference of the two means,
sqrt(s_base²/n_base + s_pr²/n_pr) — more seeds, a tighter gate. `tolerance: auto` allows k standard
deviations of the metric over the newest `auto_window` default-branch baselines (`history`, oldest
first); with fewer than `AUTO_MIN` of them the metric is undecided and the run `neutral`.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bot.core.config import AUTO_MIN, Metric
from bot.core.text import escape

Value = float | Sequence[float]
# Beyond this a value is no metric but a workload's overflow: treated as NaN (the gate fails), so no
# mean or sigma overflows and no chart or table number runs to hundreds of digits.
MAX_MAGNITUDE = 1e15


@dataclass(frozen=True)
class Row:
    metric: str
    direction: str
    baseline: float | None
    value: float | None
    allowed: float  # the band, in the metric's units (tolerance + noise)
    tolerance: str
    verdict: str  # ok | improved | regression | missing (the PR has no value) | new (the baseline has none)
    #               | history (`tolerance: auto` with fewer than AUTO_MIN baselines)
    noise: float = 0.0  # how much of `allowed` is seed spread
    sigma: float | None = None  # `tolerance: auto`: the baselines' standard deviation, over `window` of them
    window: int = 0

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.value is None else self.value - self.baseline

    @property
    def delta_pct(self) -> float | None:
        d = self.delta
        return None if d is None or not self.baseline else 100.0 * d / abs(self.baseline)


@dataclass(frozen=True)
class Verdict:
    rows: tuple[Row, ...]

    @property
    def regressions(self) -> int:
        """Rows that fail the gate: worse than allowed, or no usable value from the PR."""
        return sum(r.verdict in ("regression", "missing") for r in self.rows)

    @property
    def missing(self) -> int:
        return sum(r.verdict == "missing" for r in self.rows)

    @property
    def undecided(self) -> int:
        return sum(r.verdict == "history" for r in self.rows)

    @property
    def conclusion(self) -> str:
        return "failure" if self.regressions else "neutral" if self.undecided else "success"

    @property
    def title(self) -> str:
        n = self.regressions
        if not n and self.undecided:
            return NOT_ENOUGH_HISTORY
        return f"{n} regression{'s' if n != 1 else ''} / {len(self.rows)} metric{'s' if len(self.rows) != 1 else ''}"


def summarize(value: object) -> tuple[float, float, int] | None:
    """(mean, stdev, n) of a metric value; None when it is not a finite number or list of them, or one
    of them is beyond ±MAX_MAGNITUDE."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return None
    floats = [float(v) for v in values]  # type: ignore[arg-type]
    if not all(usable(v) for v in floats):
        return None
    return statistics.fmean(floats), (statistics.stdev(floats) if len(floats) > 1 else 0.0), len(floats)


def usable(value: float) -> bool:
    return math.isfinite(value) and abs(value) <= MAX_MAGNITUDE


NOT_ENOUGH_HISTORY = "not enough history for an automatic tolerance"


def compare(baseline: Mapping[str, object], candidate: Mapping[str, object], metrics: Sequence[Metric],
            history: Mapping[str, Sequence[float]] | None = None) -> Verdict:
    """`history`: per metric, its mean in each default-branch baseline, oldest first (for `auto`)."""
    return Verdict(tuple(_row(m, baseline.get(m.name), candidate.get(m.name), (history or {}).get(m.name, ()))
                         for m in metrics))


def auto_sigma(metric: Metric, history: Sequence[float]) -> tuple[float, int] | None:
    """(sigma, baselines used) of `tolerance: auto`; None below AUTO_MIN baselines."""
    window = list(history)[-metric.auto_window:]
    return (statistics.stdev(window), len(window)) if len(window) >= AUTO_MIN else None


def _row(metric: Metric, base_value: object, value: object, history: Sequence[float] = ()) -> Row:
    tol = metric.tolerance
    tol_text = f"auto ({metric.auto_k:g}σ)" if tol.auto else f"{tol.value:g}%" if tol.relative else f"{tol.value:g}"
    base, mine = summarize(base_value), summarize(value)
    if mine is None:  # NaN, missing or not a number: the gate fails
        return Row(metric.name, metric.direction, base[0] if base else None, None, 0.0, tol_text, "missing")
    if base is None:  # nothing to compare with (no baseline yet, or the metric is new)
        return Row(metric.name, metric.direction, None, mine[0], 0.0, tol_text, "new")
    if tol.auto:
        return _auto_row(metric, base[0], mine[0], tol_text, auto_sigma(metric, history))
    allowed = tol.value / 100.0 * abs(base[0]) if tol.relative else tol.value
    noise = math.sqrt(base[1] ** 2 / base[2] + mine[1] ** 2 / mine[2]) if base[2] > 1 and mine[2] > 1 else 0.0
    allowed += noise
    return Row(metric.name, metric.direction, base[0], mine[0], allowed, tol_text, _judge(metric, base[0], mine[0],
                                                                                          allowed), noise)


def _auto_row(metric: Metric, base: float, mine: float, tol_text: str, spread: tuple[float, int] | None) -> Row:
    """k sigma of the recent baselines: the seeds' noise is in that spread already, not added twice."""
    if spread is None:
        return Row(metric.name, metric.direction, base, mine, 0.0, tol_text, "history")
    sigma, window = spread
    allowed = metric.auto_k * sigma
    return Row(metric.name, metric.direction, base, mine, allowed, tol_text, _judge(metric, base, mine, allowed),
               sigma=sigma, window=window)


def _judge(metric: Metric, base: float, mine: float, allowed: float) -> str:
    worse_by = (base - mine) if metric.direction == "higher" else (mine - base)
    if worse_by > allowed + 1e-12:
        return "regression"
    return "improved" if worse_by < -allowed else "ok"


ICONS = {"ok": "✅ ok", "improved": "🟢 improved", "regression": "❌ regression", "missing": "❌ missing",
         "new": "🆕 no baseline value", "history": "⚪ not enough history"}


def table(verdict: Verdict) -> str:
    lines = ["| metric | direction | baseline | PR | delta | delta % | tolerance | verdict |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for r in verdict.rows:
        lines.append(f"| {escape(r.metric)} | {r.direction} | {_num(r.baseline)} | {_num(r.value)} | {_num(r.delta, sign=True)} "
                     f"| {_pct(r.delta_pct)} | {_tolerance(r)} | {ICONS[r.verdict]} |")
    return "\n".join(lines)


def _tolerance(row: Row) -> str:
    if row.verdict == "history":
        return f"{row.tolerance}: fewer than {AUTO_MIN} baselines"
    if row.sigma is not None:
        return f"{row.tolerance} = ±{row.allowed:.3g} (σ {row.sigma:.3g} over the last {row.window} baselines)"
    return f"{row.tolerance} (+{row.noise:.3g} seed noise)" if row.noise else row.tolerance


def _num(value: float | None, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.4g}" if sign else f"{value:.4g}"


def _pct(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}%" if abs(value) < 1e6 else f"{value:+.3g}%"  # a baseline near 0: no 300-digit percent
