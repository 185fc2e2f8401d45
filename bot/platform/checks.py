"""Check runs: the verdicts users see on commits and gate merges with.

Check-run names are public contract (branch protection requires them by name).
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urlencode

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core import config, jobs
from bot.core.jobs import kueue
from bot.core.text import clip, shown
from bot.platform.github import create_once

CONFIG = "flops/config"
REGRESSION = "flops/regression"
FEDERATED = "flops/federated"
BISECT = "flops/bisect"
# On a Job whose source had links left out (bot.platform.sources): {"count": n, "names": [...]}
DROPPED_LINKS = jobs.A + "dropped-links"
DROPPED_SHOWN = 20


def build_name(image: str) -> str:
    return f"flops/build: {image}"


def deploy_name(target: str) -> str:
    return f"flops/deploy: {target}"


def run_page(public_url: str | None, run_id: str) -> str | None:
    """A check's `details_url`: the run's page (`GET /runs/<run id>`) when FLOPS_PUBLIC_URL is set."""
    return f"{public_url}/runs/{quote(run_id)}" if public_url else None


def runs_page(public_url: str | None, repo: str) -> str | None:
    """The `details_url` of a check waiting for its run: the repository's runs (`GET /runs?repo=`)."""
    return f"{public_url}/runs?{urlencode({'repo': repo})}" if public_url else None


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def dropped_annotation(names: tuple[str, ...]) -> dict[str, str]:
    """The Job annotation naming the links left out of its source (none: no annotation)."""
    if not names:
        return {}
    return {DROPPED_LINKS: json.dumps({"count": len(names), "names": list(names[:DROPPED_SHOWN])})}


def dropped_note(ann: Mapping[str, str]) -> str:
    """The paragraph a check run ends with when links were left out of the Job's source."""
    try:
        data = json.loads(ann.get(DROPPED_LINKS) or "{}")
        count, names = int(data.get("count", 0)), [str(n) for n in data.get("names", [])]
    except (ValueError, TypeError, AttributeError):
        return ""
    if not count:
        return ""
    listed = ", ".join(f"`{shown(name, 120)}`" for name in names[:DROPPED_SHOWN])
    more = f" and {count - len(names)} more" if count > len(names) else ""
    return (f"\n\n**{count} symlink(s) left out of the source** (absolute, or leading out of the repository, "
            f"which the unpack refuses): {listed}{more}. Make them relative links inside the repository if the "
            f"run needs them.")


def _output(title: str, summary: str, text: str | None) -> dict[str, str]:
    output = {"title": clip(title, 1000), "summary": clip(summary)}  # each field within GitHub's limit
    if text:
        output["text"] = clip(text)
    return output


async def create(gh: GitHubAPI, repo: str, sha: str, name: str, *, title: str, summary: str,
                 status: str = "in_progress", details_url: str | None = None,
                 external_id: str | None = None, text: str | None = None) -> int:
    body: dict[str, Any] = {"name": name, "head_sha": sha, "status": status, "output": _output(title, summary, text)}
    if status == "in_progress":
        body["started_at"] = now()
    if details_url:
        body["details_url"] = details_url
    if external_id:
        body["external_id"] = external_id
    return await _post(gh, repo, body)


async def complete(gh: GitHubAPI, repo: str, check_id: int | str, conclusion: str, *, title: str,
                   summary: str, text: str | None = None, details_url: str | None = None) -> None:
    body: dict[str, Any] = {"status": "completed", "conclusion": conclusion, "completed_at": now(),
                            "output": _output(title, summary, text)}
    if details_url:
        body["details_url"] = details_url
    await gh.patch("/repos/" + repo + "/check-runs/{id}", url_vars={"id": str(check_id)}, data=body)


async def post_completed(gh: GitHubAPI, repo: str, sha: str, name: str, conclusion: str, *, title: str,
                         summary: str, text: str | None = None, details_url: str | None = None) -> int:
    """One call: a check run created already completed (config errors, skipped deploys)."""
    body: dict[str, Any] = {"name": name, "head_sha": sha, "status": "completed", "conclusion": conclusion,
                            "completed_at": now(), "output": _output(title, summary, text)}
    if details_url:
        body["details_url"] = details_url
    return await _post(gh, repo, body)


async def completed_on(gh: GitHubAPI, repo: str, sha: str, name: str, conclusions: tuple[str, ...] = ()) -> bool:
    """Whether a completed check run `name` is on commit `sha` already (with one of `conclusions`, if given)."""
    data = await gh.getitem("/repos/" + repo + "/commits/{sha}/check-runs{?check_name,filter,per_page}",
                            url_vars={"sha": sha, "check_name": name, "filter": "all", "per_page": "100"})
    return any(run.get("name") == name and run.get("status") == "completed"
               and (not conclusions or run.get("conclusion") in conclusions) for run in data.get("check_runs", []))


async def _post(gh: GitHubAPI, repo: str, body: dict[str, Any]) -> int:
    """Create the check run once: after a 5xx or no answer, the run this POST made (if GitHub made it)
    is looked up on the commit and used, so a retry never leaves two."""
    async def find() -> dict[str, Any] | None:
        return await _created(gh, repo, body)

    data = await create_once(gh, "/repos/" + repo + "/check-runs", body, find=find)
    return int(data["id"])


async def _created(gh: GitHubAPI, repo: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The newest run on `head_sha` that this create request made: same name and `external_id`,
    status, conclusion, title and summary (an earlier run of that name differs in one of them, or is
    the same report already)."""
    data = await gh.getitem("/repos/" + repo + "/commits/{sha}/check-runs{?check_name,filter,per_page}",
                            url_vars={"sha": body["head_sha"], "check_name": body["name"], "filter": "all",
                                      "per_page": "100"})
    for run in sorted(data.get("check_runs", []), key=lambda r: -int(r["id"])):
        output = run.get("output") or {}
        if (run.get("name") == body["name"] and (run.get("external_id") or None) == body.get("external_id")
                and run.get("status") == body["status"] and run.get("conclusion") == body.get("conclusion")
                and (output.get("title") or "").strip() == body["output"]["title"].strip()
                and (output.get("summary") or "").strip() == body["output"]["summary"].strip()):
            return dict(run)
    return None


async def update(gh: GitHubAPI, repo: str, check_id: int | str, *, title: str, summary: str,
                 status: str | None = None, external_id: str | None = None, details_url: str | None = None) -> None:
    """Change an open check run's output (and status: a `queued` check that now runs)."""
    body: dict[str, Any] = {"output": _output(title, summary, None)}
    if status:
        body["status"] = status
        if status == "in_progress":
            body["started_at"] = now()
    if external_id:
        body["external_id"] = external_id
    if details_url:
        body["details_url"] = details_url
    await gh.patch("/repos/" + repo + "/check-runs/{id}", url_vars={"id": str(check_id)}, data=body)


async def finish(gh: GitHubAPI, ann: Mapping[str, str], conclusion: str, *, title: str, summary: str,
                 text: str | None = None, details_url: str | None = None) -> None:
    """Complete the check run of a Job (named by its annotations); create it already completed when
    the bot died before it could create it. Links left out of the source are named at the end."""
    summary += dropped_note(ann) + kueue.placement_note(ann)
    if ann.get(jobs.CHECK_RUN):
        await complete(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], conclusion, title=title, summary=summary, text=text,
                       details_url=details_url)
        return
    await post_completed(gh, ann[jobs.REPO], ann[jobs.SHA], ann[jobs.CHECK_NAME], conclusion, title=title,
                         summary=summary, text=text, details_url=details_url)


async def ours_latest(gh: GitHubAPI, repo: str, sha: str, app_id: int) -> list[dict[str, Any]]:
    """The App's own latest check run of each name on `sha`, every page read (GitHub pages at 100)."""
    url = "/repos/" + repo + "/commits/{sha}/check-runs{?filter,per_page}"
    return [run async for run in gh.getiter(url, url_vars={"sha": sha, "filter": "latest", "per_page": "100"},
                                            iterable_key="check_runs")
            if (run.get("app") or {}).get("id") == app_id]


async def latest(gh: GitHubAPI, repo: str, sha: str, name: str) -> dict[str, Any] | None:
    data = await gh.getitem("/repos/" + repo + "/commits/{sha}/check-runs{?check_name,filter}",
                            url_vars={"sha": sha, "check_name": name, "filter": "latest"})
    runs: list[dict[str, Any]] = data.get("check_runs", [])
    return runs[0] if runs else None


async def load_config(gh: GitHubAPI, repo: str, *, ref: str, sha: str) -> config.RepoConfig | None:
    """`.github/flops.yml` at `ref`; None when absent or invalid. An invalid file gets a failing
    `flops/config` check run on `sha` that names every wrong key."""
    try:
        return await fetch_config(gh, repo, ref)
    except config.ConfigError as error:
        await report_invalid_config(gh, repo, sha, ref, error)
        return None


async def report_invalid_config(gh: GitHubAPI, repo: str, sha: str, ref: str, error: config.ConfigError) -> None:
    """A failing `flops/config` check run on `sha` that names every wrong key of the file at `ref`."""
    await post_completed(
        gh, repo, sha, CONFIG, "failure",
        title=f"{len(error.problems)} problem(s) in {config.CONFIG_PATH}",
        summary=f"`{config.CONFIG_PATH}` at `{ref[:12]}` is invalid, so flops-bot did nothing for this "
                f"commit. Fix these and push again (check locally with "
                f"`python -m bot check-config {config.CONFIG_PATH}`):\n\n{error.markdown()}",
    )


async def fetch_config(gh: GitHubAPI, repo: str, ref: str | None) -> config.RepoConfig | None:
    """The parsed config of `repo` at `ref` (None: the default branch's head); None when the repository
    has no flops.yml."""
    try:
        data = await gh.getitem("/repos/" + repo + "/contents/" + config.CONFIG_PATH + "{?ref}", url_vars={"ref": ref})
    except gidgethub.BadRequest as exc:
        if exc.status_code == 404:
            return None
        raise
    return config.parse(config.decode_content(data))
