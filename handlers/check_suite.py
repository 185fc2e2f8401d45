"""check_suite: "Re-run all checks" / "Re-run failed checks" on the bot's suite. GitHub sends the
same `rerequested` event for both, so the suite's failed build checks are re-run, or all of its
build checks when none failed; each exactly as its own Re-run button would (`bot.flows.reruns`).
Its failed `flops/test: <name>` checks are run again too (`bot.flows.tests.rerun`).
`requested` and `completed` need nothing: the bot creates its check runs itself."""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.flows import reruns, tests
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)
router = routing.Router()


@router.register("check_suite", action="rerequested")
async def rerun_suite(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    suite, data = event.data["check_suite"], event.data
    repo, sha = data["repository"]["full_name"], suite["head_sha"]
    latest = await checks.ours_latest(gh, repo, sha, deps.settings.app_id)  # one listing for builds and tests
    runs = reruns.suite_builds(latest)
    log.info("check suite re-run", extra={"repo": repo, "sha": sha, "builds": len(runs)})
    for run in runs:
        rerun = reruns.payload_rerun(data, sha, reruns.image_of(run["name"]) or "", suite.get("head_branch"),
                                     suite.get("pull_requests"), attempt=f"rerun-{run['id']}-{event.delivery_id}")
        await reruns.rerun_build(gh, deps, rerun)
    for run in tests.failed_checks(latest):
        run = {**run, "check_suite": {"head_branch": suite.get("head_branch")}, "pull_requests": suite.get("pull_requests")}
        await tests.rerun(gh, deps, data, run, tests.test_of(run["name"]) or "",
                          attempt=f"rerun-{run['id']}-{event.delivery_id}")
