"""A test whose `image:` names an `images` entry runs in that image as built for its commit.

`built_image` answers the pull-by-digest reference when the commit's build exists (for a push
that did not rebuild the image, the branch's newest build); otherwise the test waits: a pending
request in S3 (`pending/<repo>/<sha>/tests/<job>.json`, so it survives a restart, like `/train`'s),
a `queued` check saying for what, and for a pull request the build started if none runs (pushed
to `pr_registry`, which a test in a PR image therefore needs). The after-build hook in
`bot.flows.tests` starts what waited for the image.
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.core.config import Resources, TestConfig, Volume
from bot.flows import builds, lifecycle
from bot.flows.deps import Deps
from bot.flows.pulls import PullRef
from bot.platform import checks


def pending_prefix(repo: str, sha: str) -> str:
    return f"pending/{repo}/{sha}/tests/"


def to_json(test: TestConfig, src: jobs.Source, **start: str) -> dict[str, Any]:
    return {"test": asdict(test), "source": asdict(src), "start": start}


def from_json(data: dict[str, Any]) -> tuple[TestConfig, jobs.Source, dict[str, str]]:
    raw = dict(data["test"])
    test = TestConfig(**{**raw, "command": tuple(raw["command"]), "paths": tuple(raw["paths"]),
                         "resources": Resources(**raw["resources"]), "tolerations": tuple(raw["tolerations"]),
                         "volumes": tuple(Volume(**v) for v in raw["volumes"]), "on": tuple(raw["on"])})
    return test, jobs.Source(**data["source"]), {k: str(v) for k, v in data["start"].items()}


async def building(deps: Deps, src: jobs.Source, image: str) -> bool:
    for job in await lifecycle.unreported(deps, jobs.BUILD, repo=src.repo, sha=src.sha):
        state = jobs.outcome(job)
        if jobs.annotations_of(job).get(jobs.IMAGE) == image and (not state.finished or state.succeeded):
            return True
    return False


async def built_image(gh: GitHubAPI, deps: Deps, test: TestConfig, src: jobs.Source, name: str, *,
                      pr: PullRef | None, pr_registry: str | None, start: dict[str, str]) -> str | None:
    """The reference to run `test` in; None when it waits for the build (or cannot have one: its
    check says why)."""
    record = await builds.read_record(deps, builds.record_key(src.repo, src.sha, test.image))
    if record is not None:
        return record.reference
    check = jobs.check_name(test.name)
    running = await building(deps, src, test.image)
    if not running and pr is None and src.ref:  # this push did not rebuild it: the branch's newest build
        latest = await builds.read_record(deps, builds.latest_key(src.repo, src.ref, test.image))
        if latest is not None:
            return latest.reference
    if not running and (pr is None or pr_registry is None):
        why = ("pull-request images are pushed only to `pr_registry`, which the base branch's `.github/flops.yml` "
               "does not set" if pr is not None else "no build of it exists for this commit or its branch")
        await checks.post_completed(gh, src.repo, src.sha, check, "failure", title=f"No image `{test.image}`",
                                    summary=f"Test `{test.name}` runs in `images` entry `{test.image}` built from "
                                            f"{src.sha[:7]}, and {why}.")
        return None
    await deps.artifacts.put_json(pending_prefix(src.repo, src.sha) + f"{name}.json", to_json(test, src, **start))
    if await checks.latest(gh, src.repo, src.sha, check) is None:
        await checks.create(gh, src.repo, src.sha, check, status="queued", title=f"Waiting for image `{test.image}`",
                            summary=f"Test `{test.name}` starts once `{test.image}` is built from {src.sha[:7]} "
                                    f"(`{checks.build_name(test.image)}`).")
    return None


async def start_build(gh: GitHubAPI, deps: Deps, cfg: Any, pr: PullRef, image: str, attempt: str) -> None:
    """The PR head's build of `image`, unless one runs (a test waits for it)."""
    src = jobs.Source(pr.repo, pr.head_sha, pr.installation_id, pr=pr.number)
    if not await building(deps, src, image):
        await builds.start_for_pr(gh, deps, cfg, pr, (image,), attempt)


async def waiting(deps: Deps, repo: str, sha: str, image: str) -> list[tuple[str, dict[str, Any]]]:
    """The pending requests of `sha` waiting for `image`: (key, request)."""
    found = []
    for key in await deps.artifacts.list_keys(pending_prefix(repo, sha)):
        data = await deps.artifacts.get_json(key)
        if isinstance(data, dict) and (data.get("test") or {}).get("image") == image:
            found.append((key, data))
    return found
