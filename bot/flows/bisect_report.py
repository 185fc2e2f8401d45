"""What a bisection tells: the `flops/bisect` check (a per-round table while it runs, the culprit at
the end) and, at the end, a comment: a reply where `/bisect` was asked, or on the culprit's merged PR
when it started by itself. Comments carry `<!-- flops:bisect:<id> -->`: edited, never posted twice."""
from __future__ import annotations

import re
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import bisect as search
from bot.core import verdict
from bot.core.config import Metric
from bot.core.text import escape
from bot.flows.deps import Deps
from bot.platform import checks, comments, logs

log = logs.get_logger(__name__)
State = search.Bisection


def login(text: str) -> str:
    """A GitHub login as GitHub allows them (letters, digits, `-`): shown as a real @-mention."""
    return re.sub(r"[^A-Za-z0-9-]", "", text)[:39]


def marker(state: State) -> str:
    return f"<!-- flops:bisect:{state.id} -->"


def value(results: dict[str, Any], sha: str, metric: Metric) -> float | None:
    summary = verdict.summarize((results.get(sha) or {}).get(metric.name))
    return summary[0] if summary else None


def _number(found: float | None) -> str:
    return "—" if found is None else f"{found:.4g}"


def table(state: State, results: dict[str, Any], metric: Metric, running: list[str] | tuple[str, ...] = ()) -> str:
    """Every commit tested or reused, oldest first, with its value and what it says."""
    rounds = {sha: str(n) for n, shas in enumerate(state.rounds, 1) for sha in shas}
    good = results.get(state.good)
    lines = [f"| round | commit | {escape(metric.name)} | verdict |", "|---|---|---:|---|",
             f"| {rounds.get(state.good, 'baseline')} | `{state.good[:7]}` (good) | "
             f"{_number(value(results, state.good, metric))} | reference |"]
    for sha in state.candidates:
        if sha not in results and sha not in rounds:
            continue
        if sha in results and good is not None:
            worse = verdict.compare(good, results[sha], [metric], {metric.name: list(state.history)}).rows[0]
            said = "❌ worse" if worse.verdict in ("regression", "missing") else "✅ not worse"
        else:
            said = "⏳ running" if sha in running else "⚠️ no result (run failed)" if sha not in results else "—"
        lines.append(f"| {rounds.get(sha, 'baseline')} | `{sha[:7]}`{' (bad)' if sha == state.bad else ''} | "
                     f"{_number(value(results, sha, metric))} | {said} |")
    return "\n".join(lines)


def _tally(state: State) -> str:
    return (f"{len(state.rounds)} round{'s' if len(state.rounds) != 1 else ''}, {state.runs} run"
            f"{'s' if state.runs != 1 else ''} ({state.parallel} per round) over {len(state.candidates)} "
            f"first-parent commits; started by {re.sub(r'[^A-Za-z0-9 /@-]', '', state.trigger)[:80]}")


async def progress(gh: GitHubAPI, state: State, results: dict[str, Any], metric: Metric,
                   running: list[str] | tuple[str, ...]) -> None:
    await checks.update(gh, state.repo, state.check_run, title=f"Round {len(state.rounds)}: {len(running)} run(s) going",
                        summary=f"{_tally(state)}.\n\n{table(state, results, metric, running)}")


async def stopped(gh: GitHubAPI, deps: Deps, state: State, why: str) -> None:
    await checks.complete(gh, state.repo, state.check_run, "neutral", title="Bisection stopped",
                          summary=f"Stopped: {why}\n\n{_tally(state)}.")
    await _tell(gh, deps, state, f"stopped: {why}", None)


async def final(gh: GitHubAPI, deps: Deps, state: State, results: dict[str, Any], metric: Metric,
                step: search.Step | None) -> None:
    """The report: the culprit with its PR, author and values, or why there is none."""
    listing = table(state, results, metric)
    if step is None:
        headline = (f"nothing to bisect: {state.bad[:7]} is not worse than {state.good[:7]} on `{escape(metric.name)}` "
                    f"({_number(value(results, state.good, metric))} -> {_number(value(results, state.bad, metric))})")
        conclusion, title, culprit = "neutral", "Nothing to bisect", None
    elif step.culprit is None:
        maybe = [state.candidates[i][:7] for i in (*step.skipped, step.high)]
        lost = ", ".join(state.candidates[i][:7] for i in step.skipped)
        headline = (f"the first bad commit is one of {', '.join(maybe)}: {lost} could not be measured (the run "
                    f"failed or its Job was deleted)")
        conclusion, title, culprit = "neutral", "First bad commit not pinned down", None
    else:
        culprit = state.candidates[step.culprit]
        before = state.good if step.low < 0 else state.candidates[step.low]
        pr, author = await culprit_pull(gh, state.repo, culprit)
        who = f" (#{pr} by @{login(author)})" if pr and author else f" (#{pr})" if pr else \
            f" (by @{login(author)})" if author else ""
        headline = (f"first bad commit {culprit[:7]}{who}: {escape(metric.name)} "
                    f"{_number(value(results, before, metric))} -> {_number(value(results, culprit, metric))}")
        conclusion, title = "success", f"First bad commit {culprit[:7]}"
    summary = f"**{headline[0].upper() + headline[1:]}.**\n\n{_tally(state)}.\n\n{listing}"
    await checks.complete(gh, state.repo, state.check_run, conclusion, title=title, summary=summary)
    await _tell(gh, deps, state, f"{headline}.\n\n{_tally(state)}.\n\n{listing}", culprit)


async def culprit_pull(gh: GitHubAPI, repo: str, sha: str) -> tuple[int | None, str]:
    """(the merged PR the commit came from, its author); (None, the commit's author) without one."""
    pulls = await gh.getitem("/repos/" + repo + "/commits/{sha}/pulls", url_vars={"sha": sha})
    merged = [p for p in pulls if p.get("merged_at")] or list(pulls)
    if merged:
        return int(merged[0]["number"]), str((merged[0].get("user") or {}).get("login") or "")
    commit = await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha})
    return None, str((commit.get("author") or {}).get("login") or "")


async def _tell(gh: GitHubAPI, deps: Deps, state: State, text: str, culprit: str | None) -> None:
    """A reply where `/bisect` was asked; for an automatic one, a comment on the culprit's merged PR."""
    body = f"{marker(state)}\n**Bisection {state.good[:7]}..{state.bad[:7]}**: {text}"
    if state.reply_to is not None:
        await comments.upsert(gh, state.repo, state.reply_to[0], marker(state), body,
                              author=await deps.github.bot_login())
        return
    pr = (await culprit_pull(gh, state.repo, culprit))[0] if culprit else None
    if pr is not None:
        await comments.upsert(gh, state.repo, pr, marker(state), body, author=await deps.github.bot_login())
