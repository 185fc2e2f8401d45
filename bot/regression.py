"""Regression gating: the train + evaluate Job of a PR head, its verdict against the baseline.

- PR runs report `flops/regression` on the PR head sha (the name branch protection requires).
- Default-branch pushes run the same Job as a baseline (`baselines/<repo>/<sha>.json` in S3);
  a PR run is never a baseline.
- A sticky PR comment (hidden marker, edited in place) carries the table and the run history.
"""
from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot import builds, checks, comments, jobs, verdict
from bot.config import Metric, RegressionConfig, parse_tolerance
from bot.deps import Deps
from bot.pulls import PullRef
from bot.sources import ensure_source
from bot.tracker import diagnose, log_tail

log = logging.getLogger(__name__)

MARKER = "<!-- flops:regression -->"
SOURCE_URL_TTL = timedelta(days=7)
ANCESTORS = 100  # how far back along the default branch a stale baseline is looked for
WAITING = "Waiting for an approval or `/regression`"


def baseline_key(repo: str, sha: str) -> str:
    return f"baselines/{repo}/{sha}.json"


def tree_key(repo: str, tree: str) -> str:
    return f"results/{repo}/tree/{tree}.json"


def history_key(repo: str, number: int) -> str:
    return f"runs/{repo}/pr-{number}/regression-history.json"


def workload(cfg: RegressionConfig) -> jobs.Workload:
    return jobs.Workload(image=cfg.image, command=tuple(cfg.command), resources=cfg.resources,
                         node_selector=dict(cfg.node_selector), tolerations=tuple(cfg.tolerations),
                         volumes=tuple(cfg.volumes), env=dict(cfg.env))


def pr_source(pr: PullRef, delivery_id: str = "") -> jobs.Source:
    return jobs.Source(pr.repo, pr.head_sha, pr.installation_id, ref=pr.base_ref, pr=pr.number, delivery_id=delivery_id)


async def source_url(deps: Deps, installation_id: int, repo: str, sha: str) -> str:
    key = await ensure_source(deps.github, deps.artifacts, installation_id, repo, sha)
    return await deps.artifacts.presigned_get(key, SOURCE_URL_TTL)


async def start(gh: GitHubAPI, deps: Deps, cfg: RegressionConfig, src: jobs.Source, *, trigger: str,
                attempt: str = "", baseline: bool = False) -> str | None:
    """Launch the run; None when this exact run exists already (redelivery, second approval)."""
    if src.pr is not None:
        await cancel_for_pr(gh, deps, src.repo, src.pr, f"Superseded: a new run started for {src.sha[:7]}.",
                            keep_sha=src.sha)
    url = await source_url(deps, src.installation_id, src.repo, src.sha)
    body = jobs.regression_job(src, jobs.cluster_from(deps.settings), workload(cfg), source_url=url,
                               timeout=cfg.timeout, trigger=trigger, attempt=attempt, baseline=baseline)
    name = jobs.name_of(body)
    if await deps.kube.get_job(name) is not None:
        return None
    body["metadata"]["annotations"][jobs.METRICS] = metrics_annotation(cfg)
    what = "baseline for the default branch" if baseline else f"PR #{src.pr}"
    check_id = await _check_for(gh, src, name, what, cfg, trigger)
    body["metadata"]["annotations"][jobs.CHECK_RUN] = str(check_id)
    await deps.kube.create_job(body)
    log.info("regression started", extra={"repo": src.repo, "sha": src.sha, "job": name, "trigger": trigger})
    return name


async def _check_for(gh: GitHubAPI, src: jobs.Source, name: str, what: str, cfg: RegressionConfig,
                     trigger: str) -> int:
    """Reuse the head's `queued` check (left by a synchronize) or create one, now in progress."""
    summary = (f"Regression Job `{name}` ({what}, started by {trigger}) runs `{' '.join(cfg.command)}` in "
               f"`{cfg.image}`; timeout {cfg.timeout // 60} min.")
    existing = await checks.latest(gh, src.repo, src.sha, checks.REGRESSION)
    if existing and existing["status"] == "queued":
        await gh.patch("/repos/" + src.repo + "/check-runs/{id}", url_vars={"id": str(existing["id"])},
                       data={"status": "in_progress", "started_at": checks.now(), "external_id": name,
                             "output": {"title": "Regression test running", "summary": summary}})
        return int(existing["id"])
    return await checks.create(gh, src.repo, src.sha, checks.REGRESSION, external_id=name,
                               title="Regression test running", summary=summary)


async def cancel_for_pr(gh: GitHubAPI, deps: Deps, repo: str, number: int, why: str, *,
                        keep_sha: str | None = None, kinds: tuple[str, ...] = (jobs.REGRESSION,)) -> int:
    """Stop the PR's unfinished Jobs of `kinds` (except those for `keep_sha`); checks -> cancelled."""
    cancelled = 0
    for kind in kinds:
        for job in await deps.kube.list_jobs(f"{jobs.SELECTOR},{jobs.KIND}={kind},{jobs.PR_LABEL}={number}"):
            ann = jobs.annotations(job)
            if ann.get(jobs.REPO) != repo or jobs.REPORTED in ann or jobs.outcome(job).finished:
                continue
            if keep_sha and ann.get(jobs.SHA) == keep_sha:
                continue
            await builds.cancel_job(gh, deps, job, why)
            cancelled += 1
    return cancelled


async def mark_waiting(gh: GitHubAPI, repo: str, sha: str) -> None:
    """A new head: `flops/regression` queued, so a required check keeps the merge blocked."""
    await checks.create(gh, repo, sha, checks.REGRESSION, status="queued", title=WAITING,
                        summary=f"{WAITING} on {sha[:7]}: the previous result was for an older commit.")


# --- report -------------------------------------------------------------------------------------------

async def report(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """Tracker reporter for `flops.dev/kind: regression`."""
    ann = jobs.annotations(job)
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    if not result.succeeded:
        return await _report_failure(gh, deps, job, result)
    metrics = await deps.artifacts.get_json(ann[jobs.OUTPUT] + "metrics.json")
    if not isinstance(metrics, dict) or not isinstance(metrics.get("metrics"), dict):
        await _finish(gh, ann, "failure", "No metrics", f"The Job succeeded but `{ann[jobs.OUTPUT]}metrics.json` "
                      "is missing or has no `metrics` object. The workload must write "
                      '`{"metrics": {...}}` to `$FLOPS_OUTPUT` + `metrics.json`.')
        return "failure"
    links = {str(k): str(v) for k, v in (metrics.get("links") or {}).items()}
    if ann.get(jobs.BASELINE) == "true":
        return await _report_baseline(gh, deps, ann, metrics["metrics"], links)
    return await _report_pr(gh, deps, ann, metrics["metrics"], links)


async def _report_failure(gh: GitHubAPI, deps: Deps, job: dict[str, Any], result: jobs.Outcome) -> str:
    ann = jobs.annotations(job)
    pods = await deps.kube.job_pods(jobs.name_of(job))
    diagnosis = diagnose(result, pods)
    tail = await log_tail(deps, diagnosis.pod, diagnosis.container, pods)
    conclusion = "timed_out" if result.reason == "DeadlineExceeded" else "failure"
    text = f"Last lines of the log:\n\n```\n{tail.rstrip()}\n```" if tail else None
    await _finish(gh, ann, conclusion, f"Regression Job {'timed out' if conclusion == 'timed_out' else 'failed'}",
                  f"**Reason:** {diagnosis.reason}", text=text)
    if ann.get(jobs.PR):
        await _comment(gh, deps, ann, f"**{conclusion}**: {diagnosis.reason}", None)
    return conclusion


async def _report_baseline(gh: GitHubAPI, deps: Deps, ann: dict[str, str], metrics: dict[str, Any],
                           links: dict[str, str]) -> str:
    repo, sha = ann[jobs.REPO], ann[jobs.SHA]
    await deps.artifacts.put_json(baseline_key(repo, sha), {"sha": sha, "metrics": metrics, "links": links,
                                                            "run": ann[jobs.RUN_ID]})
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(metrics.items()))
    await _finish(gh, ann, "success", "Baseline recorded",
                  f"Metrics of `{sha[:7]}`, now the baseline for PRs based on it:\n\n| metric | value |\n|---|---|\n"
                  f"{rows}{_links(links)}", details_url=_mlflow(links))
    return "success"


async def _report_pr(gh: GitHubAPI, deps: Deps, ann: dict[str, str], metrics: dict[str, Any],
                     links: dict[str, str]) -> str:
    repo, sha = ann[jobs.REPO], ann[jobs.SHA]
    cfg_metrics = metrics_from_annotation(ann.get(jobs.METRICS, "[]"))
    found = await find_baseline(gh, deps, repo, sha)
    if found is None:
        title, summary, conclusion = "No baseline yet", ("No default-branch run exists for this PR's merge-base or "
                                                         "its ancestors; push to the default branch to record one. "
                                                         "Metrics of this run:\n\n"), "neutral"
        summary += verdict.table(verdict.compare({}, metrics, cfg_metrics))
        table_text = summary
    else:
        base, stale = found
        result = verdict.compare(base["metrics"], metrics, cfg_metrics)
        conclusion, title = result.conclusion, result.title
        staleness = f" ({stale} commit{'s' if stale != 1 else ''} older than the merge-base)" if stale else ""
        table_text = verdict.table(result)
        summary = f"{table_text}\n\nBaseline: `{base['sha'][:7]}`{staleness}.{_links(links)}"
    await _finish(gh, ann, conclusion, title, summary, details_url=_mlflow(links))
    await _remember_tree(gh, deps, repo, sha, conclusion, title, summary)
    if ann.get(jobs.PR):
        await _comment(gh, deps, ann, f"**{conclusion}**: {title}", table_text + _links(links))
    return conclusion


async def _remember_tree(gh: GitHubAPI, deps: Deps, repo: str, sha: str, conclusion: str, title: str,
                         summary: str) -> None:
    """Keyed by tree: a merge group with exactly this content reuses the verdict."""
    commit = await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha})
    tree = commit["commit"]["tree"]["sha"]
    await deps.artifacts.put_json(tree_key(repo, tree), {"sha": sha, "conclusion": conclusion, "title": title,
                                                         "summary": summary})


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
    return json.dumps([{"name": m.name, "direction": m.direction,
                        "tolerance": f"{m.tolerance.value}%" if m.tolerance.relative else m.tolerance.value}
                       for m in cfg.metrics], separators=(",", ":"))


def metrics_from_annotation(text: str) -> list[Metric]:
    return [Metric(m["name"], m["direction"], parse_tolerance(m["tolerance"])) for m in json.loads(text or "[]")]


async def find_baseline(gh: GitHubAPI, deps: Deps, repo: str, sha: str) -> tuple[dict[str, Any], int] | None:
    """The baseline at the merge-base, else the nearest default-branch ancestor that has one."""
    repo_data = await gh.getitem("/repos/" + repo)
    default = repo_data.get("default_branch") or "main"
    try:
        compare = await gh.getitem("/repos/" + repo + "/compare/{spec}", url_vars={"spec": f"{default}...{sha}"})
    except gidgethub.BadRequest:
        return None
    merge_base = compare["merge_base_commit"]["sha"]
    exact = await deps.artifacts.get_json(baseline_key(repo, merge_base))
    if exact is not None:
        return exact, 0
    history = await gh.getitem("/repos/" + repo + "/commits{?sha,per_page}",
                               url_vars={"sha": merge_base, "per_page": str(ANCESTORS)})
    for distance, commit in enumerate(history[1:], start=1):
        found = await deps.artifacts.get_json(baseline_key(repo, commit["sha"]))
        if found is not None:
            return found, distance
    return None


async def _finish(gh: GitHubAPI, ann: dict[str, str], conclusion: str, title: str, summary: str, *,
                  text: str | None = None, details_url: str | None = None) -> None:
    await checks.complete(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], conclusion, title=title, summary=summary,
                          text=text, details_url=details_url)


async def _comment(gh: GitHubAPI, deps: Deps, ann: dict[str, str], headline: str, table_text: str | None) -> None:
    """The sticky PR comment: history of this PR's runs plus the latest table, edited in place."""
    repo, number = ann[jobs.REPO], int(ann[jobs.PR])
    history = await deps.artifacts.get_json(history_key(repo, number)) or []
    entry = f"{checks.now()} · `{ann[jobs.SHA][:7]}` · {headline}"
    if entry not in history:
        history.append(entry)
    await deps.artifacts.put_json(history_key(repo, number), history[-20:])
    body = (f"{MARKER}\n### flops/regression\n\n{headline} for `{ann[jobs.SHA][:7]}`\n\n{table_text or ''}\n\n"
            f"<details><summary>Run history ({len(history)})</summary>\n\n"
            + "\n".join(f"- {h}" for h in reversed(history[-20:])) + "\n</details>")
    await comments.upsert(gh, repo, number, MARKER, body)


def _links(links: dict[str, str]) -> str:
    return ("\n\n" + "\n".join(f"- [{k}]({v})" for k, v in links.items())) if links else ""


def _mlflow(links: dict[str, str]) -> str | None:
    for key, value in links.items():
        if "mlflow" in key.lower() and value.startswith(("http://", "https://")):
            return value
    return None
