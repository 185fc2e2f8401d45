"""Bisection: the first default-branch commit that made a gated metric worse, in parallel rounds.

Started by `/bisect [<good> <bad>] [metric=<name>]` (any issue or PR; write permission) or, with
`regression.bisect.auto`, by a baseline worse than the previous one. The candidates are the
first-parent commits of the default branch in (good, bad] (GitHub's compare API); each round runs up
to `regression.bisect.parallel` ordinary regression baseline runs (labelled `flops.dev/bisect=<id>`)
at evenly spaced candidates (bot/core/bisect.py), reusing every candidate that has a baseline. The
state is in the bot's bucket and the results are the baselines themselves, so each step is worked
out again from what S3 and Kubernetes hold: a restart, or the same step taken twice, changes nothing.
Config is the default branch's, read at its head: a PR cannot start or shape a bisection.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import bisect as search
from bot.core import jobs, verdict
from bot.core.config import Metric, RegressionConfig
from bot.flows import bisect_report, builds, lifecycle, regression, trends
from bot.flows.bisect_range import Refused as Refused
from bot.flows.bisect_range import first_parents, full_sha, on_default_branch
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)
State = search.Bisection
FAILED = ("failure", "timed_out", "cancelled")
MAX_RUNNING = 3  # bisections of one repository at a time: each holds up to `parallel` GPU runs


@dataclasses.dataclass(frozen=True)
class Request:
    repo: str
    installation: int
    default_branch: str
    trigger: str  # "auto" or "/bisect by @<user>"
    good: str = ""  # "" with bad: the latest baselines decide
    bad: str = ""
    metric: str | None = None
    reply_to: tuple[int, int] | None = None


def state_key(repo: str, bisection: str) -> str:
    return f"bisect/{repo}/{bisection}.json"


async def load(deps: Deps, repo: str, bisection: str) -> State | None:
    data = await deps.artifacts.get_json(state_key(repo, bisection))
    return State.from_json(data) if data is not None else None


RUNNING = "bisect-running/"


def running_key(repo: str, bisection: str) -> str:
    """A running bisection's marker: `running` and `resume` list these few, not every bisection ever made."""
    return f"{RUNNING}{repo}/{bisection}"


async def save(deps: Deps, state: State) -> None:
    await deps.artifacts.put_json(state_key(state.repo, state.id), state.to_json())
    if state.status == "running":
        await deps.artifacts.put_json(running_key(state.repo, state.id), {"id": state.id})
    else:
        await deps.artifacts.delete(running_key(state.repo, state.id))


def metric_of(state: State) -> Metric:
    return regression.metrics_from_annotation(json.dumps([state.metric]))[0]


async def start(gh: GitHubAPI, deps: Deps, request: Request) -> str:
    """Begin a bisection (the first round starts now); the sentence that answers the request."""
    cfg = await _regression_config(gh, request)
    good, bad, metric = await _range(gh, deps, request, cfg)
    await on_default_branch(gh, request.repo, bad, request.default_branch)
    candidates = await first_parents(gh, request.repo, good, bad, cfg.bisect.max_commits)
    async with deps.locks.setdefault(f"bisect-start:{request.repo}", asyncio.Lock()):  # two at once: one slot
        begun = await _begin(gh, deps, request, cfg, (good, bad, metric), candidates)
    if isinstance(begun, str):
        return begun
    await advance(gh, deps, begun.repo, begun.id)
    return (f"bisecting {len(candidates)} first-parent commit{'s' if len(candidates) != 1 else ''} in "
            f"{good[:7]}..{bad[:7]} on `{metric.name}`, {cfg.bisect.parallel} runs per round; "
            f"`{checks.BISECT}` on {bad[:7]} follows it.")


async def _begin(gh: GitHubAPI, deps: Deps, request: Request, cfg: RegressionConfig,
                 search_range: tuple[str, str, Metric], candidates: list[str]) -> State | str:
    """The new bisection's state, saved; or the answer when the range is bisected already."""
    good, bad, metric = search_range
    bisection = f"{good[:7]}-{bad[:7]}"
    existing = await load(deps, request.repo, bisection)
    if existing is not None and (existing.status == "running" or request.trigger == "auto"):
        if existing.status != "running":  # an automatic one starts once per range
            return f"{good[:7]}..{bad[:7]} was bisected already (`{checks.BISECT}` on {bad[:7]})."
        await advance(gh, deps, existing.repo, existing.id)  # asked again: the next step taken again
        return f"a bisection of {good[:7]}..{bad[:7]} is already running (`{checks.BISECT}` on {bad[:7]})."
    if len(await running(deps, request.repo)) >= MAX_RUNNING:
        raise Refused(f"{MAX_RUNNING} bisections of this repository are running already: wait for one, or stop "
                      f"them with `/cancel bisect`.")
    history = (await trends.load(gh, deps, request.repo, good, [metric])).series.get(metric.name, []) \
        if metric.tolerance.auto else []
    check = await checks.create(gh, request.repo, bad, checks.BISECT, external_id=bisection,
                                title=f"Bisecting {len(candidates)} commits",
                                summary=f"Looking for the first commit after {good[:7]} that made `{metric.name}` worse.")
    gate = regression.metrics_annotation(dataclasses.replace(cfg, metrics=(metric,)))
    state = State(bisection, request.repo, request.installation, request.default_branch, good, bad,
                  json.loads(gate)[0], tuple(candidates), cfg.bisect.parallel, check, request.trigger,
                  request.reply_to, tuple(history))
    await save(deps, state)
    log.info("bisection started", extra={"repo": request.repo, "bisection": bisection, "candidates": len(candidates)})
    return state


async def _regression_config(gh: GitHubAPI, request: Request) -> RegressionConfig:
    trusted = await builds.trusted_config(gh, request.repo, request.default_branch)
    if trusted is None or trusted.regression is None:
        raise Refused(f"`{request.default_branch}` has no valid `.github/flops.yml` with a `regression:` section, "
                      f"and a bisection runs the default branch's regression Job.")
    if not trusted.regression.metrics:
        raise Refused("`regression.metrics` gates no metric, so no commit can be worse: add one to bisect.")
    return trusted.regression


def _metric(cfg: RegressionConfig, name: str | None) -> Metric:
    found = next((m for m in cfg.metrics if m.name == name), None) if name else cfg.metrics[0]
    if found is None:
        known = ", ".join(f"`{m.name}`" for m in cfg.metrics)
        raise Refused(f"`{name}` is not a gated metric (`regression.metrics` gates {known}).")
    return found


async def _range(gh: GitHubAPI, deps: Deps, request: Request, cfg: RegressionConfig) -> tuple[str, str, Metric]:
    """(good, bad, metric): the shas given (made full), or the latest baselines' drop."""
    if request.bad:
        good, bad = await full_sha(gh, request.repo, request.good), await full_sha(gh, request.repo, request.bad)
        return good, bad, _metric(cfg, request.metric)
    metrics = [_metric(cfg, request.metric)] if request.metric else list(cfg.metrics)
    head = await gh.getitem("/repos/" + request.repo + "/commits/{ref}", url_vars={"ref": request.default_branch})
    trend = await trends.load(gh, deps, request.repo, str(head["sha"]), metrics)
    if not trend.baselines:
        raise Refused(f"`{request.default_branch}` has no baseline in its last {trends.ANCESTORS} commits: "
                      f"give the range, `/bisect <good-sha> <bad-sha>`.")
    bad, bad_metrics = trend.baselines[-1]
    for sha, metrics_then in reversed(trend.baselines[:-1]):
        for metric in metrics:
            if _worse(metric, metrics_then, bad_metrics, trend.series.get(metric.name, [])):
                return sha, bad, metric
    raise Refused(f"the latest baseline ({bad[:7]}) is not worse than any earlier one on "
                  f"{', '.join(f'`{m.name}`' for m in metrics)}: nothing to bisect.")


async def running(deps: Deps, repo: str) -> list[State]:
    """The repository's running bisections, found by their markers (a marker left by a crash between
    the record and the marker is of a record that says it is over: not counted)."""
    found = []
    for key in await deps.artifacts.list_keys(running_key(repo, "")):
        state = await load(deps, repo, key.rsplit("/", 1)[-1])
        if state is not None and state.status == "running":
            found.append(state)
    return found


async def resume(deps: Deps) -> None:
    """After each listing of the Jobs (a start, a new Lease holder): every running bisection takes its
    next step, so a run deleted while no bot was watching is skipped and the search moves on."""
    for key in await deps.artifacts.list_keys(RUNNING):
        owner, name, bisection = key.removeprefix(RUNNING).split("/", 2)
        state = await load(deps, f"{owner}/{name}", bisection)
        if state is None or state.status != "running":  # left by a crash between the record and the marker
            await deps.artifacts.delete(key)
            continue
        await advance(deps.github.for_installation(state.installation), deps, state.repo, state.id)


def _worse(metric: Metric, good: dict[str, Any], candidate: dict[str, Any], history: list[float]) -> bool:
    """The gate's own verdict, noise-aware with seeds: worse than the good commit beyond the tolerance."""
    row = verdict.compare(good, candidate, [metric], {metric.name: history}).rows[0]
    return row.verdict in ("regression", "missing")


async def advance(gh: GitHubAPI, deps: Deps, repo: str, bisection: str, failed: str = "") -> None:
    """Take the next step from what is known now: wait for the round, start the next, or report.
    `failed`: a candidate whose run just failed (its Job is not marked reported yet). One step at a
    time per bisection (the last two runs of a round reported at once must not both report the end)."""
    async with deps.locks.setdefault(f"bisect:{repo}:{bisection}", asyncio.Lock()):
        await _advance(gh, deps, repo, bisection, failed)


async def _advance(gh: GitHubAPI, deps: Deps, repo: str, bisection: str, failed: str) -> None:
    state = await load(deps, repo, bisection)
    if state is None or state.status != "running":
        return
    if failed and failed not in state.failed:  # kept before the step: runs reported at once see each other's end
        state = dataclasses.replace(state, failed=(*state.failed, failed))
        await save(deps, state)
    results = await measured(deps, state)
    skipped = (await failed_runs(deps, state) | set(state.failed)) - results.keys()
    waiting = [s for s in (state.rounds[-1] if state.rounds else ()) if s not in results and s not in skipped]
    if waiting:
        await bisect_report.progress(gh, state, results, metric_of(state), waiting)
        return
    if state.rounds and not set(state.rounds[-1]) - skipped:  # a run that always fails would try every commit
        await _stop(gh, deps, state, f"every run of round {len(state.rounds)} failed or was deleted: fix the "
                                     f"regression run (see their `flops/regression` checks), then `/bisect` again.")
        return
    references = [s for s in (state.good, state.bad) if s not in results]
    if references:
        await _references(gh, deps, state, references, skipped)
        return
    metric = metric_of(state)
    known = {i: _worse(metric, results[state.good], results[sha], list(state.history))
             for i, sha in enumerate(state.candidates) if sha in results}
    if not known.get(len(state.candidates) - 1):
        await _finish(gh, deps, state, results, None)
        return
    step = search.step(len(state.candidates), known, state.parallel,
                       {i for i, sha in enumerate(state.candidates) if sha in skipped})
    if step.done:
        await _finish(gh, deps, state, results, step)
        return
    await start_round(gh, deps, state, [state.candidates[i] for i in step.probes], results)


async def _references(gh: GitHubAPI, deps: Deps, state: State, missing: list[str], skipped: set[str]) -> None:
    """The good or bad commit has no baseline yet: measured first (once; a failed run ends the search)."""
    if set(missing) & skipped:
        await _stop(gh, deps, state, f"the run of {sorted(set(missing) & skipped)[0][:7]} failed, so it has no "
                                     f"`{state.metric['name']}` to compare with.")
        return
    await start_round(gh, deps, state, missing, {})


async def _stop(gh: GitHubAPI, deps: Deps, state: State, why: str) -> None:
    await bisect_report.stopped(gh, deps, state, why)
    await save(deps, dataclasses.replace(state, status="done"))


async def start_round(gh: GitHubAPI, deps: Deps, state: State, shas: list[str], results: dict[str, Any]) -> None:
    """Start the round's runs (the same round twice starts nothing twice: Job names are deterministic),
    then record it: a crash in between leaves a step that is taken again."""
    trusted = await builds.trusted_config(gh, state.repo, state.default_branch)
    if trusted is None or trusted.regression is None:
        await _stop(gh, deps, state, "the default branch's `.github/flops.yml` no longer has a valid `regression:` "
                                     "section.")
        return
    for sha in shas:
        source = jobs.Source(state.repo, sha, state.installation, ref=state.default_branch)
        await regression.start(gh, deps, trusted.regression, source, trigger=f"bisect {state.id}",
                               attempt=f"bisect-{state.id}", baseline=True, default_branch=state.default_branch,
                               trusted=trusted, labels={jobs.BISECT_LABEL: state.id})
    current = await load(deps, state.repo, state.id)
    if current is not None and current.status == "cancelled":  # `/cancel bisect` on another replica meanwhile
        await _cancel_runs(gh, deps, state, "Cancelled with `/cancel bisect`.")
        return
    if not state.rounds or tuple(shas) != state.rounds[-1]:
        state = dataclasses.replace(state, rounds=(*state.rounds, tuple(shas)))
        await save(deps, state)
    log.info("bisection round started", extra={"repo": state.repo, "bisection": state.id, "round": len(state.rounds),
                                               "runs": len(shas)})
    await bisect_report.progress(gh, state, results, metric_of(state), shas)


async def measured(deps: Deps, state: State) -> dict[str, dict[str, Any]]:
    """Every candidate (and the good commit) that has a baseline: its metrics."""
    shas = [state.good, *state.candidates]
    found = await trends.read_baselines(deps, state.repo, shas)
    return {sha: record["metrics"] for sha, record in zip(shas, found)
            if isinstance(record, dict) and isinstance(record.get("metrics"), dict)}


async def failed_runs(deps: Deps, state: State) -> set[str]:
    """Candidates whose bisection run (a Job, or a RayJob with `regression.ray`) was reported failed,
    timed out or cancelled, or whose Job is gone (deleted by hand before it was reported): skipped."""
    selector = f"{jobs.SELECTOR},{jobs.KIND}={jobs.REGRESSION},{jobs.BISECT_LABEL}={state.id}"
    found = await deps.kube.list_jobs(selector) + await deps.kube.list_jobs(selector, kind=jobs.RAYJOB)
    by_sha = {jobs.annotations_of(job).get(jobs.SHA, ""): jobs.annotations_of(job) for job in found}
    tried = {sha for shas in state.rounds for sha in shas}
    return {sha for sha in tried if sha not in by_sha or by_sha[sha].get(jobs.REPORTED) in FAILED}


async def _finish(gh: GitHubAPI, deps: Deps, state: State, results: dict[str, Any],
                  step: search.Step | None) -> None:
    await bisect_report.final(gh, deps, state, results, metric_of(state), step)
    await save(deps, dataclasses.replace(state, status="done"))
    log.info("bisection done", extra={"repo": state.repo, "bisection": state.id, "runs": state.runs})


async def cancel(gh: GitHubAPI, deps: Deps, repo: str, user: str) -> str:
    """`/cancel bisect`: every running bisection of the repository, and their runs."""
    stopped, runs = [], 0
    for state in await running(deps, repo):
        async with deps.locks.setdefault(f"bisect:{repo}:{state.id}", asyncio.Lock()):
            await save(deps, dataclasses.replace(state, status="cancelled"))
            runs += await _cancel_runs(gh, deps, state, f"Cancelled by @{user} with `/cancel bisect`.")
        await checks.complete(gh, repo, state.check_run, "cancelled", title="Bisection cancelled",
                              summary=f"Cancelled by @{user} with `/cancel bisect` after {len(state.rounds)} "
                                      f"round(s) and {state.runs} run(s).")
        stopped.append(state.id)
    if not stopped:
        return "no bisection is running."
    return f"cancelled the bisection{'s' if len(stopped) > 1 else ''} {', '.join(stopped)} ({runs} runs stopped)."


async def _cancel_runs(gh: GitHubAPI, deps: Deps, state: State, why: str) -> int:
    found = await lifecycle.unreported(deps, jobs.REGRESSION, repo=state.repo)
    mine = [j for j in found if (j["metadata"].get("labels") or {}).get(jobs.BISECT_LABEL) == state.id]
    return await lifecycle.cancel_all(gh, deps, mine, why)


async def report(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """The regression reporter, then: a bisection's run moves its bisection on; a baseline worse than
    the previous one starts one (`regression.bisect.auto`)."""
    conclusion = await regression.report(job, result, deps)
    ann, labels = jobs.annotations_of(job), job["metadata"].get("labels") or {}
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    if labels.get(jobs.BISECT_LABEL):
        await advance(gh, deps, ann[jobs.REPO], labels[jobs.BISECT_LABEL],
                      failed=ann[jobs.SHA] if conclusion in FAILED else "")
    elif ann.get(jobs.BASELINE) == "true" and conclusion == "success":
        await auto(gh, deps, ann)
    return conclusion


async def run_gone(job: dict[str, Any], deps: Deps) -> None:
    """A bisection's run deleted before it was reported (`kubectl delete job`): skipped, the search moves on."""
    ann, bisection = jobs.annotations_of(job), (job["metadata"].get("labels") or {}).get(jobs.BISECT_LABEL)
    if bisection:
        gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
        await advance(gh, deps, ann[jobs.REPO], bisection, failed=ann[jobs.SHA])


async def auto(gh: GitHubAPI, deps: Deps, ann: dict[str, str]) -> None:
    """A new baseline worse than the one before it on a gated metric: bisect between the two."""
    repo, sha, branch = ann[jobs.REPO], ann[jobs.SHA], ann.get(jobs.DEFAULT_BRANCH, "")
    trusted = await builds.trusted_config(gh, repo, branch) if branch else None
    if trusted is None or trusted.regression is None or not trusted.regression.bisect.auto:
        return
    commit = await gh.getitem("/repos/" + repo + "/commits/{ref}", url_vars={"ref": sha})
    parents = commit.get("parents") or []
    previous = await regression.find_baseline(gh, deps, repo, str(parents[0]["sha"])) if parents else None
    current = await deps.artifacts.get_json(trends.baseline_key(repo, sha))
    if previous is None or not isinstance(current, dict):
        return
    good = str(previous[0].get("sha", ""))
    trend = await trends.load(gh, deps, repo, good, trusted.regression.metrics)
    result = verdict.compare(previous[0]["metrics"], current["metrics"], trusted.regression.metrics, trend.series)
    worse = next((m for m, row in zip(trusted.regression.metrics, result.rows) if row.verdict == "regression"), None)
    if worse is None or len(good) != 40:
        return
    try:
        await start(gh, deps, Request(repo, int(ann[jobs.INSTALLATION]), branch, "auto", good, sha, worse.name))
    except Refused as refused:
        log.warning("automatic bisection not started", extra={"repo": repo, "sha": sha, "why": str(refused)})


KIND = dataclasses.replace(regression.KIND, report=report, gone=run_gone, resynced=resume)
