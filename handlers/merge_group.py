"""merge_group: a merge queue must never stall on the required `flops/regression` check.

The group's code runs only if every pull request in it may run under the `/regression` rule
(`merge_queue.gate`); otherwise the check fails naming the pull request that lacks approval.
A result for the same tree (the PR's head, when the queue adds nothing new) is reused; otherwise
the regression Job runs for the merge group's head commit. A group that leaves the queue without
being merged stops its Job (no cluster time for a commit that will never land).
"""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.flows import merge_queue, regression, tests
from bot.flows.deps import Deps
from bot.platform import checks

router = routing.Router()


@router.register("merge_group", action="checks_requested")
async def gate_merge_group(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    group, repo = event.data["merge_group"], event.data["repository"]["full_name"]
    installation = int(event.data["installation"]["id"])
    cfg = await checks.load_config(gh, repo, ref=group["base_sha"], sha=group["head_sha"])
    if cfg is None or not (cfg.tests or cfg.regression):
        return
    why = await merge_queue.refusal(gh, deps, repo, installation, group)  # once: it walks the queue
    if cfg.tests:
        await tests.for_merge_group(gh, deps, cfg, jobs.Source(
            repo, group["head_sha"], installation, ref=group.get("base_ref", ""), delivery_id=event.delivery_id), why)
    if cfg.regression is None or not await merge_queue.gate(gh, repo, group, why):
        return
    tree = (group.get("head_commit") or {}).get("tree_id")
    if tree and await regression.reuse_for_tree(gh, deps, repo, group["head_sha"], tree):
        return
    src = jobs.Source(repo, group["head_sha"], installation, ref=group.get("base_ref", ""),
                      delivery_id=event.delivery_id)
    await regression.start(gh, deps, cfg.regression, src, trigger="merge queue",
                           default_branch=event.data["repository"].get("default_branch", ""))


@router.register("merge_group", action="destroyed")
async def stop_run_of_dequeued_group(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    if event.data.get("reason") == "merged":
        return  # its commit lands on the default branch; the result still documents it
    group, repo = event.data["merge_group"], event.data["repository"]["full_name"]
    why = f"Cancelled: the merge group left the queue ({event.data.get('reason')})."
    await regression.cancel_for_commit(gh, deps, repo, group["head_sha"], why)
    await tests.cancel_for_commit(gh, deps, repo, group["head_sha"], why)
