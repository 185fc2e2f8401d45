"""Metric trends as Mermaid `xychart-beta` line charts, which GitHub renders in comments. No I/O.

A chart per gated metric: the default branch's newest baselines (oldest left), this PR's value as a
flat line of its own, and, when the tolerance is relative or noise-derived (`auto`, seed spread),
the allowed band around the merge-base baseline as two more lines. Every word in the chart is ours
or a validated name (metric names are `[A-Za-z0-9_.-]`, x labels hex shas), every number a finite
float within ±1e15 (`verdict.MAX_MAGNITUDE`): nothing a workload wrote reaches the Mermaid text as text.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from bot.core.verdict import Row, usable

POINTS = 30  # baselines shown
# baseline, this PR, the band's two edges (GitHub's Mermaid may show no legend: the caption names the colours)
PALETTE = "#1f6feb, #d1242f, #8c959f, #8c959f"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
_HEX = re.compile(r"[^0-9a-f]")


def has_band(row: Row) -> bool:
    """The band is drawn when it moves with the data: a relative (`5%`), `auto` or seed-noise tolerance
    (and its edges are numbers a chart holds: not `tolerance: 1e300%`)."""
    return row.baseline is not None and row.allowed > 0 and usable(row.baseline + row.allowed) \
        and usable(row.baseline - row.allowed) and (row.sigma is not None or row.noise > 0 or row.tolerance.endswith("%"))


def chart(row: Row, history: Sequence[tuple[str, float]]) -> str:
    """The ```mermaid block for one metric; "" when there is nothing to draw (no PR value, no baseline).
    `history`: (sha, mean) of the default branch's baselines, oldest first."""
    points = [(sha, value) for sha, value in history if usable(value)][-POINTS:]
    if row.value is None or not usable(row.value) or not points:
        return ""
    name = _SAFE.sub("_", row.metric)[:60]
    series = [("baseline", [v for _, v in points]), ("this PR", [row.value] * len(points))]
    if has_band(row):
        assert row.baseline is not None
        series += [("allowed low", [row.baseline - row.allowed] * len(points)),
                   ("allowed high", [row.baseline + row.allowed] * len(points))]
    low, high = _range([v for _, values in series for v in values])
    labels = ", ".join(f'"{_HEX.sub("", sha)[:7] or "?"}"' for sha, _ in points)
    lines = [f'%%{{init: {{"themeVariables": {{"xyChart": {{"plotColorPalette": "{PALETTE}"}}}}}}}}%%',
             "xychart-beta", f'    title "{name}"', f"    x-axis [{labels}]",
             f'    y-axis "{name}" {_number(low)} --> {_number(high)}']
    lines += [f'    line "{title}" [{", ".join(_number(v) for v in values)}]' for title, values in series]
    return "```mermaid\n" + "\n".join(lines) + "\n```"


def caption(row: Row, count: int) -> str:
    """What the lines are, in words (the colours, for a renderer without a legend)."""
    text = (f"Blue: `{_SAFE.sub('_', row.metric)[:60]}` in the default branch's last {min(count, POINTS)} "
            f"baselines (oldest left); red: this PR ({_number(row.value or 0.0)})")
    if has_band(row):
        text += f"; grey: the allowed band, the merge-base baseline ± {row.allowed:.3g}"
    return text + "."


def _range(values: list[float]) -> tuple[float, float]:
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.01 or 1.0
    return low - pad, high + pad


def _number(value: float) -> str:
    """A plain decimal Mermaid's lexer reads (no exponent)."""
    text = f"{value:.10f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
