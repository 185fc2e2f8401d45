"""Content-addressed images: a commit whose `inputs` hash has a successful build reuses its digest.

For each image with `inputs`, one trees API call per commit lists the blob ids (nothing is
downloaded); `bot.core.inputs` hashes the matching ones. A build with that hash, recorded by the
bot in its own bucket under `builds/<repo>/inputs/<ref or pr>/<registry>/<image>/<hash>.json` when it
succeeded, stands in for a new one: no Job, a `success` check "reused, inputs unchanged since
<sha7>", and a build record of this commit pointing at that digest (so deploys and `/train` take it
like a built one). Otherwise the image is built, tagged `in-<hash12>` too, and recorded on success.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core import jobs, records
from bot.core.inputs import Inputs, Unhashed, inputs_key, inputs_of
from bot.core.records import BuildRecord
from bot.flows.deps import Deps
from bot.platform import checks, logs
from bot.platform.artifacts import Artifacts

log = logs.get_logger(__name__)

INPUTS = jobs.A + "inputs"  # the sha256 of the image's inputs at the commit
INPUTS_RECORD = jobs.A + "inputs-record"  # where the build's success is recorded for later commits
NO_TREE = ("GitHub did not list the commit's tree (the trees API answered {}), so the `inputs` could not "
           "be hashed: the image is built.")


@dataclass(frozen=True)
class Decision:
    """One image of one commit: built (`request`, tagged by its inputs when hashed), or `reuse`d."""

    request: jobs.BuildRequest
    reuse: BuildRecord | None = None  # the earlier build with the same inputs, in the same registry
    note: str = ""  # said on the build's check: why the inputs were not hashed


async def decide(gh: GitHubAPI, deps: Deps, requests: list[jobs.BuildRequest]) -> list[Decision]:
    """Reuse or build, for each request. Images without `inputs`, and builds that push nowhere, build."""
    hashed = [bool(request.image.inputs) and request.push for request in requests]
    if not any(hashed):
        return [Decision(request) for request in requests]
    src = requests[0].source
    tree = await commit_tree(gh, src.repo, src.sha)
    decisions = []
    for request, content_addressed in zip(requests, hashed, strict=True):
        if not content_addressed:
            decisions.append(Decision(request))
            continue
        found = (await asyncio.to_thread(inputs_of, tree, request.image.inputs) if isinstance(tree, dict)
                 else Unhashed(NO_TREE.format(tree)))  # 100,000 entries take ~0.5 s to match: off the loop
        if isinstance(found, Unhashed):
            log.info("inputs not hashed; building",
                     extra={"repo": src.repo, "sha": src.sha, "image": request.image.name})
            decisions.append(Decision(request, note=found.reason))
            continue
        decisions.append(await _lookup(deps, request, found))
    return decisions


async def commit_tree(gh: GitHubAPI, repo: str, sha: str) -> dict[str, Any] | str:
    """The commit's recursive tree listing; the HTTP status when GitHub would not give it."""
    try:
        data: dict[str, Any] = await gh.getitem("/repos/" + repo + "/git/trees/{sha}{?recursive}",
                                                url_vars={"sha": sha, "recursive": "1"})
    except gidgethub.BadRequest as exc:  # 404, 409 (empty repository), 422
        return str(exc.status_code.value)
    return data


async def _lookup(deps: Deps, request: jobs.BuildRequest, found: Inputs) -> Decision:
    src = request.source
    key = _key(request, found)
    tagged = replace(request, also_tags=(*request.also_tags, found.tag),
                     annotations={**request.annotations, INPUTS: found.digest, INPUTS_RECORD: key})
    earlier = await find_build(deps.artifacts, key)
    if earlier is None:
        return Decision(tagged)
    log.info("inputs unchanged; reusing the build", extra={"repo": src.repo, "sha": src.sha, "image": earlier.image,
                                                           "reused_from": earlier.sha})
    return Decision(tagged, reuse=earlier)


def _key(request: jobs.BuildRequest, found: Inputs) -> str:
    src = request.source
    return inputs_key(src.repo, request.registry, request.image.name, found.digest, ref=src.ref,
                      pr=src.pr if request.pr_build else None)


async def find_build(artifacts: Artifacts, key: str) -> BuildRecord | None:
    """The build record under `key` (a commit's, or an inputs key's); None when absent or without the
    documented shape (then the image is built)."""
    data = await artifacts.get_json(key)
    if data is None:
        return None
    try:
        return BuildRecord.from_json(data)
    except records.RecordError as exc:
        log.warning("build record unreadable; treated as missing", extra={"key": key, "error": str(exc)})
        return None


async def plan(artifacts: Artifacts | None, requests: list[jobs.BuildRequest],
               tree: dict[str, Any] | None) -> tuple[list[str], list[jobs.BuildRequest]]:
    """`python -m bot plan push`: a line per content-addressed image (reused, or why it builds),
    and the requests still to build. Without `artifacts` nothing is looked up: each one builds."""
    notes, todo = [], []
    for request in requests:
        name, patterns = request.image.name, request.image.inputs
        found = inputs_of(tree, patterns) if patterns and tree is not None else None
        if not patterns or found is None:
            notes += [f"# {name}: content-addressed (`inputs`); pass --tree (the commit's trees API answer) "
                      "to hash its inputs"] if patterns else []
            todo.append(request)
            continue
        if isinstance(found, Unhashed):
            notes.append(f"# {name}: build: {found.reason}")
            todo.append(request)
            continue
        key = _key(request, found)
        earlier = await find_build(artifacts, key) if artifacts is not None else None
        if earlier is not None:
            notes.append(f"# {name}: reuse {earlier.digest} (inputs unchanged since {earlier.sha[:7]})")
            continue
        where = "no build with these inputs yet" if artifacts is not None else \
            "MINIO_ENDPOINT is not set, so the bot's build records were not looked at"
        notes.append(f"# {name}: build, tagged {found.tag} ({where})")
        todo.append(replace(request, also_tags=(*request.also_tags, found.tag)))
    return notes, todo


async def remember(deps: Deps, annotations: dict[str, str], record: BuildRecord) -> None:
    """After a content-addressed image built: record it under its inputs hash for later commits."""
    key = annotations.get(INPUTS_RECORD)
    if key:
        await deps.artifacts.put_json(key, record.to_json())


def reused_title(earlier: BuildRecord) -> str:
    return f"reused, inputs unchanged since {earlier.sha[:7]}"


async def report_reused(gh: GitHubAPI, record: BuildRecord, earlier: BuildRecord) -> None:
    """The `flops/build: <image>` check of a reused image: success, naming the commit that built it."""
    await checks.post_completed(
        gh, record.repo, record.sha, checks.build_name(record.image), "success", title=reused_title(earlier),
        summary=f"{reused_title(earlier)}: no file matching `inputs` changed since `{earlier.sha}`, so its build "
                f"is reused and no Job ran.\n\n**Image:** `{earlier.destination}`\n**Digest:** `{earlier.digest}`\n"
                f"**Inputs:** `in-{record.inputs[:12]}` (sha256 `{record.inputs}`)\n\n"
                f"Pull by digest: `{record.reference}`\n\nA change to a file matching `inputs` builds the image "
                "again; the Re-run button builds it now.")
