"""pull_request_review: an approval by someone with write access starts the regression run.

The approval is also the trust signal for a fork's code, for that exact head sha.
"""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.flows import pulls, regression
from bot.flows.deps import Deps
from bot.platform import checks

router = routing.Router()


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
    await pulls.grant(deps, pr, reviewer, "approval")
    cfg = await checks.load_config(gh, pr.repo, ref=pr.base_sha, sha=pr.head_sha)
    if cfg is None or cfg.regression is None:
        return
    await regression.start(gh, deps, cfg.regression, regression.pr_source(pr, event.delivery_id), trigger="approval",
                           default_branch=data["repository"].get("default_branch", ""))
