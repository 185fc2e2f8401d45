"""One lifecycle for every kind of work the bot runs as Kubernetes Jobs.

A kind of work declares itself as a `Kind`: its `flops.dev/kind` label value and the reporter the
tracker calls once such a Job finished. Everything else is shared and reads only labels and
annotations (Kubernetes is the source of truth, so a restarted bot finds the same work):

- `unreported` / `running`: a repository's Jobs of a kind that are not reported yet (and, for
  `running`, not finished), optionally of one PR (a label selector) or one commit;
- `cancel`: marked reported first (the tracker must not report it), its check `cancelled` with
  the reason, the Job deleted; `cancel_all` / `cancel_for_pr` do that for many.

A new kind (test Jobs, RayJobs) adds a `Kind` and its Job spec; it writes no list, filter or
cancel of its own. A regression run may be a KubeRay RayJob (`regression.ray`): the same labels and
annotations, so everything here lists and cancels both (deleting a RayJob deletes its Ray cluster).
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.flows.deps import Deps
from bot.platform import checks

# The kinds whose work may run as a RayJob instead of a Job: their lists read both APIs.
RAY_KINDS = (jobs.REGRESSION,)
CLAIM_ATTEMPTS = 5  # optimistic updates of a Job that keeps changing before a claim gives up (the re-list retries)

# A reporter turns one finished Job into a GitHub report and returns the conclusion it posted.
Reporter = Callable[[dict[str, Any], jobs.Outcome, Deps], Awaitable[str]]
# Under Kueue: what a kind does once Kueue admitted one of its Jobs (federated: start the clients).
Admitted = Callable[[dict[str, Any], Deps], Awaitable[None]]
# Under Kueue, at the Job's `flops.dev/admission-timeout`: which part still waits ("" when all run).
Waiting = Callable[[dict[str, Any], Deps], Awaitable[str]]
# After a Job was deleted before it was reported (its check closed as `cancelled`): what moves on without
# its result (a bisection takes its next step).
Gone = Callable[[dict[str, Any], Deps], Awaitable[None]]
# After each full listing of the Jobs (a start, a new Lease holder, the end of a watch window): what a kind
# checks that no watch event may have told it (a bisection whose run was deleted while no bot ran).
Resynced = Callable[[Deps], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    """A kind of work: the `flops.dev/kind` label of its Jobs and what reports a finished one;
    optionally what follows its admission by Kueue and what of it still waits for one, and what
    follows the deletion of one of its Jobs before it was reported, or each full listing."""

    name: str
    report: Reporter
    admitted: Admitted | None = None
    waiting: Waiting | None = None
    gone: Gone | None = None
    resynced: Resynced | None = None


async def unreported(deps: Deps, kind: str, *, repo: str, pr: int | None = None,
                     sha: str | None = None) -> list[dict[str, Any]]:
    """`repo`'s Jobs of `kind` without a report yet (running or finished), of one PR or commit."""
    selector = jobs.unreported(kind, *([f"{jobs.PR_LABEL}={pr}"] if pr is not None else []))
    found = []
    listed = await deps.kube.list_jobs(selector)
    if kind in RAY_KINDS:
        listed += await deps.kube.list_jobs(selector, kind=jobs.RAYJOB)
    for job in listed:
        ann = jobs.annotations_of(job)
        if ann.get(jobs.REPO) == repo and jobs.REPORTED not in ann and sha in (None, ann.get(jobs.SHA)):
            found.append(job)
    return found


async def running(deps: Deps, kind: str, *, repo: str, pr: int | None = None,
                  sha: str | None = None) -> list[dict[str, Any]]:
    """`repo`'s Jobs of `kind` that are neither finished nor reported (nor cancelled)."""
    return [job for job in await unreported(deps, kind, repo=repo, pr=pr, sha=sha) if not jobs.outcome(job).finished]


async def runs_already(deps: Deps, kind: str, src: jobs.Source, annotation: str, value: str) -> bool:
    """Does a Job of `kind` run for `src`'s commit, for the same PR (or, outside PRs, the same branch), with
    `annotation` = `value` (the test, the image)? Whatever its attempt: a second `/test` or `/build`."""
    for job in await running(deps, kind, repo=src.repo, sha=src.sha):
        ann = jobs.annotations_of(job)
        scope = ann.get(jobs.PR) == str(src.pr) if src.pr is not None else \
            jobs.PR not in ann and ann.get(jobs.REF, "") == src.ref
        if scope and ann.get(annotation) == value:
            return True
    return False


async def cancel(gh: GitHubAPI, deps: Deps, job: dict[str, Any], why: str) -> bool:
    """Mark reported first (the tracker must not report it), complete the check, delete the Job. The mark is
    an update at the resourceVersion read, so of two replicas cancelling one Job (or cancelling one the tracker
    is reporting) only one closes its check; False when someone else got there first, or the Job is gone."""
    name, ann, api = jobs.name_of(job), jobs.annotations_of(job), jobs.api_kind(job)
    current: dict[str, Any] | None = job
    for _ in range(CLAIM_ATTEMPTS):
        if current is None or jobs.REPORTED in jobs.annotations_of(current) \
                or jobs.reporting_holder(current, time.time(), deps.settings.lease.duration) is not None:
            return False  # reported, or being reported (a claim whose holder died is stale: cancelled over it)
        marked = await deps.kube.claim_job(name, str(current["metadata"]["resourceVersion"]),
                                           {jobs.REPORTED: "cancelled"}, labels=jobs.REPORTED_LABEL, kind=api)
        if marked is not None:
            break
        current = await deps.kube.get_job(name, api)  # changed since listed: look again
    else:
        return False
    if ann.get(jobs.CHECK_RUN):
        await checks.complete(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], "cancelled", title="Cancelled", summary=why)
    await deps.kube.delete_job(name, api)
    return True


async def cancel_if_head_moved(gh: GitHubAPI, deps: Deps, src: jobs.Source, job: dict[str, Any]) -> bool:
    """Looked at after a PR run's Job exists: the PR moved on meanwhile (its synchronize, processed first by
    another replica, found no Job of ours to cancel), so this run is stale and stops itself."""
    data = await gh.getitem("/repos/" + src.repo + "/pulls/{number}", url_vars={"number": str(src.pr)})
    head = str(data["head"]["sha"])
    return head != src.sha and await cancel(gh, deps, job, f"Cancelled: the pull request moved to {head[:7]}.")


async def cancel_all(gh: GitHubAPI, deps: Deps, found: Iterable[dict[str, Any]], why: str) -> int:
    """Cancel each Job of `found`; how many."""
    count = 0
    for job in found:
        count += await cancel(gh, deps, job, why)
    return count


async def cancel_for_pr(gh: GitHubAPI, deps: Deps, repo: str, number: int, why: str, *, kinds: tuple[str, ...],
                        keep_sha: str | None = None) -> int:
    """Stop the PR's unfinished Jobs of `kinds` (except those for `keep_sha`); checks -> cancelled."""
    count = 0
    for kind in kinds:
        found = await running(deps, kind, repo=repo, pr=number)
        kept = [j for j in found if not (keep_sha and jobs.annotations_of(j).get(jobs.SHA) == keep_sha)]
        count += await cancel_all(gh, deps, kept, why)
    return count
