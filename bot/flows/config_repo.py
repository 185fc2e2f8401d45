"""The config repository of a deploy target, through the GitHub API: read and commit its manifest
(the blob sha as precondition), and the bot's deploy branch and pull request (`mode: pull_request`).
"""
from __future__ import annotations

import base64
import urllib.parse
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core.config import ConfigError, DeployTarget, decode_content
from bot.core.config.consent import CONSENT_PATH, Consent, entry_to_add, file_to_add, parse_consent


class DeployError(Exception):
    """Permanent: reported as a failing deploy check with this message."""


def quoted_path(path: str) -> str:
    """A path for a URL: `/` kept (GitHub wants `dev/cronjob.yaml`, `flops/deploy-dev` as is),
    everything else percent-encoded, so `?`, `#` or `{` in a name cannot change the request."""
    return urllib.parse.quote(path, safe="/")


def contents_url(target: DeployTarget) -> str:
    return "/repos/" + target.repo + "/contents/" + quoted_path(target.file)


async def read(gh: GitHubAPI, target: DeployTarget, branch: str) -> tuple[str, str]:
    try:
        data = await gh.getitem(contents_url(target) + "{?ref}", url_vars={"ref": branch})
    except gidgethub.BadRequest as exc:
        if exc.status_code == 404:
            raise DeployError(f"`{target.file}` does not exist on `{target.repo}@{branch}`: check `file` and "
                              f"`branch` of deploy target `{target.name}` in .github/flops.yml.") from None
        raise
    if not isinstance(data, dict) or data.get("type") != "file":
        raise DeployError(f"`{target.file}` on `{target.repo}@{branch}` is a directory, not a file: point `file` "
                          f"of deploy target `{target.name}` at the manifest itself.")
    if data.get("encoding") != "base64":
        raise DeployError(f"`{target.file}` on `{target.repo}@{branch}` is larger than the 1 MB the Contents API "
                          f"serves: split it (e.g. one file per workload) for deploy target `{target.name}`.")
    try:
        return base64.b64decode(data["content"]).decode("utf-8"), str(data["sha"])
    except UnicodeDecodeError:
        raise DeployError(f"`{target.file}` on `{target.repo}@{branch}` is not UTF-8 text: save it as UTF-8.") from None


async def write(gh: GitHubAPI, target: DeployTarget, branch: str, text: str, blob: str, message: str) -> Any:
    return await gh.put(contents_url(target), data={
        "message": message, "content": base64.b64encode(text.encode("utf-8")).decode(), "sha": blob,
        "branch": branch})


async def read_consent(gh: GitHubAPI, target: DeployTarget, repo: str, ref: str) -> Consent:
    """The target branch's `.github/flops-deploy.yml`; `DeployError` (with the entry a build of
    `ref` of `repo` needs) when it is missing or invalid."""
    where = f"`{CONSENT_PATH}` on `{target.repo}@{target.branch}`"
    add = (f"Add it there (through that branch's review), for example:\n\n```yaml\n"
           f"{file_to_add(repo, ref, target.file)}```\nthen retry with `/redeploy {target.name}`.")
    try:
        data = await gh.getitem("/repos/" + target.repo + "/contents/" + CONSENT_PATH + "{?ref}",
                                url_vars={"ref": target.branch})
    except gidgethub.BadRequest as exc:
        if exc.status_code != 404:
            raise
        raise DeployError(f"{where} does not exist, so `{target.repo}` has not agreed to deploys from `{repo}` "
                          f"and nothing was committed. {add}") from None
    try:
        return parse_consent(decode_content(data))
    except ConfigError as error:
        raise DeployError(f"{where} is invalid, so nothing was committed (check it locally with "
                          f"`python -m bot check-config {CONSENT_PATH}`):\n\n{error.markdown()}") from None


def refused(target: DeployTarget, repo: str, ref: str) -> DeployError:
    return DeployError(
        f"`{CONSENT_PATH}` on `{target.repo}@{target.branch}` has no `allow` entry that lets builds of `{ref}` of "
        f"`{repo}` edit `{target.file}`, so nothing was committed. If `{target.repo}` agrees, add this entry to "
        f"`allow` there (through that branch's review):\n\n```yaml\n{entry_to_add(repo, ref, target.file)}```\n"
        f"then retry with `/redeploy {target.name}`.")


def deploy_branch(target: DeployTarget) -> str:
    return f"flops/deploy-{target.name}"


async def restart_branch(gh: GitHubAPI, target: DeployTarget) -> None:
    """PR mode, no open PR: the bot's branch (re)started from the target branch's head."""
    branch = deploy_branch(target)
    base = await gh.getitem("/repos/" + target.repo + "/git/ref/heads/" + quoted_path(target.branch))
    head_sha = base["object"]["sha"]
    try:
        await gh.post("/repos/" + target.repo + "/git/refs", data={"ref": f"refs/heads/{branch}", "sha": head_sha})
    except gidgethub.BadRequest as exc:
        if exc.status_code != 422:  # 422: it exists (left from a merged or closed PR): move it
            raise
        await gh.patch("/repos/" + target.repo + "/git/refs/heads/" + quoted_path(branch),
                       data={"sha": head_sha, "force": True})


async def open_pull(gh: GitHubAPI, target: DeployTarget) -> dict[str, Any] | None:
    """The open deploy PR of this target, if any."""
    owner = target.repo.split("/")[0]
    found = await gh.getitem("/repos/" + target.repo + "/pulls{?state,head,base}",
                             url_vars={"state": "open", "head": f"{owner}:{deploy_branch(target)}", "base": target.branch})
    return found[0] if found else None


async def upsert_pull(gh: GitHubAPI, target: DeployTarget, message: str) -> str:
    """Open the deploy PR, or retitle the open one (its branch already holds the new commit)."""
    title, _, body = message.partition("\n\n")
    body = f"{body}\n\nOpened by flops-bot for deploy target `{target.name}`; merge it to deploy."
    pull = await open_pull(gh, target)
    if pull is None:
        try:
            pull = await gh.post("/repos/" + target.repo + "/pulls",
                                 data={"title": title, "head": deploy_branch(target), "base": target.branch,
                                       "body": body})
            return str(pull["html_url"])
        except gidgethub.BadRequest as exc:
            pull = await open_pull(gh, target) if exc.status_code == 422 else None
            if pull is None:  # not "already exists": a real refusal
                raise
    updated = await gh.patch("/repos/" + target.repo + "/pulls/{number}", url_vars={"number": str(pull["number"])},
                             data={"title": title, "body": body})
    return str(updated["html_url"])
