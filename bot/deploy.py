"""GitOps deploy: bump image references in the config repo once a target's images are built.

Commits go through the Contents API with the blob sha as precondition; a conflict means
someone else committed in between, so the file is re-read, the decision re-made and the
commit retried. The file never goes backwards unless a human asked (`/redeploy`).
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
from dataclasses import dataclass
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot import builds, checks, manifests
from bot.config import DeployTarget, RepoConfig
from bot.deps import Deps

log = logging.getLogger(__name__)

ATTEMPTS = 5
TAG_TIME = re.compile(r"-(\d{14})-([0-9a-f]{7,40})$")


class DeployError(Exception):
    """Permanent: reported as a failing deploy check with this message."""


@dataclass(frozen=True)
class Result:
    conclusion: str  # success | neutral | failure
    title: str
    summary: str
    url: str | None = None


async def build_records(deps: Deps, repo: str, sha: str, images: tuple[str, ...]) -> dict[str, dict[str, Any]] | None:
    """The successful build records of `images` at `sha`, or None while one is missing."""
    records = {}
    for image in images:
        record = await deps.artifacts.get_json(builds.record_key(repo, sha, image))
        if record is None:
            return None
        records[image] = record
    return records


class Deployer:
    """One per bot: serialises deploys of the same target so two finishing builds deploy once."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    async def after_build(self, gh: GitHubAPI, deps: Deps, record: dict[str, Any]) -> None:
        """After-build hook: deploy every target whose images have now all built for this commit."""
        for target in builds.targets_from_annotation(record.get("deploy_targets", "")):
            if record["image"] not in target.images:
                continue
            key = f"{record['repo']}@{record['sha']}:{target.name}"
            async with self._locks.setdefault(key, asyncio.Lock()):
                marker = f"deploys/{record['repo']}/{record['sha']}/{target.name}.json"
                if await deps.artifacts.exists(marker):
                    continue
                records = await build_records(deps, record["repo"], record["sha"], target.images)
                if records is None:
                    continue  # another image of this target is still building
                result = await deploy_and_report(gh, deps, target, record["repo"], record["sha"], records)
                await deps.artifacts.put_json(marker, {"conclusion": result.conclusion, "title": result.title})


async def deploy_and_report(gh: GitHubAPI, deps: Deps, target: DeployTarget, repo: str, sha: str,
                            records: dict[str, dict[str, Any]], *, explicit: bool = False) -> Result:
    try:
        result = await deploy(deps, target, repo, sha, records, explicit=explicit)
    except DeployError as exc:
        result = Result("failure", f"Deploy to {target.name} failed", str(exc))
    except gidgethub.HTTPException as exc:
        result = Result("failure", f"Deploy to {target.name} failed",
                        f"GitHub answered {exc.status_code} for `{target.repo}`: {exc}. Is the App installed on "
                        f"`{target.repo}` with contents: write? Re-run with `/redeploy {target.name} {sha[:7]}`.")
    await checks.post_completed(gh, repo, sha, checks.deploy_name(target.name), result.conclusion,
                                title=result.title, summary=result.summary, details_url=result.url)
    log.info("deploy reported", extra={"repo": repo, "sha": sha, "target": target.name,
                                       "conclusion": result.conclusion})
    return result


async def deploy(deps: Deps, target: DeployTarget, repo: str, sha: str, records: dict[str, dict[str, Any]],
                 *, explicit: bool = False) -> Result:
    """Read, decide, edit, commit; on a sha conflict start over (someone committed meanwhile)."""
    try:
        cfg_gh = await deps.github.for_repo(target.repo)
    except gidgethub.BadRequest as exc:
        raise DeployError(f"flops-bot is not installed on `{target.repo}` ({exc.status_code}); install the App "
                          f"there so it can commit to `{target.file}`.") from None
    code_gh = await deps.github.for_repo(repo)
    branch = await _work_branch(cfg_gh, target) if target.mode == "pull_request" else target.branch
    for attempt in range(1, ATTEMPTS + 1):
        text, blob = await _read(cfg_gh, target, branch)
        edited, skipped = await _edit(code_gh, repo, sha, target, text, records, explicit)
        if not edited.changes:
            return Result("neutral", f"{target.name}: nothing to change", skipped or
                          f"`{target.file}` on `{target.repo}@{branch}` already references these images.")
        message = commit_message(target, repo, sha, records, rollback=explicit and skipped is not None)
        try:
            commit = await _write(cfg_gh, target, branch, edited.text, blob, message)
        except gidgethub.HTTPException as exc:
            if exc.status_code in (409, 422) and attempt < ATTEMPTS:
                log.info("deploy conflict; re-reading", extra={"target": target.name, "attempt": attempt})
                continue
            raise
        url = commit["commit"]["html_url"]
        if target.mode == "pull_request":
            url = await _open_pull(cfg_gh, target, branch, message)
        lines = "\n".join(f"- `{c.old}` → `{c.new}` (line {c.line})" for c in edited.changes)
        return Result("success", f"Deployed to {target.name}",
                      f"{'Pull request' if target.mode == 'pull_request' else 'Commit'}: {url}\n\n"
                      f"`{target.repo}` `{target.file}` on `{branch}`:\n{lines}", url)
    raise DeployError(f"`{target.file}` kept changing under us ({ATTEMPTS} conflicts); retry with "
                      f"`/redeploy {target.name} {sha[:7]}`.")


async def _edit(gh: GitHubAPI, repo: str, sha: str, target: DeployTarget, text: str,
                records: dict[str, dict[str, Any]], explicit: bool) -> tuple[manifests.Edit, str | None]:
    """Apply every image of the target, skipping those whose file already has a newer build."""
    skipped = None
    changes: list[manifests.Change] = []
    for image in target.images:
        record = records[image]
        repository = manifests.split_image(record["destination"])[0]
        try:
            current = manifests.find_images(text, repository=repository, field=target.field)
            newer = [f.value for f in current if await is_newer(gh, repo, f.value, record)]
            if newer and not explicit:
                skipped = (f"`{target.file}` already references `{newer[0]}`, a build of a newer commit than "
                           f"{sha[:7]}; not going backwards. Use `/redeploy {target.name} {sha[:7]}` to roll back.")
                continue
            if newer:
                skipped = f"rollback from `{newer[0]}`"
            edit = manifests.set_image(text, repository=repository, reference=record["reference"], field=target.field)
        except manifests.ManifestError as exc:
            raise DeployError(f"{exc}") from None
        text = edit.text
        changes.extend(edit.changes)
    return manifests.Edit(text=text, changes=tuple(changes)), skipped


async def is_newer(gh: GitHubAPI, repo: str, current: str, record: dict[str, Any]) -> bool:
    """Does `current` name a build of a commit newer than the record's? Ancestry first, tag second."""
    _, tag, _ = manifests.split_image(current)
    match = TAG_TIME.search(tag or "")
    if not match or current == record["reference"]:
        return False
    current_sha = match.group(2)
    if record["sha"].startswith(current_sha):
        return False
    try:
        data = await gh.getitem("/repos/" + repo + "/compare/{spec}", url_vars={"spec": f"{record['sha']}...{current_sha}"})
        if data["status"] in ("ahead", "behind", "identical"):
            return bool(data["status"] == "ahead")
    except gidgethub.BadRequest:
        pass  # unknown commit (another repo, force-pushed away): fall back to the sortable tag
    mine = TAG_TIME.search(record["tag"])
    return bool(mine and match.group(1) > mine.group(1))


def commit_message(target: DeployTarget, repo: str, sha: str, records: dict[str, dict[str, Any]], *,
                   rollback: bool) -> str:
    images = ", ".join(f"{name} {repo}@{sha[:7]} -> {records[name]['destination']}" for name in target.images)
    head = f"deploy({target.name}): {images}"
    body = [f"Source: {repo}@{sha}", *(f"Image: {records[n]['reference']}" for n in target.images)]
    if rollback:
        body.insert(0, "Explicit rollback requested with /redeploy: this moves the target to an older build.")
    return head + "\n\n" + "\n".join(body)


async def _read(gh: GitHubAPI, target: DeployTarget, branch: str) -> tuple[str, str]:
    try:
        data = await gh.getitem("/repos/" + target.repo + "/contents/" + target.file + "{?ref}", url_vars={"ref": branch})
    except gidgethub.BadRequest as exc:
        if exc.status_code == 404:
            raise DeployError(f"`{target.file}` does not exist on `{target.repo}@{branch}`: check `file` and "
                              f"`branch` of deploy target `{target.name}` in .github/flops.yml.") from None
        raise
    return base64.b64decode(data["content"]).decode("utf-8"), data["sha"]


async def _write(gh: GitHubAPI, target: DeployTarget, branch: str, text: str, blob: str, message: str) -> Any:
    return await gh.put("/repos/" + target.repo + "/contents/" + target.file, data={
        "message": message, "content": base64.b64encode(text.encode("utf-8")).decode(), "sha": blob,
        "branch": branch})


def deploy_branch(target: DeployTarget) -> str:
    return f"flops/deploy-{target.name}"


async def _work_branch(gh: GitHubAPI, target: DeployTarget) -> str:
    """PR mode: the bot's branch, (re)started from the target branch's head."""
    branch = deploy_branch(target)
    base = await gh.getitem("/repos/" + target.repo + "/git/ref/heads/{branch}", url_vars={"branch": target.branch})
    head_sha = base["object"]["sha"]
    try:
        await gh.post("/repos/" + target.repo + "/git/refs", data={"ref": f"refs/heads/{branch}", "sha": head_sha})
    except gidgethub.BadRequest as exc:
        if exc.status_code != 422:  # exists: move it to the base head (the open PR shows the new bump)
            raise
        await gh.patch("/repos/" + target.repo + "/git/refs/heads/{branch}", url_vars={"branch": branch},
                       data={"sha": head_sha, "force": True})
    return branch


async def _open_pull(gh: GitHubAPI, target: DeployTarget, branch: str, message: str) -> str:
    title, _, body = message.partition("\n\n")
    owner = target.repo.split("/")[0]
    existing = await gh.getitem("/repos/" + target.repo + "/pulls{?state,head,base}",
                                url_vars={"state": "open", "head": f"{owner}:{branch}", "base": target.branch})
    if existing:
        pull = await gh.patch("/repos/" + target.repo + "/pulls/{number}", url_vars={"number": str(existing[0]["number"])},
                              data={"title": title, "body": body})
    else:
        pull = await gh.post("/repos/" + target.repo + "/pulls",
                             data={"title": title, "head": branch, "base": target.branch, "body": body})
    return str(pull["html_url"])


async def redeploy(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, repo: str, target_name: str, sha: str | None,
                   default_branch: str) -> Result:
    """`/redeploy <target> [<sha>]`: point the target at that commit's builds, even an older one."""
    target = next((t for t in cfg.deploy if t.name == target_name), None)
    if target is None:
        known = ", ".join(f"`{t.name}`" for t in cfg.deploy) or "none configured"
        return Result("failure", "Unknown deploy target", f"`{target_name}` is not a deploy target (known: {known}).")
    if sha is None:
        latest = await deps.artifacts.get_json(builds.latest_key(repo, default_branch, target.images[0]))
        if latest is None:
            return Result("failure", "Nothing to deploy", f"No successful build of `{target.images[0]}` on "
                                                          f"`{default_branch}` yet.")
        full = latest["sha"]
    else:
        try:
            full = (await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha}))["sha"]
        except gidgethub.BadRequest:
            return Result("failure", "Unknown commit", f"`{sha}` is not a commit of `{repo}`.")
    records = await build_records(deps, repo, full, target.images)
    if records is None:
        return Result("failure", "Not built", f"`{full[:7]}` has no successful build of every image of "
                                              f"`{target.name}` ({', '.join(target.images)}); push it or `/build` first.")
    return await deploy_and_report(gh, deps, target, repo, full, records, explicit=True)
