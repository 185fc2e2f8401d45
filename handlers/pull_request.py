"""pull_request: a new head makes the old head's work stale (its builds, regression and federated
runs are cancelled, and `flops/regression` goes back to `queued`, so a required check blocks the
merge until it runs again) and the new head's `tests:` run; a closed PR stops its Jobs."""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.flows import lifecycle, pulls, regression, tests
from bot.flows.deps import Deps
from bot.platform import checks

router = routing.Router()
PR_KINDS = (jobs.BUILD, jobs.REGRESSION, jobs.FEDERATED_SERVER, jobs.TEST)  # what a PR can have running


@router.register("pull_request", action="synchronize")
@router.register("pull_request", action="opened")
@router.register("pull_request", action="reopened")
async def queue_regression_for_new_head(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    pr = pulls.PullRef.from_api(event.data["pull_request"], int(event.data["installation"]["id"]))
    # The head now, not the event's: a late event (another replica took the newer one first) must keep the
    # newest head's runs, not cancel them.
    head = (await pulls.fetch(gh, pr.repo, pr.number, pr.installation_id)).head_sha
    await lifecycle.cancel_for_pr(gh, deps, pr.repo, pr.number,
                                  f"Cancelled: the pull request moved to {head[:7]}.", keep_sha=head, kinds=PR_KINDS)
    if head != pr.head_sha:  # a late event: its head is gone, the newer head's own event starts its runs
        return
    cfg = await checks.load_config(gh, pr.repo, ref=pr.base_sha, sha=pr.head_sha)
    if cfg is not None and cfg.regression is not None:
        await regression.mark_waiting(gh, pr.repo, pr.head_sha)
    if cfg is not None and cfg.tests:
        await tests.for_pull_request(gh, deps, cfg, pr, trigger=f"pull request {event.data['action']}",
                                     delivery_id=event.delivery_id)


@router.register("pull_request", action="closed")
async def stop_jobs_of_closed_pr(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    pr = pulls.PullRef.from_api(event.data["pull_request"], int(event.data["installation"]["id"]))
    await lifecycle.cancel_for_pr(gh, deps, pr.repo, pr.number, "Cancelled: the pull request was closed.",
                                  kinds=PR_KINDS)
