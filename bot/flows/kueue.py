"""Kueue: which LocalQueue a Job goes to, and what its check run says while Kueue holds it.

Jobs and KubeRay RayJobs (a regression run with `regression.ray`) alike: both are queued by the same
label and `spec.suspend`, and Kueue's Workload of either carries `kueue.x-k8s.io/job-uid` = its uid.

`queue_for` reads the queue from the default branch's flops.yml (trusted, like `deploy`: a pull
request or a branch commit cannot pick a better queue), else FLOPS_DEFAULT_QUEUE. A queued Job is
created suspended (`jobs.kueue.enqueue`) with its check `queued`; the tracker calls `follow` on
every change of such a Job (and every few seconds while it waits), which moves the check:

- suspended, never ran: `queued`, naming the LocalQueue and Kueue's reason from the Workload
  (without permission to read Workloads: "waiting for Kueue admission");
- running (Kueue set `spec.suspend: false`): `in_progress`;
- suspended again after it ran (Kueue preempted it): `queued`, "preempted, requeued". Its Pods'
  end is no failure: only the Job's own end is reported, once.

What the check said last is kept on the Job (`flops.dev/queue-state`, `flops.dev/queue-note`), so a
restarted bot posts nothing twice. MultiKueue: a Job that ran in a worker cluster has no Pods here;
`elsewhere` says where it ran (the Workload's `status.clusterName` or admission check message).
"""
from __future__ import annotations

import json
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import config, jobs
from bot.core.jobs import kueue
from bot.core.jobs.kueue import ADMITTED, PREEMPTED, QUEUE_NOTE, QUEUE_STATE, QUEUED, RUNNING_CHECK, Admission
from bot.core.text import escape, shown
from bot.flows.deps import Deps
from bot.platform import checks, logs

log = logs.get_logger(__name__)

# The flops.yml `queue` kind of each Job kind (config.QUEUE_KINDS).
QUEUE_KIND = {jobs.BUILD: "build", jobs.REGRESSION: "regression", jobs.FEDERATED_SERVER: "federated",
              jobs.FEDERATED_CLIENT: "federated", jobs.TEST: "tests"}
WAITING = "waiting for Kueue admission"


async def queue_for(gh: GitHubAPI, deps: Deps, repo: str, kind: str,
                    trusted: config.RepoConfig | None = None) -> str | None:
    """The LocalQueue of `repo`'s Jobs of `kind` (a `QUEUE_KIND` key): the default branch's `queue`,
    else FLOPS_DEFAULT_QUEUE; None: created as today, not suspended, no Kueue needed. A caller that
    holds the default branch's config already passes it as `trusted` (no API call)."""
    default = deps.settings.default_queue
    if trusted is not None:
        return trusted.queue_for(QUEUE_KIND[kind], default)
    try:
        trusted = await checks.fetch_config(gh, repo, None)  # the default branch's head
    except config.ConfigError:
        return default  # its own pushes report the problems; the operator's default still holds
    return trusted.queue_for(QUEUE_KIND[kind], default) if trusted is not None else default


def queued_check(body: dict[str, Any], queue: str | None, title: str, summary: str) -> tuple[str, str, str]:
    """(status, title, summary) of the check run of Job `body`, which says `title` / `summary` while it runs.
    Under a `queue`: `body` is made suspended and labelled for Kueue, keeps that running text for its
    admission, and the check starts `queued`. Without one: unchanged, `in_progress`."""
    if not queue:
        return "in_progress", title, summary
    kueue.enqueue(body, queue)
    body["metadata"]["annotations"][RUNNING_CHECK] = json.dumps({"title": title, "summary": summary})
    return "queued", queued_title(queue), queued_summary(body, queue) + f"\n\n{summary}"


def queued_title(queue: str) -> str:
    return f"Queued in Kueue LocalQueue `{queue}`"


def queued_summary(job: dict[str, Any], queue: str) -> str:
    return (f"{jobs.api_kind(job)} `{shown(jobs.name_of(job), 63)}` waits in Kueue LocalQueue `{queue}` ({WAITING}); "
            f"it starts, and this check moves to in progress, when Kueue admits it. Its timeout counts from admission.")


def running_check(ann: dict[str, str]) -> tuple[str, str]:
    """The title and summary the flow gave the check for while its Job runs."""
    try:
        data = json.loads(ann.get(RUNNING_CHECK) or "{}")
        return str(data.get("title") or "Running"), str(data.get("summary") or "")
    except (ValueError, AttributeError):
        return "Running", ""


async def follow(deps: Deps, job: dict[str, Any]) -> bool:
    """Move the check of a queued, unfinished Job to what Kueue says; True when the Job runs (admitted,
    now or earlier: what its kind does on admission must be idempotent)."""
    ann, queue, name = jobs.annotations_of(job), kueue.queue_of(job) or "", jobs.name_of(job)
    if not ann.get(jobs.CHECK_RUN):
        return False  # the flow annotates the check run id next: that change brings the Job here again
    state = ann.get(QUEUE_STATE, QUEUED)
    suspended = kueue.suspended(job)
    if not suspended and state == ADMITTED:
        return True
    if not await unreported(deps, job):
        return False
    seen = kueue.admission(await deps.kube.workload_of(str(job["metadata"].get("uid", ""))))
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    if not suspended:
        where = f" and runs in cluster `{shown(seen.cluster)}` (MultiKueue)" if seen.cluster else ""
        again = " again after its preemption" if state == PREEMPTED else ""
        title, summary = running_check(ann)
        await checks.update(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], status="in_progress", title=title,
                            summary=f"Admitted by Kueue from LocalQueue `{queue}`{again}{where}; its timeout "
                                    f"counts from now.\n\n{summary}".rstrip())
        await deps.kube.annotate_job(name, {QUEUE_STATE: ADMITTED, QUEUE_NOTE: None,
                                            **({kueue.CLUSTER: seen.cluster} if seen.cluster else {})},
                                     kind=jobs.api_kind(job))
        log.info("queued job admitted", extra={"job": name, "queue": queue, "cluster": seen.cluster})
        return True
    new_state = PREEMPTED if state in (ADMITTED, PREEMPTED) else QUEUED
    if new_state == state == QUEUED and not (seen.reason or seen.evicted or ann.get(QUEUE_NOTE)):
        return False  # nothing to add to what the check said when the Job was created
    title, summary = waiting_text(job, queue, seen, preempted=new_state == PREEMPTED)
    summary = f"{summary}\n\n{running_check(ann)[1]}".rstrip()
    note = kueue.note_digest(title + summary)
    if state == new_state and ann.get(QUEUE_NOTE) == note:
        return False
    await checks.update(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], status="queued", title=title, summary=summary)
    await deps.kube.annotate_job(name, {QUEUE_STATE: new_state, QUEUE_NOTE: note}, kind=jobs.api_kind(job))
    if new_state == PREEMPTED and state != PREEMPTED:
        log.info("queued job preempted; requeued", extra={"job": name, "queue": queue})
    return False


async def unreported(deps: Deps, job: dict[str, Any]) -> bool:
    """The Job is still there and not reported: a `/cancel`, a new head or a closed PR may have completed its
    check since this change of it was seen, and a queued/in-progress update must not follow that."""
    current = await deps.kube.get_job(jobs.name_of(job), jobs.api_kind(job))
    return current is not None and jobs.REPORTED not in jobs.annotations_of(current)


def waiting_text(job: dict[str, Any], queue: str, seen: Admission, *, preempted: bool) -> tuple[str, str]:
    """(title, summary) of a Job that waits: for its first admission, or again after a preemption (a
    RayJob's Ray cluster is deleted then, KubeRay makes a new one on its next admission)."""
    reason, what, name = seen.reason or seen.evicted, jobs.api_kind(job), shown(jobs.name_of(job), 63)
    why = f"\n\n**Kueue:** {escape(reason, 500)}" if reason else ""
    if preempted:
        return (f"Preempted, requeued in Kueue LocalQueue `{queue}`",
                f"Kueue preempted {what} `{name}` and requeued it: it was suspended and its Pods stopped, "
                f"which is not a failure. It runs again, and this check moves on, when Kueue admits it again.{why}")
    return queued_title(queue), queued_summary(job, queue) + why


async def elsewhere(deps: Deps, job: dict[str, Any], pods: list[dict[str, Any]]) -> str | None:
    """For a queued Job that has no Pod in this cluster (MultiKueue ran it in a worker cluster): a note
    saying where it ran, in place of the log tail; None for every other Job."""
    if pods or kueue.queue_of(job) is None:
        return None
    seen = kueue.admission(await deps.kube.workload_of(str(job["metadata"].get("uid", ""))))
    if seen.cluster is None and jobs.api_kind(job) == jobs.RAYJOB:
        return None  # its Ray cluster is gone (its TTL) or never came up: nothing says it ran elsewhere
    where = f"in worker cluster `{shown(seen.cluster)}`" if seen.cluster else "outside this cluster"
    return (f"{jobs.api_kind(job)} `{shown(jobs.name_of(job), 63)}` ran {where} (Kueue MultiKueue), so its Pods "
            f"and their log are there, not here: read them with `kubectl --context <that cluster> logs "
            f"job/{jobs.name_of(job)}`. Its results still come through S3.")
