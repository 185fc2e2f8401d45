"""Regression gating: the train + evaluate Job of a PR head, its verdict against the baseline.

- PR runs report `flops/regression` on the PR head sha (the name branch protection requires).
- Default-branch pushes run the same Job as a baseline (`baselines/<repo>/<sha>.json` in S3);
  a PR run is never a baseline.
- A sticky PR comment (hidden marker, edited in place) carries the table and the run history.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core import jobs, verdict
from bot.core.config import Metric, RegressionConfig, RepoConfig, parse_tolerance
from bot.core.text import code_block, duration, escape, link, plain, safe_url
from bot.flows import claims, lifecycle, rayjobs, trends
from bot.flows import kueue as queueing
from bot.flows.deps import Deps
from bot.flows.diagnosis import diagnose, log_tail
from bot.flows.mlflow_runs import trusted_mlflow, with_mlflow
from bot.flows.pulls import PullRef
from bot.flows.trends import ANCESTORS, baseline_key
from bot.platform import checks, comments, logs
from bot.platform.sources import ensure_source, presigned_source

log = logs.get_logger(__name__)

MARKER = "<!-- flops:regression -->"
WAITING = "Waiting for an approval or `/regression`"
HISTORY = 30  # runs listed in the sticky comment
LINKS = 20  # workload links shown


# Every key below is in the bot's bucket (FLOPS_BUCKET), which no Job can write: a baseline is copied
# there from a default-branch run's metrics.json when the run is reported, never read back from the
# runs bucket (FLOPS_RUNS_BUCKET) that any later Job may rewrite.

def tree_key(repo: str, tree: str) -> str:
    return f"results/{repo}/tree/{tree}.json"


def history_key(repo: str, number: int) -> str:
    return f"history/{repo}/pr-{number}/regression.json"


def workload(cfg: RegressionConfig) -> jobs.Workload:
    return jobs.Workload(image=cfg.image, command=tuple(cfg.command), resources=cfg.resources,
                         node_selector=dict(cfg.node_selector), tolerations=tuple(cfg.tolerations),
                         volumes=tuple(cfg.volumes), env=dict(cfg.env))


def pr_source(pr: PullRef, delivery_id: str = "") -> jobs.Source:
    return jobs.Source(pr.repo, pr.head_sha, pr.installation_id, ref=pr.base_ref, pr=pr.number, delivery_id=delivery_id)


async def source_url(deps: Deps, installation_id: int, repo: str, sha: str) -> tuple[str, tuple[str, ...]]:
    """The presigned URL of the packed source, and the links left out of it."""
    packed = await ensure_source(deps.github, deps.artifacts, installation_id, repo, sha)
    return await presigned_source(deps.artifacts, repo, sha), packed.dropped


async def start(gh: GitHubAPI, deps: Deps, cfg: RegressionConfig, src: jobs.Source, *, trigger: str,
                attempt: str = "", baseline: bool = False, default_branch: str = "",
                trusted: RepoConfig | None = None, labels: Mapping[str, str] | None = None) -> str | None:
    """Launch the run; None when a run of this commit is already going (redelivery, second approval,
    `/regression` while one runs). A PR run starts under the claim on its head (`claims`: of two
    replicas one starts it); runs of the PR's older heads are cancelled first. The default
    branch (from the event's payload) is kept on the Job: the report needs no extra call for it.
    `trusted`: the default branch's config when the caller holds it (its Kueue `queue`, `regression.mlflow`).
    `labels`: added to the Job's (a bisection's `flops.dev/bisect`)."""
    async with claims.of_source(deps, src, jobs.REGRESSION):
        if src.pr is not None and await _supersede_pr_runs(gh, deps, src):
            return None
        return await _launch(gh, deps, cfg, src, trigger=trigger, attempt=attempt, baseline=baseline,
                             default_branch=default_branch, trusted=trusted, labels=labels)


async def _launch(gh: GitHubAPI, deps: Deps, cfg: RegressionConfig, src: jobs.Source, *, trigger: str,
                  attempt: str, baseline: bool, default_branch: str, trusted: RepoConfig | None,
                  labels: Mapping[str, str] | None) -> str | None:
    url, dropped = await source_url(deps, src.installation_id, src.repo, src.sha)
    cfg = dataclasses.replace(cfg, mlflow=await trusted_mlflow(gh, src.repo, cfg, trusted))  # where the bot asks
    body = rayjobs.prepare(jobs.regression_job(src, jobs.cluster_from(deps.settings), workload(cfg), source_url=url,
                                               check=checks.REGRESSION, timeout=cfg.timeout, trigger=trigger,
                                               attempt=attempt, baseline=baseline), cfg)  # a RayJob with `ray:`
    name = jobs.name_of(body)
    if await deps.kube.get_job(name, jobs.api_kind(body)) is not None:
        return None
    body["metadata"]["annotations"][jobs.METRICS] = metrics_annotation(cfg)
    body["metadata"]["labels"].update(labels or {})
    if default_branch:
        body["metadata"]["annotations"][jobs.DEFAULT_BRANCH] = default_branch
    body["metadata"]["annotations"].update(checks.dropped_annotation(dropped))
    what = "baseline for the default branch" if baseline else f"PR #{src.pr}" if src.pr is not None else "merge queue"
    await _empty_output(deps, body["metadata"]["annotations"][jobs.OUTPUT])
    queue = await queueing.queue_for(gh, deps, src.repo, jobs.REGRESSION, trusted)  # a Job or a RayJob alike
    check_id = await _check_for(gh, src, body, what, cfg, trigger, queue,
                                checks.run_page(deps.settings.public_url, jobs.name_of(body)))
    body["metadata"]["annotations"][jobs.CHECK_RUN] = str(check_id)
    try:  # a refusal completes the check (it must not stay "in progress" for a Job that never existed)
        created = await rayjobs.create(gh, deps, body, src.repo, check_id)
    except rayjobs.NotCreated:  # the check says what to install or change: nothing to retry
        return None
    log.info("regression started", extra={"repo": src.repo, "sha": src.sha, "job": name, "trigger": trigger})
    if created is not None and src.pr is not None:
        await lifecycle.cancel_if_head_moved(gh, deps, src, created)
    return name


async def _empty_output(deps: Deps, prefix: str) -> None:
    """A run starts with nothing under its FLOPS_OUTPUT: a Job of the same name deleted earlier (a
    cancel, the TTL) must not leave a metrics.json this run would be judged by. At most LIST_LIMIT keys
    go: the same commit's earlier run wrote the rest, and this one runs that same code."""
    await deps.artifacts.runs.delete_prefix(prefix)


async def _supersede_pr_runs(gh: GitHubAPI, deps: Deps, src: jobs.Source) -> bool:
    """Cancel the PR's running regression Jobs of other commits; True if one of `src.sha` runs."""
    assert src.pr is not None
    found = await lifecycle.running(deps, jobs.REGRESSION, repo=src.repo, pr=src.pr)
    others = [job for job in found if jobs.annotations_of(job).get(jobs.SHA) != src.sha]
    await lifecycle.cancel_all(gh, deps, others, f"Superseded: a new run started for {src.sha[:7]}.")
    return len(others) < len(found)


async def _check_for(gh: GitHubAPI, src: jobs.Source, body: dict[str, Any], what: str, cfg: RegressionConfig,
                     trigger: str, queue: str | None, details_url: str | None = None) -> int:
    """Reuse the head's `queued` check (left by a synchronize) or create one, now in progress (or
    `queued` in Kueue's LocalQueue `queue`, the Job or RayJob `body` created suspended)."""
    name, note = jobs.name_of(body), checks.dropped_note(body["metadata"]["annotations"])
    summary = (f"Regression Job `{name}` ({what}, started by {trigger}) runs `{' '.join(cfg.command)}` in "
               f"`{cfg.image}`; timeout {duration(cfg.timeout)}.{note}")
    status, title, summary = queueing.queued_check(body, queue, "Regression test running", summary)
    existing = await checks.latest(gh, src.repo, src.sha, checks.REGRESSION)
    if existing and existing["status"] == "queued":
        await checks.update(gh, src.repo, existing["id"], status=status, external_id=name, title=title,
                            summary=summary, details_url=details_url)
        return int(existing["id"])
    return await checks.create(gh, src.repo, src.sha, checks.REGRESSION, external_id=name, status=status,
                               title=title, summary=summary, details_url=details_url)


async def cancel_for_commit(gh: GitHubAPI, deps: Deps, repo: str, sha: str, why: str) -> int:
    """Stop the unfinished non-PR, non-baseline regression Jobs of `sha` (a merge group's)."""
    found = await lifecycle.running(deps, jobs.REGRESSION, repo=repo, sha=sha)
    return await lifecycle.cancel_all(gh, deps, [job for job in found if not {jobs.PR, jobs.BASELINE}
                                                 & jobs.annotations_of(job).keys()], why)


async def mark_waiting(gh: GitHubAPI, repo: str, sha: str) -> None:
    """A new head: `flops/regression` queued, so a required check keeps the merge blocked."""
    existing = await checks.latest(gh, repo, sha, checks.REGRESSION)
    if existing is not None:  # a redelivery, or a run for this commit exists already
        return
    await checks.create(gh, repo, sha, checks.REGRESSION, status="queued", title=WAITING,
                        summary=f"{WAITING} on {sha[:7]}: the previous result was for an older commit.")


# --- report -------------------------------------------------------------------------------------------

async def report(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """Tracker reporter for `flops.dev/kind: regression`."""
    ann = jobs.annotations_of(job)
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    if not result.succeeded:
        return await _report_failure(gh, deps, job, result)
    key = ann[jobs.OUTPUT] + "metrics.json"
    try:
        written = await deps.artifacts.runs.get_json(key)
    except ValueError as exc:  # not JSON (json.JSONDecodeError, UnicodeDecodeError)
        written, why = None, f"is not valid JSON ({exc})"
    else:
        why = "is missing" if written is None else "has no `metrics` object"
        written = await with_mlflow(job, written)  # the MLflow link; its metrics without a metrics.json
    if not isinstance(written, dict) or not isinstance(written.get("metrics"), dict):
        await checks.finish(gh, ann, "failure", title="No metrics",
                            summary=f"The Job succeeded but `{key}` {why}. The workload must write "
                                    '`{"metrics": {"accuracy": 0.91}, "links": {"MLflow run": "https://..."}}` to '
                                    "`$FLOPS_OUTPUT` + `metrics.json` in `$FLOPS_S3_BUCKET`.")
        if ann.get(jobs.PR):
            await _comment(gh, deps, ann, "failure", plain(f"no metrics: metrics.json {why}"), None)
        return "failure"
    links = safe_links(written.get("links"))
    if ann.get(jobs.BASELINE) == "true":
        return await _report_baseline(gh, deps, ann, written["metrics"], links)
    return await _report_pr(gh, deps, ann, written["metrics"], links)


def safe_links(value: object) -> dict[str, str]:
    """The workload's links whose URL is a plain http(s) one (`text.safe_url`), at most LINKS of
    them; the keys are escaped where they are shown."""
    if not isinstance(value, dict):
        return {}
    found = ((str(k)[:100], safe_url(v)) for k, v in value.items())
    return dict([(k, v) for k, v in found if v is not None][:LINKS])


async def _report_failure(gh: GitHubAPI, deps: Deps, job: dict[str, Any], result: jobs.Outcome) -> str:
    ann = jobs.annotations_of(job)
    pods = await rayjobs.pods_of(deps, job)
    diagnosis = diagnose(result, pods)
    tail = await log_tail(deps, diagnosis.pod, diagnosis.container, pods)
    text = f"Last lines of the log (Job `{jobs.name_of(job)}`):\n\n{code_block(tail)}" if tail else \
        await queueing.elsewhere(deps, job, pods)
    if result.reason == "DeadlineExceeded":
        limit = ann.get(jobs.TIMEOUT) or str((job.get("spec") or {}).get("activeDeadlineSeconds") or 0)
        conclusion, title = "timed_out", "Regression Job timed out"
        reason = (f"the run took longer than `regression.timeout` ({duration(int(limit))}) and was stopped. "
                  f"Raise the timeout in `.github/flops.yml` if the run is legitimately slow.")
    else:
        conclusion, title, reason = "failure", "Regression Job failed", diagnosis.reason
    await checks.finish(gh, ann, conclusion, title=title, summary=f"**Reason:** {reason}", text=text)
    if ann.get(jobs.PR):
        await _comment(gh, deps, ann, conclusion, plain(reason), None)
    return conclusion


async def _report_baseline(gh: GitHubAPI, deps: Deps, ann: dict[str, str], metrics: dict[str, Any],
                           links: dict[str, str]) -> str:
    repo, sha = ann[jobs.REPO], ann[jobs.SHA]
    await deps.artifacts.put_json(baseline_key(repo, sha), {"sha": sha, "metrics": metrics, "links": links,
                                                            "run": ann[jobs.RUN_ID], "recorded_at": checks.now()})
    rows = "\n".join(f"| {escape(k)} | {_value(v)} |" for k, v in sorted(metrics.items()))
    await checks.finish(gh, ann, "success", title="Baseline recorded",
                        summary=f"Metrics of `{sha[:7]}`, now the baseline for pull requests based on it:\n\n"
                                f"| metric | value |\n|---|---|\n{rows}{_links(links)}")
    return "success"


def _value(value: object) -> str:
    summary = verdict.summarize(value)
    if summary is None:
        return "—"
    mean, stdev, n = summary
    return f"{mean:.4g} ± {stdev:.2g} ({n} seeds)" if n > 1 else f"{mean:.4g}"


async def _report_pr(gh: GitHubAPI, deps: Deps, ann: dict[str, str], metrics: dict[str, Any],
                     links: dict[str, str]) -> str:
    repo, sha = ann[jobs.REPO], ann[jobs.SHA]
    gate = metrics_from_annotation(ann.get(jobs.METRICS, "[]"))
    comparison = await compare_with_default(gh, repo, sha, ann.get(jobs.DEFAULT_BRANCH, ""))
    found = await find_baseline(gh, deps, repo, comparison["merge_base_commit"]["sha"]) if comparison else None
    if found is None:
        result = verdict.compare({}, metrics, gate)
        table_text = verdict.table(result)
        if result.missing:  # a gated metric the workload did not write fails even without a baseline
            conclusion, title = "failure", f"No baseline yet; {result.missing} gated metric(s) missing"
        else:
            conclusion, title = "neutral", "No baseline yet"
        summary = (f"{table_text}\n\nNo default-branch run exists at this commit's merge-base or its "
                   f"{ANCESTORS} nearest ancestors, so nothing was compared. Merging to the default branch "
                   f"records one (each default-branch push runs the regression Job as a baseline).")
    else:
        base, stale = found
        trend = await trends.load(gh, deps, repo, comparison["merge_base_commit"]["sha"], gate) if comparison else None
        result = verdict.compare(base["metrics"], metrics, gate, trend.series if trend else None)
        conclusion, title = result.conclusion, result.title
        table_text = verdict.table(result)
        staleness = (f", {stale} commit{'s' if stale != 1 else ''} older than the merge-base (the merge-base "
                     f"itself has no baseline run)") if stale else " (the merge-base)"
        summary = f"{table_text}\n\nBaseline: `{short_sha(base.get('sha'))}`{staleness}."
        table_text = summary + (trends.comment_charts(result, trend) if trend else "")
    if not gate:
        summary += "\n\nNo metric is gated: add `regression.metrics` to `.github/flops.yml`."
    summary += _links(links)
    await checks.finish(gh, ann, conclusion, title=title, summary=summary)  # MLflow: in the links; details: run page
    deps.metrics.regression_verdict({"success": "pass", "failure": "fail"}.get(conclusion, "no_baseline"))
    if conclusion == "success":  # only a pass is ever reused
        await _remember_tree(gh, deps, repo, sha, head_tree(comparison, sha), conclusion, title, summary)
    if ann.get(jobs.PR):
        await _comment(gh, deps, ann, conclusion, title, table_text + _links(links))
    return conclusion


async def _remember_tree(gh: GitHubAPI, deps: Deps, repo: str, sha: str, tree: str | None, conclusion: str,
                         title: str, summary: str) -> None:
    """Keyed by tree: a merge group with exactly this content reuses the verdict."""
    if tree is None:
        commit = await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha})
        tree = str(commit["commit"]["tree"]["sha"])
    await deps.artifacts.put_json(tree_key(repo, tree), {"sha": sha, "conclusion": conclusion, "title": title,
                                                         "summary": summary})


def head_tree(comparison: dict[str, Any] | None, sha: str) -> str | None:
    """The tree of `sha` when the comparison lists it (it does, up to 250 commits ahead)."""
    for commit in (comparison or {}).get("commits") or ():
        if commit.get("sha") == sha:
            return str(commit["commit"]["tree"]["sha"])
    return None


async def reuse_for_tree(gh: GitHubAPI, deps: Deps, repo: str, sha: str, tree: str) -> bool:
    """Post a passing result of the same tree on `sha`; False when there is none to reuse."""
    found = await deps.artifacts.get_json(tree_key(repo, tree))
    if found is None or found["conclusion"] != "success":
        return False
    await checks.post_completed(gh, repo, sha, checks.REGRESSION, "success", title=found["title"],
                                summary=f"Reused the result of `{found['sha'][:7]}`, which has the same tree.\n\n"
                                        f"{found['summary']}")
    return True


def metrics_annotation(cfg: RegressionConfig) -> str:
    """The gate as configured (on the base branch) when the run started, carried on the Job."""
    return json.dumps([{"name": m.name, "direction": m.direction, "auto_k": m.auto_k, "auto_window": m.auto_window,
                        "tolerance": "auto" if m.tolerance.auto else f"{m.tolerance.value}%" if m.tolerance.relative
                        else m.tolerance.value} for m in cfg.metrics], separators=(",", ":"))


def metrics_from_annotation(text: str) -> list[Metric]:
    return [Metric(m["name"], m["direction"], parse_tolerance(m["tolerance"]), auto_k=float(m.get("auto_k", 3.0)),
                   auto_window=int(m.get("auto_window", 20))) for m in json.loads(text or "[]")]


async def compare_with_default(gh: GitHubAPI, repo: str, sha: str, default: str) -> dict[str, Any] | None:
    """GitHub's comparison of the default branch with `sha`; None without common history."""
    if not default:
        default = (await gh.getitem("/repos/" + repo)).get("default_branch") or "main"
    try:
        comparison: dict[str, Any] = await gh.getitem("/repos/" + repo + "/compare/{spec}",
                                                      url_vars={"spec": f"{default}...{sha}"})
    except gidgethub.BadRequest:  # 404: no common ancestor
        return None
    return comparison


async def find_baseline(gh: GitHubAPI, deps: Deps, repo: str, merge_base: str) -> tuple[dict[str, Any], int] | None:
    """The baseline at the merge-base with the default branch, else the nearest first-parent ancestor
    (along the default branch) that has one, with its distance in commits; None when there is none."""
    exact = await deps.artifacts.get_json(baseline_key(repo, merge_base))
    if exact is not None:
        return exact, 0
    history = await gh.getitem("/repos/" + repo + "/commits{?sha,per_page}",
                               url_vars={"sha": merge_base, "per_page": str(ANCESTORS)})
    by_sha = {commit["sha"]: commit for commit in history}
    current, distance = by_sha.get(merge_base), 0
    while current is not None and current.get("parents"):
        parent = current["parents"][0]["sha"]  # first parent: the default branch's own line
        distance += 1
        found = await deps.artifacts.get_json(baseline_key(repo, parent))
        if found is not None:
            return found, distance
        current = by_sha.get(parent)
    return None


def check_url(deps: Deps, repo: str, check_id: str) -> str:
    return f"{jobs.cluster_from(deps.settings).github_url}/{repo}/runs/{check_id}"


async def _comment(gh: GitHubAPI, deps: Deps, ann: dict[str, str], conclusion: str, headline: str,
                   table_text: str | None) -> None:
    """The sticky PR comment: the latest result plus every run of this PR, edited in place. The
    history is keyed by run id, so reporting the same run twice never adds a second line."""
    repo, number, sha = ann[jobs.REPO], int(ann[jobs.PR]), ann[jobs.SHA]
    stored = await deps.artifacts.get_json(history_key(repo, number))
    history = [h for h in stored if isinstance(h, dict)] if isinstance(stored, list) else []
    entry = {"run": ann[jobs.RUN_ID], "sha": sha, "conclusion": conclusion, "headline": headline,
             "at": checks.now(), "check": check_url(deps, repo, ann[jobs.CHECK_RUN]),
             "trigger": ann.get(jobs.TRIGGER, "")}
    history = [h for h in history if h.get("run") != entry["run"]] + [entry]
    history = history[-HISTORY:]
    await deps.artifacts.put_json(history_key(repo, number), history)
    lines = "\n".join(_history_row(h) for h in reversed(history))
    body = (f"{MARKER}\n### `flops/regression` for `{sha[:7]}`: **{conclusion}** · {escape(headline, 300)}\n\n"
            f"{table_text or ''}\n\n<details><summary>Runs of this pull request ({len(history)})</summary>\n\n"
            f"| when (UTC) | commit | started by | result | summary |\n|---|---|---|---|---|\n{lines}\n</details>")
    await comments.upsert(gh, repo, number, MARKER, body, author=await deps.github.bot_login())


def _history_row(h: dict[str, Any]) -> str:
    """One run of the sticky comment's history. The history lives in S3, where workloads write
    too: every field is escaped, the check link kept only when it is a plain http(s) URL."""
    return (f"| {escape(h.get('at', ''), 40)} | `{short_sha(h.get('sha'))}` | {escape(h.get('trigger', ''), 40)} "
            f"| {link(h.get('conclusion', ''), h.get('check'), 40)} | {escape(h.get('headline', ''), 300)} |")


def short_sha(value: object) -> str:
    """The 7-character sha of a record read from S3: hex digits only, whatever the record says."""
    return "".join(c for c in str(value or "") if c in "0123456789abcdef")[:7] or "?"


def _links(links: dict[str, str]) -> str:
    return ("\n\n" + "\n".join(f"- {link(k, v)}" for k, v in links.items())) if links else ""


KIND = lifecycle.Kind(jobs.REGRESSION, report)
