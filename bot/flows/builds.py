"""Image builds: which images a push builds, the Kaniko Jobs, supersede, re-run, the report.

A build's record (`builds/<owner>/<repo>/<sha>/<image>.json` in S3) outlives its Job: deploys
and `/redeploy` read it.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, replace
from typing import Any

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core import jobs, records
from bot.core.config import ConfigError, ImageConfig, RepoConfig
from bot.core.config.paths import tag_matches
from bot.core.records import BuildRecord
from bot.core.text import code_block, plain
from bot.flows import claims, lifecycle, reuse
from bot.flows import kueue as queueing
from bot.flows.deps import Deps
from bot.flows.diagnosis import diagnose, log_tail, termination_message
from bot.platform import checks, logs
from bot.platform.sources import ensure_source, presigned_source

log = logs.get_logger(__name__)

ZERO_SHA = "0" * 40
# The images one push builds (comma-separated), so a deploy knows which other images of a target
# this commit will never build (path filters) and takes their latest build of the branch instead.
PUSH_IMAGES = jobs.A + "push-images"
DIGEST = re.compile("sha256:[0-9a-f]{64}")  # what Kaniko writes; anything else is not a digest
# The branch head this push moved on from, when it was a fast-forward: a deploy that finds a build
# of that commit in the manifest knows ours is newer without asking the compare API.
PARENT = jobs.A + "fast-forward-of"
PAYLOAD_COMMIT_LIMIT = 20  # GitHub lists at most 20 commits in a push payload


@dataclass(frozen=True)
class Push:
    """The parts of a push payload the build flow uses."""

    repo: str
    installation_id: int
    ref: str
    before: str
    sha: str
    commit_time: str
    default_branch: str
    commits: tuple[dict[str, Any], ...]
    delivery_id: str = ""
    forced: bool = False

    @classmethod
    def from_payload(cls, data: dict[str, Any], delivery_id: str = "") -> Push:
        head = data.get("head_commit") or {}
        return cls(repo=data["repository"]["full_name"], installation_id=int(data["installation"]["id"]),
                   ref=data["ref"], before=data.get("before") or ZERO_SHA, sha=data["after"],
                   commit_time=head.get("timestamp") or checks.now(),
                   default_branch=data["repository"].get("default_branch") or "main",
                   commits=tuple(data.get("commits") or ()), delivery_id=delivery_id,
                   forced=bool(data.get("forced")))

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag_name(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None


def wants_build(cfg: RepoConfig, push: Push) -> bool:
    """A configured branch (default: the default branch), or a tag matching `tags`."""
    if push.branch is not None:
        return builds_branch(cfg, push.branch, push.default_branch)
    return push.tag_name is not None and tag_matches(push.tag_name, cfg.tags)


async def trusted_config(gh: GitHubAPI, repo: str, default_branch: str) -> RepoConfig | None:
    """The default branch's flops.yml at its head: what decides which branches and tags build and
    where their images deploy. None when absent or invalid (its own pushes report why)."""
    try:
        return await checks.fetch_config(gh, repo, default_branch)
    except ConfigError as error:
        log.warning("the default branch's flops.yml is invalid; nothing outside it builds",
                    extra={"repo": repo, "branch": default_branch, "problems": len(error.problems)})
        return None


async def config_for_build(gh: GitHubAPI, trusted: RepoConfig, repo: str, sha: str) -> RepoConfig | None:
    """`trusted` with the build-shaping keys of `sha`'s own flops.yml (`RepoConfig.shaped_by`);
    None when that file is invalid (its failing `flops/config` check says why)."""
    try:
        return trusted.shaped_by(await checks.fetch_config(gh, repo, sha))
    except ConfigError as error:
        await checks.report_invalid_config(gh, repo, sha, sha, error)
        return None


def builds_branch(cfg: RepoConfig, branch: str, default_branch: str) -> bool:
    """Do pushes to `branch` build? The configured `branches`, else the default branch alone."""
    return branch in (cfg.branches or (default_branch,))


async def on_branch(gh: GitHubAPI, repo: str, branch: str, sha: str) -> bool:
    """Is `sha` the head of `branch` of `repo`, or in its history? (A fork's branch of the same
    name is not: its commits are not on ours.)"""
    try:
        data = await gh.getitem("/repos/" + repo + "/compare/{spec}", url_vars={"spec": f"{branch}...{sha}"})
    except gidgethub.BadRequest:
        return False
    return data.get("status") in ("identical", "behind")


def fast_forward_of(push: Push) -> dict[str, str]:
    """{PARENT: <previous head>} for a push that only added commits to its branch, else {}."""
    return {} if push.forced or push.before == ZERO_SHA or push.branch is None else {PARENT: push.before}


def changed_in_payload(push: Push) -> list[str] | None:
    """Files the push changed, or None when the payload cannot tell (truncated, new branch)."""
    if push.before == ZERO_SHA or not push.commits or len(push.commits) >= PAYLOAD_COMMIT_LIMIT:
        return None
    files: set[str] = set()
    for commit in push.commits:
        for key in ("added", "modified", "removed"):
            files.update(commit.get(key) or ())
    return sorted(files)


async def changed_files(gh: GitHubAPI, push: Push) -> list[str] | None:
    """The payload's file list, else the compare API's; None (build everything) if unknowable."""
    files = changed_in_payload(push)
    if files is not None or push.before == ZERO_SHA:
        return files
    data = await gh.getitem("/repos/" + push.repo + "/compare/{spec}", url_vars={"spec": f"{push.before}...{push.sha}"})
    listed = data.get("files") or []
    if len(listed) >= 300 or data.get("status") not in ("ahead", "identical"):
        return None  # GitHub caps the list at 300 files; a force-push may have rewritten history
    return sorted({f["filename"] for f in listed} | {f["previous_filename"] for f in listed if f.get("previous_filename")})


async def start_for_push(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, push: Push) -> list[str]:
    """Upload the source, start one Kaniko Job per image, then supersede: the older side of each pair of
    pushes to the branch is cancelled. After this push's Jobs exist, so that of two pushes processed at once
    (by two replicas) the one that looks second sees the other's Jobs, whichever order they came in."""
    images = jobs.images_to_build(cfg, await changed_files(gh, push))
    tag = jobs.image_tag(push.branch or push.tag_name or "ref", push.commit_time, push.sha)
    if not images:
        if push.branch:
            await supersede(gh, deps, push, tag)
        return []
    packed = await ensure_source(deps.github, deps.artifacts, push.installation_id, push.repo, push.sha)
    source = jobs.Source(push.repo, push.sha, push.installation_id, ref=push.branch or push.ref,
                         delivery_id=push.delivery_id)
    queue = await queueing.queue_for(gh, deps, push.repo, jobs.BUILD, trusted=cfg)  # a push's config is trusted
    started = await build_or_reuse(gh, deps, [
        jobs.BuildRequest(source, image, cfg.registry, tag, push.commit_time,
                          annotations={jobs.DEPLOY_TARGETS: targets_annotation(cfg),
                                       PUSH_IMAGES: ",".join(i.name for i in images), **fast_forward_of(push),
                                       **checks.dropped_annotation(packed.dropped)})
        for image in images], queue=queue)
    if push.branch:
        await supersede(gh, deps, push, tag)
    return started


async def start_for_pr(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, pr: Any, names: tuple[str, ...],
                       delivery_id: str = "", *, reuse_builds: bool = True) -> list[str]:
    """`/build`: images of the PR head, tagged `pr-<n>-<sha7>`, never deployed. They push to the base
    branch's `pr_registry` with the PR registry Secret, never with the branch images' credential;
    without a `pr_registry` they are built (the Dockerfile checked) and pushed nowhere."""
    images = [cfg.image(n) for n in names] if names else list(cfg.images)
    packed = await ensure_source(deps.github, deps.artifacts, pr.installation_id, pr.repo, pr.head_sha)
    source = jobs.Source(pr.repo, pr.head_sha, pr.installation_id, pr=pr.number, delivery_id=delivery_id)
    queue = await queueing.queue_for(gh, deps, pr.repo, jobs.BUILD)  # the base branch's config may not be trusted
    return await build_or_reuse(gh, deps, [
        jobs.BuildRequest(source, image, cfg.pr_registry or cfg.registry, jobs.pr_tag(pr.number, pr.head_sha),
                          checks.now(), attempt=delivery_id, annotations=checks.dropped_annotation(packed.dropped),
                          pr_build=True, push=cfg.pr_registry is not None)
        for image in images if image is not None], reuse_builds=reuse_builds, queue=queue)


async def build_or_reuse(gh: GitHubAPI, deps: Deps, requests: list[jobs.BuildRequest], *,
                         reuse_builds: bool = True, queue: str | None = None) -> list[str]:
    """Launch each build (in Kueue's LocalQueue `queue`, if any), or reuse the earlier build of a
    content-addressed image whose inputs are unchanged (`bot.flows.reuse`; not for a Re-run, which
    builds). The images whose Job started."""
    started = []
    for decision in await reuse.decide(gh, deps, requests) if requests else []:
        if decision.reuse is not None and reuse_builds:
            await take_reused(gh, deps, decision.request, decision.reuse)
        elif await launch_build(gh, deps, decision.request, queue=queue, note=decision.note):
            started.append(decision.request.image.name)
    return started


async def take_reused(gh: GitHubAPI, deps: Deps, request: jobs.BuildRequest, earlier: BuildRecord) -> None:
    """No Job: this commit's build record points at `earlier`'s image, its check says so, and the
    after-build hooks (deploys, pending `/train` runs) run as after a build. Once per commit."""
    src = request.source
    if await read_record(deps, record_key(src.repo, src.sha, request.image.name)) is not None:
        return  # a redelivery, or built already: reported once
    ann = jobs.annotations_of(jobs.build_job(request, jobs.cluster_from(deps.settings), check=""))
    record = replace(record_from(ann, earlier.job, earlier.digest), destination=earlier.destination,
                     reused_from=earlier.sha)
    await reuse.report_reused(gh, record, earlier)
    await save_record(deps, record)
    for hook in deps.after_build:
        await hook(gh, deps, record)


async def reused_from(deps: Deps, repo: str, sha: str, image: str) -> str:
    """The commit whose build `image` of `sha` reuses (inputs unchanged); "" when built or not yet."""
    record = await read_record(deps, record_key(repo, sha, image))
    return record.reused_from if record is not None else ""


async def launch_build(gh: GitHubAPI, deps: Deps, request: jobs.BuildRequest, *, queue: str | None,
                       note: str = "") -> bool:
    """Check run first (its id goes on the Job), then the Job (suspended in Kueue's LocalQueue `queue`,
    if any), under the claim on the commit's build of that image (`claims`: of two replicas one starts
    it). A Job that exists already means this request was handled (redelivery, restart), and one of
    this commit and image running means it runs (`/build` twice): nothing is posted twice. A PR's
    build whose head moved meanwhile cancels itself."""
    src = request.source
    async with claims.of_source(deps, src, f"build:{request.image.name}"):
        if await lifecycle.runs_already(deps, jobs.BUILD, src, jobs.IMAGE, request.image.name):
            return False
        created = await _launch(gh, deps, request, queue=queue, note=note)
    if created is not None and src.pr is not None:
        await lifecycle.cancel_if_head_moved(gh, deps, src, created)
    return created is not None


async def _launch(gh: GitHubAPI, deps: Deps, request: jobs.BuildRequest, *, queue: str | None,
                  note: str) -> dict[str, Any] | None:
    """The source was uploaded by the caller (`ensure_source`); the Job gets only its presigned URL."""
    src = request.source
    if not request.source_url:
        request = dataclasses.replace(request, source_url=await presigned_source(deps.artifacts, src.repo, src.sha))
    body = jobs.build_job(request, jobs.cluster_from(deps.settings), check=checks.build_name(request.image.name))
    name = jobs.name_of(body)
    if await deps.kube.get_job(name) is not None:
        return None
    title = f"Building {request.destination}" + ("" if request.push else " (not pushed)")
    summary = (f"Kaniko Job `{name}` in namespace `{deps.settings.namespace}` is building "
               f"`{request.image.dockerfile}` (context `{request.image.context}`)." + (f"\n\n{note}" if note else ""))
    status, title, summary = queueing.queued_check(body, queue, title, summary)
    check_id = await checks.create(gh, src.repo, src.sha, checks.build_name(request.image.name), external_id=name,
                                   status=status, title=title, summary=summary,
                                   details_url=checks.run_page(deps.settings.public_url, name))
    body["metadata"]["annotations"][jobs.CHECK_RUN] = str(check_id)
    created = await deps.kube.create_job(body)
    log.info("build started", extra={"repo": src.repo, "sha": src.sha, "job": name, "image": request.image.name,
                                     "job_created": created is not None})
    return created


async def supersede(gh: GitHubAPI, deps: Deps, push: Push, tag: str) -> None:
    """Running builds of other commits on this branch: the older ones deleted, their checks `cancelled`; when
    one is newer than this push (processed first, by another replica), this push's own builds instead."""
    for job in await lifecycle.running(deps, jobs.BUILD, repo=push.repo):
        ann = jobs.annotations_of(job)
        if ann.get(jobs.REF) != push.branch or ann.get(jobs.SHA) == push.sha:
            continue
        other = ann.get(jobs.SHA, "")
        if not await on_branch(gh, push.repo, push.sha, other) and (
                await on_branch(gh, push.repo, other, push.sha)
                or jobs.tag_time(ann.get(jobs.TAG, "")) > jobs.tag_time(tag)):
            why = f"Superseded by a newer push to `{push.branch}`: {other[:7]}."
            for own in await lifecycle.running(deps, jobs.BUILD, repo=push.repo, sha=push.sha):
                if await lifecycle.cancel(gh, deps, own, why):
                    log.info("build superseded", extra={"repo": push.repo, "job": jobs.name_of(own), "by": other})
            return
        if await lifecycle.cancel(gh, deps, job, f"Superseded by a newer push to `{push.branch}`: {push.sha[:7]}."):
            log.info("build superseded", extra={"repo": push.repo, "job": jobs.name_of(job), "by": push.sha})


async def rerun(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, *, repo: str, sha: str, image_name: str,
                installation_id: int, ref: str, attempt: str) -> bool:
    """The check run's Re-run button: build that image of that commit again. `cfg` is the default
    branch's config shaped by the commit's file (`config_for_build`), so its Kueue `queue` is trusted."""
    image = cfg.image(image_name)
    if image is None:
        return False
    commit = await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha})
    when = commit["commit"]["committer"]["date"]
    packed = await ensure_source(deps.github, deps.artifacts, installation_id, repo, sha)
    tag = jobs.image_tag(ref or "rerun", when, sha)
    source = jobs.Source(repo, sha, installation_id, ref=ref)
    request = jobs.BuildRequest(source, image, cfg.registry, tag, when, attempt=attempt,
                                annotations={jobs.DEPLOY_TARGETS: targets_annotation(cfg),
                                             **checks.dropped_annotation(packed.dropped)})
    return bool(await build_or_reuse(gh, deps, [request], reuse_builds=False,
                                     queue=await queueing.queue_for(gh, deps, repo, jobs.BUILD, trusted=cfg)))


# --- report -----------------------------------------------------------------------------------------

def record_key(repo: str, sha: str, image: str) -> str:
    """Where a successful build's record lives (read by deploys and /redeploy)."""
    return f"builds/{repo}/{sha}/{image}.json"


def latest_key(repo: str, branch: str, image: str) -> str:
    """The newest successful build of `image` on `branch` (by the sortable tag)."""
    return f"builds/{repo}/latest/{branch}/{image}.json"


def targets_annotation(cfg: RepoConfig) -> str:
    """The deploy targets, carried on each build Job so the report needs no second config read."""
    return records.targets_json(cfg.deploy)


async def read_record(deps: Deps, key: str) -> BuildRecord | None:
    """A build record from the bot's bucket; None when absent or without the documented shape."""
    return await reuse.find_build(deps.artifacts, key)


async def report_build(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """Tracker reporter for `flops.dev/kind: build`."""
    name, ann = jobs.name_of(job), jobs.annotations_of(job)
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    pods = await deps.kube.job_pods(name)
    digest = termination_message(pods, "kaniko") if result.succeeded else None
    if result.succeeded and ann.get(jobs.PUSHED) == "false":
        await checks.finish(gh, ann, "success", title="Built, not pushed", summary=NOT_PUSHED.format(ann[jobs.IMAGE]))
        return "success"
    if result.succeeded and digest and DIGEST.fullmatch(digest):
        record = record_from(ann, name, digest)
        await save_record(deps, record)
        await reuse.remember(deps, ann, record)
        await checks.finish(gh, ann, "success", title=f"Built {ann[jobs.DESTINATION]}",
                      summary=f"**Image:** `{ann[jobs.DESTINATION]}`\n**Digest:** `{digest}`\n\n"
                              f"Pull by digest: `{record.reference}`")
        for hook in deps.after_build:
            await hook(gh, deps, record)
        return "success"
    if result.succeeded:
        why = "Kaniko finished but wrote no image digest to its termination message"
        text = await log_tail(deps, pods[-1]["metadata"]["name"] if pods else None, "kaniko", pods)
    else:
        diagnosis = diagnose(result, pods)
        why = diagnosis.reason
        text = await log_tail(deps, diagnosis.pod, diagnosis.container, pods)
    hint = _hint(why, deps)
    await checks.finish(gh, ann, "failure", title=f"Build failed: {plain(why)}"[:200],
                  summary=f"Building `{ann[jobs.DESTINATION]}` failed.\n\n**Reason:** {why}\n\n{hint}".rstrip(),
                  text=f"Last lines of the build log (Job `{name}`):\n\n{code_block(text)}" if text else
                  await queueing.elsewhere(deps, job, pods))
    return "failure"


def record_from(ann: dict[str, str], job: str, digest: str) -> BuildRecord:
    """The build record of a build Job's annotations, for the image `digest` that Job built."""
    return BuildRecord(
        repo=ann[jobs.REPO], sha=ann[jobs.SHA], image=ann[jobs.IMAGE], ref=ann.get(jobs.REF, ""), tag=ann[jobs.TAG],
        destination=ann[jobs.DESTINATION], digest=digest, job=job, built_at=checks.now(),
        deploy_targets=records.targets_from_json(ann.get(jobs.DEPLOY_TARGETS, "[]")),
        push_images=tuple(n for n in ann.get(PUSH_IMAGES, "").split(",") if n), fast_forward_of=ann.get(PARENT, ""),
        inputs=ann.get(reuse.INPUTS, ""))


NOT_PUSHED = ("Kaniko built `{}` from this pull request: the Dockerfile builds. The image was not pushed anywhere, "
              "because the base branch's `.github/flops.yml` sets no `pr_registry` (pull-request builds never "
              "push with the branch images' credential). Set `pr_registry` to a registry of its own, with its "
              "push credential in the `FLOPS_PR_REGISTRY_SECRET` Secret, to keep pull-request images.")


async def save_record(deps: Deps, record: BuildRecord) -> None:
    """The build's record, and the branch's `latest` pointer when this build is the newest."""
    await deps.artifacts.put_json(record_key(record.repo, record.sha, record.image), record.to_json())
    if not record.ref:
        return
    latest = latest_key(record.repo, record.ref, record.image)
    current = await read_record(deps, latest)
    if current is None or jobs.tag_time(current.tag) <= jobs.tag_time(record.tag):
        await deps.artifacts.put_json(latest, record.to_json())


def _hint(why: str, deps: Deps) -> str:
    if "ImagePull" in why:
        return "The Kaniko image could not be pulled: check `FLOPS_KANIKO_IMAGE` and the cluster's network."
    if "UNAUTHORIZED" in why.upper() or "401" in why:
        return f"The registry refused the push: check the `{deps.settings.registry_secret}` Secret."
    if "deadline" in why:
        return "Raise `timeout` of this image in `.github/flops.yml` if the build is legitimately slow."
    return "Use the Re-run button on this check to build again."


def image_for_check(cfg: RepoConfig, check_name: str) -> ImageConfig | None:
    prefix = checks.build_name("")
    return cfg.image(check_name[len(prefix):]) if check_name.startswith(prefix) else None


KIND = lifecycle.Kind(jobs.BUILD, report_build)
