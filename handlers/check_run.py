"""check_run: the Re-run button on one of our build checks builds that image again
(`bot.flows.reruns`: a branch's build under the default branch's config, else the pull request's);
on a `flops/test: <name>` check it runs that test of that commit again (`bot.flows.tests.rerun`)."""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.flows import reruns, tests
from bot.flows.deps import Deps

router = routing.Router()


@router.register("check_run", action="rerequested")
async def rebuild_on_rerun(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    run = event.data["check_run"]
    test = tests.test_of(run["name"])
    if test is not None:
        await tests.rerun(gh, deps, event.data, run, test, attempt=f"rerun-{run['id']}-{event.delivery_id}")
        return
    image = reruns.image_of(run["name"])
    if image is None:
        return
    rerun = reruns.payload_rerun(event.data, run["head_sha"], image, (run.get("check_suite") or {}).get("head_branch"),
                                 run.get("pull_requests"), attempt=f"rerun-{run['id']}-{event.delivery_id}")
    await reruns.rerun_build(gh, deps, rerun)
