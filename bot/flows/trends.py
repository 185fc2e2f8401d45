"""The default branch's recent baselines, for the trend charts and `tolerance: auto`.

Walked along the first-parent line from the merge-base (the default branch's own history, as
`regression.find_baseline` does), at most `regression.ANCESTORS` commits back; the baselines are
the bot's own records in its bucket (`baselines/<repo>/<sha>.json`), read concurrently.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import charts, verdict
from bot.core.config import Metric
from bot.flows.deps import Deps
from bot.platform import logs

log = logs.get_logger(__name__)

ANCESTORS = 100  # commits walked back from the merge-base
READS = 10  # baseline reads at a time
MAX_CHARTS = 10  # per comment: 30 points each stay far within GitHub's 65,535 characters


@dataclass(frozen=True)
class Trend:
    """Baselines along the default branch, oldest first: (sha, metrics)."""

    baselines: tuple[tuple[str, dict[str, Any]], ...] = ()
    series: dict[str, list[float]] = field(default_factory=dict)  # per metric: its mean in each, oldest first

    def points(self, metric: str) -> list[tuple[str, float]]:
        found = ((sha, verdict.summarize(metrics.get(metric))) for sha, metrics in self.baselines)
        return [(sha, summary[0]) for sha, summary in found if summary is not None]


def first_parents(history: list[dict[str, Any]], start: str) -> list[str]:
    """`start` and its first-parent ancestors among `history` (a commits listing), newest first."""
    by_sha = {str(commit["sha"]): commit for commit in history}
    line, current = [], by_sha.get(start)
    while current is not None:
        line.append(str(current["sha"]))
        parents = current.get("parents") or []
        current = by_sha.get(parents[0]["sha"]) if parents else None
    return line or [start]


async def load(gh: GitHubAPI, deps: Deps, repo: str, merge_base: str, metrics: Sequence[Metric]) -> Trend:
    """The newest baselines at or before `merge_base`, enough for the charts and every `auto` window."""
    if not metrics:
        return Trend()
    wanted = max([charts.POINTS, *(m.auto_window for m in metrics if m.tolerance.auto)])
    history = await gh.getitem("/repos/" + repo + "/commits{?sha,per_page}",
                               url_vars={"sha": merge_base, "per_page": str(ANCESTORS)})
    shas = first_parents(list(history), merge_base)
    found = await read_baselines(deps, repo, shas)
    newest = [(sha, record["metrics"]) for sha, record in zip(shas, found)
              if isinstance(record, dict) and isinstance(record.get("metrics"), dict)][:wanted]
    trend = Trend(tuple(reversed(newest)))
    return Trend(trend.baselines, {m.name: [v for _, v in trend.points(m.name)] for m in metrics})


def baseline_key(repo: str, sha: str) -> str:
    """A default-branch commit's baseline (written only by the bot, from a baseline run's metrics)."""
    return f"baselines/{repo}/{sha}.json"


async def read_baselines(deps: Deps, repo: str, shas: list[str]) -> list[Any]:
    gate = asyncio.Semaphore(READS)

    async def read(sha: str) -> Any:
        async with gate:
            try:
                return await deps.artifacts.get_json(baseline_key(repo, sha))
            except ValueError:  # not JSON: no baseline to show
                return None
    return list(await asyncio.gather(*(read(sha) for sha in shas)))


def comment_charts(result: verdict.Verdict, trend: Trend) -> str:
    """The trend section of the sticky comment: one chart per gated metric that has a value and history."""
    blocks = []
    for row in result.rows[:MAX_CHARTS]:
        points = trend.points(row.metric)
        block = charts.chart(row, points)
        if block:
            blocks.append(f"{charts.caption(row, len(points))}\n\n{block}")
    if not blocks:
        return ""
    if len(result.rows) > MAX_CHARTS:
        blocks.append(f"(The first {MAX_CHARTS} gated metrics are charted; the comment stays readable.)")
    return "\n\n<details open><summary>Trends on the default branch</summary>\n\n" + "\n\n".join(blocks) + \
        "\n\n</details>"
