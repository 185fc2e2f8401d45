"""check_run: the Re-run button on one of our build checks builds that image again."""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot import builds, checks
from bot.deps import Deps

router = routing.Router()


@router.register("check_run", action="rerequested")
async def rebuild_on_rerun(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    run = event.data["check_run"]
    repo = event.data["repository"]["full_name"]
    sha = run["head_sha"]
    if not run["name"].startswith(checks.build_name("")):
        return
    cfg = await checks.load_config(gh, repo, ref=sha, sha=sha)
    if cfg is None or builds.image_for_check(cfg, run["name"]) is None:
        return
    branch = (run.get("check_suite") or {}).get("head_branch") or ""
    await builds.rerun(gh, deps, cfg, repo=repo, sha=sha, image_name=run["name"][len(checks.build_name("")):],
                       installation_id=int(event.data["installation"]["id"]), ref=branch,
                       attempt=f"rerun-{run['id']}-{event.delivery_id}")
