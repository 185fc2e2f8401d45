"""push: build the configured images of a pushed branch or tag in the cluster; on the default
branch also refresh the regression baseline and (optionally) queue a federated smoke run.

Only a push to the default branch (which went through its branch protection) is read under its
own flops.yml. Any other branch or tag builds and deploys as the default branch's file says."""
from __future__ import annotations

from gidgethub import routing, sansio
from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.core.config import RegressionConfig, RepoConfig
from bot.flows import builds, federated, regression, tests
from bot.flows.deps import Deps
from bot.platform import checks

router = routing.Router()


@router.register("push")
async def build_pushed_commit(event: sansio.Event, gh: GitHubAPI, *, deps: Deps) -> None:
    data = event.data
    if data.get("deleted") or not data.get("after") or data["after"] == builds.ZERO_SHA or "installation" not in data:
        return
    push = builds.Push.from_payload(data, event.delivery_id)
    if push.branch != push.default_branch:
        await build_other_ref(gh, deps, push)
        return
    cfg = await checks.load_config(gh, push.repo, ref=push.sha, sha=push.sha)  # went through branch protection
    if cfg is None:
        return
    if builds.wants_build(cfg, push):
        started = await builds.start_for_push(gh, deps, cfg, push) if cfg.images else []
        if cfg.federated and cfg.federated.on_push and push.branch == push.default_branch:
            await federated.on_push(gh, deps, cfg.federated, push, started)
    if cfg.regression and push.branch == push.default_branch:  # whether or not `branches` lists it
        await refresh_baseline(gh, deps, cfg.regression, push, trusted=cfg)
    await run_tests(gh, deps, cfg, push)


async def build_other_ref(gh: GitHubAPI, deps: Deps, push: builds.Push) -> None:
    """A push to another branch, or a tag: the default branch's flops.yml decides whether it builds
    and where it deploys; the pushed commit's file only shapes the images' builds."""
    trusted = await builds.trusted_config(gh, push.repo, push.default_branch)
    if trusted is None or not builds.wants_build(trusted, push):
        return
    cfg = await builds.config_for_build(gh, trusted, push.repo, push.sha)
    if cfg is not None and cfg.images:
        await builds.start_for_push(gh, deps, cfg, push)
    await run_tests(gh, deps, trusted, push)


async def run_tests(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, push: builds.Push) -> None:
    """`tests:` with `on: push` for a configured branch (never a tag), with the config given: the
    default branch's own for its pushes, the default branch's for any other branch."""
    if not cfg.tests or push.branch is None or not builds.builds_branch(cfg, push.branch, push.default_branch):
        return
    src = jobs.Source(push.repo, push.sha, push.installation_id, ref=push.branch, delivery_id=push.delivery_id)
    await tests.for_push(gh, deps, cfg, src, await builds.changed_files(gh, push))


async def refresh_baseline(gh: GitHubAPI, deps: Deps, cfg: RegressionConfig, push: builds.Push, *,
                           trusted: RepoConfig) -> None:
    """The default branch's regression run: the baseline pull requests based on this commit compare to
    (`trusted`: the default branch's config at this push, its `queue` included)."""
    src = jobs.Source(push.repo, push.sha, push.installation_id, ref=push.branch or "", delivery_id=push.delivery_id)
    await regression.start(gh, deps, cfg, src, trigger="push", baseline=True, default_branch=push.default_branch,
                           trusted=trusted)
