"""check_run: the Re-run button on one of our build checks builds that image again.

A build of a configured branch's commit is re-run as that branch's build (same tag scheme, its
deploy targets follow), with `branches` and `deploy` from the default branch's flops.yml at its
head: never from the commit being re-built. Anything else is a pull request's build: re-run as `/build` would run
it — tagged `pr-<n>-<sha7>`, config from the base branch, never deployed, and for a fork only
with a maintainer's grant for that head sha. A fork's branch named like ours is not ours.
"""
from __future__ import annotations

from typing import Any

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.flows import builds, pulls
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)
router = routing.Router()


@router.register("check_run", action="rerequested")
async def rebuild_on_rerun(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    run, data = event.data["check_run"], event.data
    prefix = checks.build_name("")
    if not run["name"].startswith(prefix):
        return
    repo, sha, image = data["repository"]["full_name"], run["head_sha"], run["name"][len(prefix):]
    installation = int(data["installation"]["id"])
    attempt = f"rerun-{run['id']}-{event.delivery_id}"
    branch = (run.get("check_suite") or {}).get("head_branch") or ""
    if branch and await builds.on_branch(gh, repo, branch, sha):
        default = data["repository"].get("default_branch") or "main"
        trusted = await builds.trusted_config(gh, repo, default)  # never the clicked commit's own keys
        cfg = await builds.config_for_build(gh, trusted, repo, sha) if trusted is not None else None
        if cfg is not None and builds.builds_branch(cfg, branch, default):
            await builds.rerun(gh, deps, cfg, repo=repo, sha=sha, image_name=image, installation_id=installation,
                               ref=branch, attempt=attempt)
            return
    await rebuild_for_pull_request(gh, deps, run, repo, image, installation, attempt)


async def rebuild_for_pull_request(gh: GitHubAPI, deps: Deps, run: dict[str, Any], repo: str, image: str,
                                   installation: int, attempt: str) -> None:
    numbers = [int(p["number"]) for p in run.get("pull_requests") or []]
    pr = await pulls.with_head(gh, repo, run["head_sha"], installation, numbers)
    if pr is None:
        log.info("re-run of a build that is neither a branch's nor an open PR's; nothing to do",
                 extra={"repo": repo, "sha": run["head_sha"], "check": run["name"]})
        return
    if not await pulls.may_run(deps, pr):
        log.info("re-run of a fork PR's build without a grant for its head", extra={"repo": repo, "pr": pr.number})
        return
    cfg = await checks.load_config(gh, repo, ref=pr.base_sha, sha=pr.head_sha)
    if cfg is not None and cfg.image(image) is not None:
        await builds.start_for_pr(gh, deps, cfg, pr, (image,), attempt)
