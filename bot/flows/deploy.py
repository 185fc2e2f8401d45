"""GitOps deploy: bump image references in the config repo once a target's images are built.

The config repo may belong to another installation of the App than the code repo: its client
comes from `GitHubApp.for_repo`. Commits go through the Contents API with the blob sha as
precondition; a 409/422 conflict means someone committed in between, so the file is re-read, the
decision re-made and the commit retried. Per image, the file never goes backwards (a build of a
newer commit stays) unless a human asked with `/redeploy`, which the commit message then says.

`mode: pull_request`: the bump is committed to the bot's branch `flops/deploy-<target>` and a pull
request to `branch` is opened; while that pull request is open, later bumps are committed on top
of it and its title and body updated, so there is one open deploy PR per target.

Each deploy reports the check run `flops/deploy: <target>` on the source commit. A deploy that
happened (or found nothing to do) leaves a marker `deploys/<owner>/<repo>/<sha>/<target>.json` in
S3, so a build reported again (bot restart, Re-run button) never deploys that commit twice.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import gidgethub
from gidgethub.abc import GitHubAPI

from bot.core import jobs, manifests
from bot.core.config import DeployTarget, RepoConfig
from bot.core.config.consent import TAG_REF
from bot.core.records import BuildRecord
from bot.flows import builds, config_repo
from bot.flows.config_repo import DeployError
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)



@dataclass(frozen=True)
class Result:
    conclusion: str  # success | neutral | failure
    title: str
    summary: str
    url: str | None = None
    unchanged: bool = False  # the file already referenced these builds: nothing was written


@dataclass(frozen=True)
class Request:
    """What to deploy: the build records of one source commit, and who asked (for `/redeploy`)."""

    target: DeployTarget
    repo: str
    sha: str
    records: dict[str, BuildRecord]
    requested_by: str | None = None  # set for `/redeploy`: going backwards is then allowed

    @property
    def explicit(self) -> bool:
        return self.requested_by is not None


@dataclass(frozen=True)
class Plan:
    """The decision for one read of the file."""

    edit: manifests.Edit
    deployed: tuple[str, ...] = ()                                   # images whose reference changed
    kept_newer: dict[str, str] = field(default_factory=dict)         # image -> newer reference left in place
    rolled_back: dict[str, str] = field(default_factory=dict)        # image -> newer reference replaced


def marker_key(repo: str, sha: str, target: str) -> str:
    return f"deploys/{repo}/{sha}/{target}.json"


async def build_records(deps: Deps, repo: str, sha: str, images: tuple[str, ...]) -> dict[str, BuildRecord] | None:
    """The successful build records of `images` at `sha`, or None while one is missing."""
    records = {}
    for image in images:
        record = await builds.read_record(deps, builds.record_key(repo, sha, image))
        if record is None:
            return None
        records[image] = record
    return records


async def push_records(deps: Deps, record: BuildRecord,
                       images: tuple[str, ...]) -> tuple[dict[str, BuildRecord] | None, list[str]]:
    """The records a push deploys: this commit's builds, and for images the push does not build
    (path filters) the branch's latest build. (None while one is still building, never-built images)."""
    built = set(record.push_images)
    records: dict[str, BuildRecord] = {}
    never: list[str] = []
    for image in images:
        found = await builds.read_record(deps, builds.record_key(record.repo, record.sha, image))
        if found is None and built and image not in built and record.ref:
            found = await builds.read_record(deps, builds.latest_key(record.repo, record.ref, image))
            if found is None:
                never.append(image)
                continue
        if found is None:
            return None, never  # built by this push, not finished yet: its report deploys
        records[image] = found
    return records, never


class Deployer:
    """One per bot: serialises the deploys of each target, so the two last images of one commit
    finishing together deploy once (the S3 marker decides; the lock only orders the checks of it)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    async def after_build(self, gh: GitHubAPI, deps: Deps, record: BuildRecord) -> None:
        """After-build hook: deploy every target whose images have now all built for this commit."""
        for target in record.deploy_targets:
            if record.image not in target.images:
                continue
            key = f"{record.repo}:{target.name}"
            async with self._locks.setdefault(key, asyncio.Lock()):
                marker = marker_key(record.repo, record.sha, target.name)
                done = await deps.artifacts.get_json(marker)
                if done is not None and done.get("conclusion") != "failure":
                    log.info("deploy already done", extra={"repo": record.repo, "sha": record.sha,
                                                           "target": target.name})
                    continue
                records, never = await push_records(deps, record, target.images)
                if records is None:
                    continue  # another image of this target is still building
                if never:
                    result = await report(gh, Request(target, record.repo, record.sha, records), Result(
                        "neutral", f"{target.name}: waiting for a first build of {', '.join(never)}",
                        f"Deploy target `{target.name}` needs {', '.join(f'`{n}`' for n in target.images)}, but "
                        f"{', '.join(f'`{n}`' for n in never)} has no successful build on `{record.ref}` yet "
                        f"and this push does not build it (its `paths` did not match). Push a change it is built "
                        f"for, then every image of the target deploys."))
                else:
                    result = await deploy_and_report(gh, deps, Request(target, record.repo, record.sha, records))
                await deps.artifacts.put_json(marker, {"conclusion": result.conclusion, "title": result.title,
                                                       "url": result.url})


async def deploy_and_report(gh: GitHubAPI, deps: Deps, request: Request) -> Result:
    """Deploy, then post `flops/deploy: <target>` on the source commit with the result."""
    target, sha = request.target, request.sha
    try:
        result = await deploy(gh, deps, request)
    except DeployError as exc:
        result = Result("failure", f"Deploy to {target.name} failed", str(exc))
    except gidgethub.HTTPException as exc:
        result = Result("failure", f"Deploy to {target.name} failed", _explain(exc, target, sha))
    if result.unchanged and await checks.completed_on(gh, request.repo, sha, checks.deploy_name(target.name),
                                                      conclusions=("success", "neutral")):
        log.info("deploy already reported", extra={"repo": request.repo, "sha": sha, "target": target.name})
        return result  # done by a process that died before it kept the marker: reported once already
    return await report(gh, request, result)


async def report(gh: GitHubAPI, request: Request, result: Result) -> Result:
    """`flops/deploy: <target>` on the source commit."""
    target = request.target
    await checks.post_completed(gh, request.repo, request.sha, checks.deploy_name(target.name), result.conclusion,
                                title=result.title, summary=result.summary, details_url=result.url)
    log.info("deploy reported", extra={"repo": request.repo, "sha": request.sha, "target": target.name,
                                       "conclusion": result.conclusion})
    return result


def _explain(exc: gidgethub.HTTPException, target: DeployTarget, sha: str) -> str:
    status = int(exc.status_code)
    retry = f"then retry with `/redeploy {target.name} {sha[:7]}`"
    if status >= 500:
        return f"GitHub answered {status} while writing to `{target.repo}` ({exc}); {retry}."
    if status in (401, 403, 404):
        return (f"GitHub answered {status} for `{target.repo}` ({exc}): the App needs *Contents: read and write* "
                f"(and *Pull requests: read and write* for `mode: pull_request`) on `{target.repo}`, and "
                f"`{target.branch}` must exist; fix the App's permissions or the target in .github/flops.yml, {retry}.")
    return f"GitHub refused the change to `{target.repo}` ({status}: {exc}); {retry}."


async def config_client(deps: Deps, target: DeployTarget) -> GitHubAPI:
    """A client for the config repo's own installation (it may differ from the code repo's)."""
    try:
        return await deps.github.for_repo(target.repo)
    except gidgethub.BadRequest as exc:
        raise DeployError(
            f"flops-bot is not installed on `{target.repo}` (GitHub answered {exc.status_code} when asked for "
            f"its installation), so it cannot commit to `{target.file}`. Install the App on `{target.repo}` "
            f"(or add the repository to the installation's selected repositories) with Contents: read and write, "
            f"then run `/redeploy {target.name}` on an issue or pull request of the code repository.") from None


async def deploy(gh: GitHubAPI, deps: Deps, request: Request) -> Result:
    """Read, decide, edit, commit; on a sha conflict start over (someone committed meanwhile)."""
    target = request.target
    if target.field is not None and len(target.images) > 1:
        raise DeployError(f"deploy target `{target.name}` has `field` (one scalar) but {len(target.images)} images "
                          f"({', '.join(target.images)}): drop `field`, so each image's containers are found by "
                          f"repository, or make one target per image in .github/flops.yml.")
    cfg_gh = await config_client(deps, target)
    await require_consent(gh, cfg_gh, request)
    pull = await config_repo.open_pull(cfg_gh, target) if target.mode == "pull_request" else None
    attempts = deps.policy.attempts
    for attempt in range(1, attempts + 1):
        if target.mode == "pull_request" and pull is None:
            await config_repo.restart_branch(cfg_gh, target)
        branch = config_repo.deploy_branch(target) if target.mode == "pull_request" else target.branch
        text, blob = await config_repo.read(cfg_gh, target, branch)
        others = [(await config_repo.read(cfg_gh, target, target.branch))[0]] if branch != target.branch else []
        plan = await _plan(gh, request, text, others)
        if not plan.deployed:
            return _unchanged(request, plan, branch)
        message = commit_message(request, plan)
        try:
            commit = await config_repo.write(cfg_gh, target, branch, plan.edit.text, blob, message)
        except gidgethub.HTTPException as exc:
            if exc.status_code in (409, 422) and attempt < attempts:
                log.info("deploy conflict; re-reading", extra={"target": target.name, "attempt": attempt,
                                                               "status": exc.status_code})
                await deps.policy.pause(attempt)
                pull = await config_repo.open_pull(cfg_gh, target) if target.mode == "pull_request" else None
                continue
            raise
        url = str(commit["commit"]["html_url"])
        if target.mode == "pull_request":
            url = await config_repo.upsert_pull(cfg_gh, target, message)
        return _deployed(request, plan, branch, url)
    raise DeployError(f"`{target.file}` kept changing under us ({attempts} conflicts in a row); retry with "
                      f"`/redeploy {target.name} {request.sha[:7]}`.")


async def require_consent(gh: GitHubAPI, cfg_gh: GitHubAPI, request: Request) -> None:
    """The config repository must allow this deploy (`.github/flops-deploy.yml` on the target branch):
    every build being deployed must come from a branch or tag its `allow` entry names."""
    target = request.target
    refs = sorted({record.ref for record in request.records.values()})
    consent = await config_repo.read_consent(cfg_gh, target, request.repo, refs[0] if refs else "")
    default = ""
    for ref in refs:
        if not default and not ref.startswith(TAG_REF):
            default = str((await gh.getitem("/repos/" + request.repo))["default_branch"])
        if not consent.permits(request.repo, ref, target.file, default):
            raise config_repo.refused(target, request.repo, ref)


async def _plan(gh: GitHubAPI, request: Request, text: str, others: list[str]) -> Plan:
    """Apply every image of the target, except those the file (or `others`) has a newer build of."""
    target = request.target
    deployed: list[str] = []
    kept: dict[str, str] = {}
    rolled: dict[str, str] = {}
    changes: list[manifests.Change] = []
    for image in target.images:
        record = request.records[image]
        repository = manifests.split_image(record.destination)[0]
        try:
            current = [f.value for t in (text, *others)
                       for f in manifests.find_images(t, repository=repository, field=target.field, file=target.file)]
            newer = [value for value in current if await is_newer(gh, request.repo, value, record)]
            if newer and not request.explicit:
                kept[image] = newer[0]
                continue
            edit = manifests.set_image(text, repository=repository, reference=record.reference,
                                       field=target.field, file=target.file)
        except manifests.ManifestError as exc:
            raise DeployError(f"{exc} (deploy target `{target.name}`, `{target.repo}@{target.branch}`).") from None
        if edit.changes:
            deployed.append(image)
            if newer:
                rolled[image] = newer[0]
        text = edit.text
        changes.extend(edit.changes)
    return Plan(manifests.Edit(text=text, changes=tuple(changes)), tuple(deployed), kept, rolled)


def _unchanged(request: Request, plan: Plan, branch: str) -> Result:
    target = request.target
    where = f"`{target.file}` on `{target.repo}@{branch}`"
    if plan.kept_newer:
        kept = "\n".join(f"- `{image}`: `{ref}`" for image, ref in plan.kept_newer.items())
        return Result("neutral", f"{target.name}: a newer build is already deployed",
                      f"{where} already references builds of commits newer than {request.sha[:7]}, so flops-bot "
                      f"did not go backwards:\n{kept}\n\nTo roll back on purpose, comment "
                      f"`/redeploy {target.name} {request.sha[:7]}`.")
    return Result("neutral", f"{target.name}: nothing to change",
                  f"{where} already references the builds of {request.sha[:7]}.", unchanged=True)


def _deployed(request: Request, plan: Plan, branch: str, url: str) -> Result:
    target = request.target
    lines = "\n".join(f"- line {c.line}: `{c.old}` → `{c.new}`" for c in plan.edit.changes)
    kind = "Pull request" if target.mode == "pull_request" else "Commit"
    notes = "".join(f"\n\nKept `{image}` at the newer `{ref}`." for image, ref in plan.kept_newer.items())
    notes += "".join(f"\n\nRolled `{image}` back from `{ref}` (requested by @{request.requested_by})."
                     for image, ref in plan.rolled_back.items())
    return Result("success", f"Deployed to {target.name}",
                  f"{kind}: {url}\n\n`{target.repo}` `{target.file}` on `{branch}`:\n{lines}{notes}", url)


async def is_newer(gh: GitHubAPI, repo: str, current: str, record: BuildRecord) -> bool:
    """Does `current` name a build of a commit newer than the record's? Ancestry first, tag second."""
    _, tag, _ = manifests.split_image(current)
    parts = jobs.tag_parts(tag or "")
    if parts is None or current == record.reference:
        return False
    current_time, current_sha = parts
    if record.sha.startswith(current_sha) or record.fast_forward_of.startswith(current_sha):
        return False  # the same commit, or the branch head our push fast-forwarded from: ours is newer
    try:
        data = await gh.getitem("/repos/" + repo + "/compare/{spec}", url_vars={"spec": f"{record.sha}...{current_sha}"})
        if data["status"] in ("ahead", "behind", "identical"):
            return bool(data["status"] == "ahead")
    except gidgethub.BadRequest:
        pass  # unknown commit (another repo, force-pushed away): fall back to the sortable tag
    mine = jobs.tag_time(record.tag)
    return bool(mine and current_time > mine)


def commit_message(request: Request, plan: Plan) -> str:
    """`deploy(<target>): <image> <repo>@<sha7> -> <registry>/<image>:<tag>[, ...]`, then the details."""
    records = request.records
    images = ", ".join(f"{name} {request.repo}@{records[name].sha[:7]} -> {records[name].destination}"
                       for name in plan.deployed)
    body = [f"Source: {request.repo}@{request.sha}", *(f"Image: {records[n].reference}" for n in plan.deployed)]
    if request.explicit:
        body.append(f"Requested by @{request.requested_by} with /redeploy {request.target.name} {request.sha[:7]}.")
    if plan.rolled_back:
        body.insert(0, "Rollback: explicitly requested with /redeploy; this replaces builds of newer commits:\n"
                    + "\n".join(f"  {image}: {ref}" for image, ref in plan.rolled_back.items()))
    return f"deploy({request.target.name}): {images}\n\n" + "\n".join(body)


async def redeploy(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, repo: str, target_name: str, sha: str | None,
                   default_branch: str, *, requested_by: str) -> Result:
    """`/redeploy <target> [<sha>]`: point the target at that commit's builds, even an older one."""
    target = next((t for t in cfg.deploy if t.name == target_name), None)
    if target is None:
        known = ", ".join(f"`{t.name}`" for t in cfg.deploy) or "none configured"
        return Result("failure", "Unknown deploy target", f"`{target_name}` is not a deploy target (known: {known}).")
    if sha is None:
        return await _redeploy_latest(gh, deps, target, repo, default_branch, requested_by)
    try:
        full = str((await gh.getitem("/repos/" + repo + "/commits/{sha}", url_vars={"sha": sha}))["sha"])
    except gidgethub.BadRequest:
        return Result("failure", "Unknown commit", f"`{sha}` is not a commit of `{repo}`.")
    records = await build_records(deps, repo, full, target.images)
    if records is None or any(not r.ref for r in records.values()):
        return Result("failure", "Not built", f"`{full[:7]}` has no successful branch build of every image of "
                                              f"`{target.name}` ({', '.join(target.images)}); pull-request builds "
                                              f"(`/build`) are never deployed. Push it to a configured branch first.")
    return await deploy_and_report(gh, deps, Request(target, repo, full, records, requested_by=requested_by))


async def _redeploy_latest(gh: GitHubAPI, deps: Deps, target: DeployTarget, repo: str, branch: str,
                           requested_by: str) -> Result:
    """`/redeploy <target>`: each image's newest build of the default branch."""
    records: dict[str, BuildRecord] = {}
    for image in target.images:
        latest = await builds.read_record(deps, builds.latest_key(repo, branch, image))
        if latest is None:
            return Result("failure", "Nothing to deploy", f"No successful build of `{image}` on `{branch}` yet.")
        records[image] = latest
    newest = max(records.values(), key=lambda r: jobs.tag_time(r.tag))
    return await deploy_and_report(gh, deps, Request(target, repo, newest.sha, records,
                                                     requested_by=requested_by))
