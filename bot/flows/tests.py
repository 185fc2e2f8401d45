"""The `tests:` stage: each entry's command on every pull-request head, configured-branch push and
merge group, reported as `flops/test: <name>` with its JUnit results.

- Starting: `start` launches one test of one commit (check first, its id on the Job; a Job of the
  same name means it was handled). `for_pull_request` runs a PR head's tests (a fork's only with a
  grant for that sha: `pulls.may_run`), `for_push` a configured branch's, `for_merge_group` a
  group's once `merge_queue.refusal` lets it; `paths` skips a test no changed file matches
  (`skipped`, which branch protection counts as passing).
- A test in an `images` entry waits for that commit's build (`images_for_tests`); `after_build`
  starts it in the built image.
- Reporting is `bot.flows.results` (the tracker's reporter for `flops.dev/kind: test`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import timedelta
from typing import Any

from gidgethub.abc import GitHubAPI
from kubernetes.client import ApiException

from bot.core import jobs
from bot.core.config import RepoConfig, TestConfig
from bot.core.records import BuildRecord
from bot.core.text import duration, escape, shown
from bot.flows import builds, claims, images_for_tests, lifecycle, merge_queue, pulls, regression, reruns
from bot.flows import kueue as queueing
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)

PREFIX = jobs.check_name("")
UPLOAD_TTL = timedelta(hours=1)  # beyond the test's own timeout


def test_of(check_name: str) -> str | None:
    """The test a `flops/test: <name>` check reports; None for other checks."""
    return check_name[len(PREFIX):] if check_name.startswith(PREFIX) else None


def workload(test: TestConfig) -> jobs.Workload:
    return jobs.Workload(image=test.image, command=tuple(test.command), resources=test.resources,
                         node_selector=dict(test.node_selector), tolerations=tuple(test.tolerations),
                         volumes=tuple(test.volumes), env=dict(test.env))


async def start(gh: GitHubAPI, deps: Deps, test: TestConfig, src: jobs.Source, *, trigger: str, base: str = "",
                attempt: str = "", label: str = "", pr: pulls.PullRef | None = None,
                cfg: RepoConfig | None = None) -> str | None:
    """Launch `test` on `src.sha`; None when its Job exists already (a redelivery), the test runs for
    this commit already (`/test` twice), or it waits for its image (`images_for_tests`). Started under
    the claim on the commit's test (`claims`: of two replicas one starts it). `base`: the branch whose
    latest run marks failures "also failing on <base>"."""
    async with claims.of_source(deps, src, f"test:{test.name}"):
        if await lifecycle.runs_already(deps, jobs.TEST, src, jobs.TEST_NAME, test.name):
            return None
        return await _start(gh, deps, test, src, trigger=trigger, base=base, attempt=attempt, label=label, pr=pr,
                            cfg=cfg)


async def _start(gh: GitHubAPI, deps: Deps, test: TestConfig, src: jobs.Source, *, trigger: str, base: str,
                 attempt: str, label: str, pr: pulls.PullRef | None, cfg: RepoConfig | None) -> str | None:
    name = jobs.name_of_test(src, test.name, attempt, label)
    if await deps.kube.get_job(name) is not None:
        return None
    if test.build:
        pr_registry = cfg.pr_registry if cfg is not None else None
        ref = await images_for_tests.built_image(gh, deps, test, src, name, pr=pr, pr_registry=pr_registry, start={
            "trigger": trigger, "base": base, "attempt": attempt, "label": label})
        if ref is None:
            if pr is not None and cfg is not None and pr_registry is not None:
                await images_for_tests.start_build(gh, deps, cfg, pr, test.image, attempt)
            return None
        test = replace(test, image=ref, build=False)
    url, dropped = await regression.source_url(deps, src.installation_id, src.repo, src.sha)
    prefix = jobs.results_prefix(src.repo, name)
    upload = await deps.artifacts.runs.presigned_post(prefix, timedelta(seconds=test.timeout + jobs.STOP_GRACE)
                                                      + UPLOAD_TTL, jobs.UPLOAD_LIMIT)
    body = jobs.job_of_test(src, jobs.cluster_from(deps.settings), workload(test), test=test.name, source_url=url,
                            timeout=test.timeout, trigger=trigger, upload=upload, attempt=attempt, label=label)
    ann = body["metadata"]["annotations"]
    ann.update(checks.dropped_annotation(dropped))
    if base:
        ann[jobs.DEFAULT_BRANCH] = base
    await deps.artifacts.runs.delete_prefix(prefix)  # a deleted Job of the same name left its results
    queue = await queueing.queue_for(gh, deps, src.repo, jobs.TEST)  # the default branch's: a PR cannot pick one
    ann[jobs.CHECK_RUN] = str(await _check_for(gh, body, src, test, trigger, checks.dropped_note(ann), queue,
                                               checks.run_page(deps.settings.public_url, name)))
    try:
        created = await deps.kube.create_job(body)
    except ApiException as exc:
        await checks.complete(gh, src.repo, ann[jobs.CHECK_RUN], "failure", title="Test Job not created",
                              summary=f"Kubernetes refused Job `{name}` (HTTP {exc.status}: {escape(exc.reason)}). "
                                      f"Check the bot's RBAC and the namespace's quota, then comment `/test "
                                      f"{test.name}`.")
        raise
    log.info("test started", extra={"repo": src.repo, "sha": src.sha, "job": name, "test": test.name,
                                    "trigger": trigger})
    if created is not None and src.pr is not None:
        await lifecycle.cancel_if_head_moved(gh, deps, src, created)
    return name


async def _check_for(gh: GitHubAPI, body: dict[str, Any], src: jobs.Source, test: TestConfig, trigger: str,
                     note: str, queue: str | None, details_url: str | None) -> int:
    """The head's `queued` check (a fork waiting for a grant) now in progress, or a new one; under a
    Kueue `queue` the Job is made suspended and its check says it waits there."""
    check, name = jobs.check_name(test.name), jobs.name_of(body)
    summary = (f"Test Job `{name}` (started by {escape(trigger)}) runs `{shown(' '.join(test.command), 300)}` in "
               f"`{shown(test.image, 200)}`; timeout {duration(test.timeout)}.{note}")
    status, title, summary = queueing.queued_check(body, queue, "Tests running", summary)
    existing = await checks.latest(gh, src.repo, src.sha, check)
    if existing and existing["status"] == "queued":
        await checks.update(gh, src.repo, existing["id"], status=status, external_id=name, title=title,
                            summary=summary, details_url=details_url)
        return int(existing["id"])
    return await checks.create(gh, src.repo, src.sha, check, external_id=name, title=title, summary=summary,
                               status=status, details_url=details_url)


async def skip(gh: GitHubAPI, repo: str, sha: str, test: TestConfig, what: str) -> None:
    patterns = ", ".join(f"`{shown(p)}`" for p in test.paths)
    await checks.post_completed(gh, repo, sha, jobs.check_name(test.name), "skipped", title="Skipped: no matching change",
                                summary=f"No file changed by {what} matches `paths` of test `{test.name}` "
                                        f"({patterns}), so it did not run.")


def selected(cfg: RepoConfig, event: str, names: Iterable[str] = ()) -> list[TestConfig]:
    wanted = set(names)
    return [t for t in cfg.tests if (t.name in wanted if wanted else event in t.on)]


async def pr_changes(gh: GitHubAPI, pr: pulls.PullRef) -> list[str] | None:
    """The files the PR changes (merge-base to head); None when GitHub cannot list them all."""
    data = await gh.getitem("/repos/" + pr.repo + "/compare/{spec}", url_vars={"spec": f"{pr.base_sha}...{pr.head_sha}"})
    listed = data.get("files") or []
    if len(listed) >= 300:
        return None
    return sorted({f["filename"] for f in listed} | {f["previous_filename"] for f in listed if f.get("previous_filename")})


async def for_pull_request(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, pr: pulls.PullRef, *, trigger: str,
                           names: Iterable[str] = (), attempt: str = "", delivery_id: str = "") -> list[str]:
    """Run the PR head's tests (`names`, else every test `on: pull_request`); the started Jobs.
    A fork's head without a grant gets `queued` checks saying what is needed."""
    tests = selected(cfg, "pull_request", names)
    if not tests:
        return []
    if not await pulls.may_run(deps, pr):
        for test in tests:
            if await checks.latest(gh, pr.repo, pr.head_sha, jobs.check_name(test.name)) is None:
                await checks.create(gh, pr.repo, pr.head_sha, jobs.check_name(test.name), status="queued",
                                    title="Waiting for a maintainer", summary=f"Not run yet: {pulls.fork_notice(pr)}")
        return []
    changed = None if names else await pr_changes(gh, pr)
    src = regression.pr_source(pr, delivery_id)
    started = []
    for test in tests:
        if not test.matches(changed):
            await skip(gh, pr.repo, pr.head_sha, test, f"pull request #{pr.number}")
        elif (name := await start(gh, deps, test, src, trigger=trigger, base=pr.base_ref, attempt=attempt, pr=pr,
                                  cfg=cfg)):
            started.append(name)
    return started


async def for_push(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, src: jobs.Source, changed: list[str] | None) -> None:
    """A push to a configured branch: its tests, recorded as that branch's latest run."""
    for test in selected(cfg, "push"):
        if not test.matches(changed):
            await skip(gh, src.repo, src.sha, test, f"the push to `{src.ref}`")
        else:
            await start(gh, deps, test, src, trigger="push", label="push", cfg=cfg)


async def for_merge_group(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, src: jobs.Source,
                          why: merge_queue.Refusal | None) -> None:
    """A merge group's tests, when every PR in it may run (`why` is None: `merge_queue.refusal`);
    otherwise each check fails saying why."""
    for test in selected(cfg, "pull_request"):
        if why is not None:
            await checks.post_completed(gh, src.repo, src.sha, jobs.check_name(test.name), "failure", title=why.title,
                                        summary=why.summary)
        else:
            await start(gh, deps, test, replace(src, ref=""), trigger="merge queue", label="queue",
                        base=src.ref.removeprefix("refs/heads/"))


async def cancel_for_commit(gh: GitHubAPI, deps: Deps, repo: str, sha: str, why: str) -> int:
    """Stop the unfinished non-PR test Jobs of `sha` (a merge group's that left the queue)."""
    found = await lifecycle.running(deps, jobs.TEST, repo=repo, sha=sha)
    return await lifecycle.cancel_all(gh, deps, [j for j in found if jobs.PR not in jobs.annotations_of(j)], why)


async def rerun(gh: GitHubAPI, deps: Deps, data: dict[str, Any], run: dict[str, Any], test: str, attempt: str) -> bool:
    """The Re-run button of `flops/test: <name>`: that test of that commit again, as a PR head's
    (config from the base branch, a fork only with a grant) or a configured branch's push."""
    repo, sha, installation = data["repository"]["full_name"], run["head_sha"], int(data["installation"]["id"])
    numbers = [int(p["number"]) for p in run.get("pull_requests") or []]
    pr = await pulls.with_head(gh, repo, sha, installation, numbers)
    if pr is not None:
        cfg = await checks.load_config(gh, repo, ref=pr.base_sha, sha=pr.head_sha)
        if cfg is None or cfg.test(test) is None:
            return False
        return bool(await for_pull_request(gh, deps, cfg, pr, trigger="Re-run", names=(test,), attempt=attempt))
    branch = (run.get("check_suite") or {}).get("head_branch") or ""
    default = data["repository"].get("default_branch") or "main"
    if not branch or not await builds.on_branch(gh, repo, branch, sha):
        return False
    cfg = await builds.trusted_config(gh, repo, default)
    found = cfg.test(test) if cfg is not None and builds.builds_branch(cfg, branch, default) else None
    if found is None:
        return False
    src = jobs.Source(repo, sha, installation, ref=branch)
    return await start(gh, deps, found, src, trigger="Re-run", attempt=attempt, label="push", cfg=cfg) is not None


async def after_build(gh: GitHubAPI, deps: Deps, record: BuildRecord) -> None:
    """After-build hook: the tests of that commit that waited for this image start in it."""
    for key, data in await images_for_tests.waiting(deps, record.repo, record.sha, record.image):
        test, src, start_args = images_for_tests.from_json(data)
        await deps.artifacts.delete(key)
        await start(gh, deps, replace(test, image=record.reference, build=False), src, trigger=start_args["trigger"],
                    base=start_args["base"], attempt=start_args["attempt"], label=start_args["label"])


def failed_checks(latest: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of the bot's latest check runs on a commit, the `flops/test: <name>` ones that did not pass."""
    return [run for run in latest if test_of(str(run.get("name", ""))) and run.get("conclusion") in reruns.NOT_PASSED]
