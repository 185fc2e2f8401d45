"""Re-runs clicked on GitHub: one build check's Re-run button, or a whole suite's "Re-run all /
failed checks". Either builds that image of that commit again, under the same trust rules.

A build of a configured branch's commit is re-run as that branch's build (same tag scheme, its
deploy targets follow), with `branches` and `deploy` from the default branch's flops.yml at its
head: never from the commit being re-built. Anything else is a pull request's build: re-run as
`/build` would run it — tagged `pr-<n>-<sha7>`, config from the base branch, never deployed, and
for a fork only with a maintainer's grant for that head sha. A fork's branch named like ours is not ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.flows import builds, pulls
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)
# What "Re-run failed checks" means; a suite with none of these re-runs all of its build checks.
NOT_PASSED = frozenset({"failure", "cancelled", "timed_out", "action_required", "stale"})


@dataclass(frozen=True)
class Rerun:
    """One build check to run again: where it is, and what GitHub said about its commit."""

    repo: str
    sha: str
    image: str
    installation: int
    default_branch: str
    head_branch: str  # "" when GitHub names none (a fork's head, a detached commit)
    pull_numbers: tuple[int, ...]
    attempt: str  # distinguishes this re-run's Job from the first build's


def image_of(check_name: str) -> str | None:
    prefix = checks.build_name("")
    return check_name[len(prefix):] if check_name.startswith(prefix) else None


async def rerun_build(gh: GitHubAPI, deps: Deps, rerun: Rerun) -> None:
    if rerun.head_branch and await builds.on_branch(gh, rerun.repo, rerun.head_branch, rerun.sha):
        trusted = await builds.trusted_config(gh, rerun.repo, rerun.default_branch)  # never the commit's own keys
        cfg = await builds.config_for_build(gh, trusted, rerun.repo, rerun.sha) if trusted is not None else None
        if cfg is not None and builds.builds_branch(cfg, rerun.head_branch, rerun.default_branch):
            await builds.rerun(gh, deps, cfg, repo=rerun.repo, sha=rerun.sha, image_name=rerun.image,
                               installation_id=rerun.installation, ref=rerun.head_branch, attempt=rerun.attempt)
            return
    await rebuild_for_pull_request(gh, deps, rerun)


async def rebuild_for_pull_request(gh: GitHubAPI, deps: Deps, rerun: Rerun) -> None:
    pr = await pulls.with_head(gh, rerun.repo, rerun.sha, rerun.installation, list(rerun.pull_numbers))
    if pr is None:
        log.info("re-run of a build that is neither a branch's nor an open PR's; nothing to do",
                 extra={"repo": rerun.repo, "sha": rerun.sha, "image": rerun.image})
        return
    if not await pulls.may_run(deps, pr):
        log.info("re-run of a fork PR's build without a grant for its head", extra={"repo": rerun.repo, "pr": pr.number})
        return
    cfg = await checks.load_config(gh, rerun.repo, ref=pr.base_sha, sha=pr.head_sha)
    if cfg is not None and cfg.image(rerun.image) is not None:
        await builds.start_for_pr(gh, deps, cfg, pr, (rerun.image,), rerun.attempt, reuse_builds=False)


def suite_builds(latest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the bot's latest check runs on a commit, the build ones: the failed ones, or all when none failed."""
    ours = [run for run in latest if image_of(str(run.get("name", ""))) is not None]
    failed = [run for run in ours if run.get("conclusion") in NOT_PASSED]
    return failed or ours


def payload_rerun(data: dict[str, Any], sha: str, image: str, head_branch: str | None,
                  pull_requests: list[dict[str, Any]] | None, attempt: str) -> Rerun:
    return Rerun(repo=data["repository"]["full_name"], sha=sha, image=image,
                 installation=int(data["installation"]["id"]),
                 default_branch=data["repository"].get("default_branch") or "main", head_branch=head_branch or "",
                 pull_numbers=tuple(int(p["number"]) for p in pull_requests or []), attempt=attempt)
