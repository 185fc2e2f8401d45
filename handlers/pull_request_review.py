"""pull_request_review: an approval by someone with write access starts the regression run.

The approval is also the trust signal for a fork's code, for that exact head sha. Dismissing it
withdraws that grant; when nothing else vouches for the commit any more, what ran on its strength
is stopped (the run it started; for a fork, every unfinished Job of that commit and a waiting `/train`).
"""
from __future__ import annotations

import dataclasses

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.flows import federated, lifecycle, pulls, regression, tests
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)
router = routing.Router()
FORK_KINDS = (jobs.BUILD, jobs.REGRESSION, jobs.FEDERATED_SERVER, jobs.TEST)  # what fork code may have running


@router.register("pull_request_review", action="submitted")
async def start_regression_on_approval(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    review, data = event.data["review"], event.data
    if str(review.get("state", "")).lower() != "approved" or "installation" not in data:
        return
    pr = pulls.PullRef.from_api(data["pull_request"], int(data["installation"]["id"]))
    if pr.state != "open":
        return
    reviewer = review["user"]["login"]
    if review.get("commit_id") not in (None, pr.head_sha) or not await deps.permissions.can_write(gh, pr.repo, reviewer):
        return  # an approval of an older commit, or by someone without write access: not a trust signal
    await pulls.grant(deps, pr, reviewer, "approval", review=int(review["id"]))
    cfg = await checks.load_config(gh, pr.repo, ref=pr.base_sha, sha=pr.head_sha)
    if cfg is not None and cfg.tests and pr.fork:  # the grant lets the fork head's tests run now
        await tests.for_pull_request(gh, deps, cfg, pr, trigger="approval", delivery_id=event.delivery_id)
    if cfg is None or cfg.regression is None:
        return
    await regression.start(gh, deps, cfg.regression, regression.pr_source(pr, event.delivery_id), trigger="approval",
                           default_branch=data["repository"].get("default_branch", ""))


@router.register("pull_request_review", action="dismissed")
async def withdraw_dismissed_approval(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    review, data = event.data["review"], event.data
    if "installation" not in data:
        return
    pr = pulls.PullRef.from_api(data["pull_request"], int(data["installation"]["id"]))
    pr = dataclasses.replace(pr, head_sha=review.get("commit_id") or pr.head_sha)  # the sha it approved
    reviewer = review["user"]["login"]
    left = await pulls.revoke(deps, pr, reviewer, int(review["id"]))
    if left is not False:
        return  # it granted nothing, or another approval / `/ok-to-test` still vouches for this commit
    log.info("approval dismissed, grant revoked", extra={"repo": pr.repo, "pr": pr.number, "sha": pr.head_sha,
                                                           "user": reviewer})
    await stop_what_the_approval_allowed(gh, deps, pr, reviewer)


async def stop_what_the_approval_allowed(gh: GitHubAPI, deps: Deps, pr: pulls.PullRef, reviewer: str) -> int:
    """A fork's commit is no longer trusted: all its unfinished Jobs stop and a waiting `/train` is
    dropped. A same-repository PR may run anyway: only the run the approval started stops."""
    sha = pr.head_sha[:7]
    if pr.fork:
        why = (f"Cancelled: @{reviewer}'s approval of {sha} was dismissed, and no other approval or `/ok-to-test` "
               f"vouches for this fork's code. A maintainer's new approval (or `/ok-to-test`) runs it again.")
        await federated.drop_pending(deps, pr.repo, pr.head_sha)
        found = [job for kind in FORK_KINDS
                 for job in await lifecycle.running(deps, kind, repo=pr.repo, pr=pr.number, sha=pr.head_sha)]
    else:
        why = (f"Cancelled: @{reviewer}'s approval of {sha}, which started this run, was dismissed. "
               f"Comment `/regression` to run it anyway, or approve again.")
        found = [job for job in await lifecycle.running(deps, jobs.REGRESSION, repo=pr.repo, pr=pr.number,
                                                        sha=pr.head_sha)
                 if jobs.annotations_of(job).get(jobs.TRIGGER) == "approval"]
    return await lifecycle.cancel_all(gh, deps, found, why)
