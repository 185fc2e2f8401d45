"""Kueue: a queued Job's shape, and what its Workload says (pure; read by bot.flows.kueue).

A Job bound for a Kueue LocalQueue is created suspended (`spec.suspend: true`) with the label
`kueue.x-k8s.io/queue-name`; Kueue admits it by setting `spec.suspend: false` and may preempt it
later by suspending it again. A KubeRay RayJob (Kueue's RayJob integration) is queued the same way:
`spec.suspend` is at the same path, and KubeRay creates no cluster while it is set. The bot records
on the Job what its check run last said (`flops.dev/queue-state`: queued / admitted / preempted), so a
restart never posts a state twice.
"""
from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.core.jobs.contract import RAYJOB, A

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job
GROUP, VERSION, WORKLOADS = "kueue.x-k8s.io", "v1beta1", "workloads"
QUEUE_STATE = A + "queue-state"  # "queued" | "admitted" | "preempted": what the check run last said
RUNNING_CHECK = A + "running-check"  # JSON {title, summary}: what the check says once Kueue admitted the Job
QUEUE_NOTE = A + "queue-note"  # a digest of the queued check's text: a new Kueue reason updates it
CLUSTER = A + "cluster"  # MultiKueue: the worker cluster the Job was dispatched to (from its Workload)
ADMISSION_TIMEOUT = A + "admission-timeout"  # seconds after creation by which the whole run must be admitted
QUEUED, ADMITTED, PREEMPTED = "queued", "admitted", "preempted"
# A RayJob's jobDeploymentStatus while it does not run: what startTime says is of an earlier run (or nothing).
NOT_STARTED = (None, "", "New", "Suspending", "Suspended")
_CLUSTER_IN_MESSAGE = re.compile(r'reservation on "([^"]+)"')


def enqueue(body: dict[str, Any], queue: str | None) -> dict[str, Any]:
    """`body` (a Job or a RayJob) bound for LocalQueue `queue`: created suspended, labelled for Kueue;
    unchanged without a queue (today's behaviour: no Kueue involved)."""
    if not queue:
        return body
    body["metadata"].setdefault("labels", {})[QUEUE_LABEL] = queue
    body["metadata"].setdefault("annotations", {})[QUEUE_STATE] = QUEUED
    body["spec"]["suspend"] = True
    return body


def queue_of(job: dict[str, Any]) -> str | None:
    return ((job.get("metadata") or {}).get("labels") or {}).get(QUEUE_LABEL) or None


def suspended(job: dict[str, Any]) -> bool:
    return bool((job.get("spec") or {}).get("suspend"))


def started_at(job: dict[str, Any]) -> str | None:
    """When the Job's current run started (`status.startTime`), None before it started. The Job controller
    clears a suspended Job's start time and sets a new one on resumption; KubeRay sets a RayJob's when it
    leaves `New` for `Initializing` (after an admission too) and keeps the old one while it is suspended."""
    status = job.get("status") or {}
    if job.get("kind") == RAYJOB and status.get("jobDeploymentStatus") in NOT_STARTED:
        return None
    return str(status["startTime"]) if status.get("startTime") else None


def placement_note(annotations: Mapping[str, str]) -> str:
    """The sentence a check run ends with when MultiKueue ran the Job in another cluster ("" otherwise)."""
    cluster = str(annotations.get(CLUSTER) or "")
    if not cluster:
        return ""
    name = re.sub(r"[^A-Za-z0-9._-]", "", cluster)[:63]
    return f"\n\nRan in worker cluster `{name}` (Kueue MultiKueue); its Pods and their logs are there."


def note_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Admission:
    """What a Workload says about its Job: Kueue's reason while it waits, where it runs."""

    reason: str = ""  # the message of QuotaReserved=False (or Evicted) while not admitted
    admitted: bool = False
    evicted: str = ""  # the message of Evicted=True
    cluster: str | None = None  # MultiKueue: the worker cluster it was dispatched to


def admission(workload: dict[str, Any] | None) -> Admission:
    """Read Kueue's conditions (QuotaReserved, Admitted, Evicted) and MultiKueue's placement."""
    if not workload:
        return Admission()
    status = workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or [] if isinstance(c, dict)}

    def true(kind: str) -> bool:
        return (conditions.get(kind) or {}).get("status") == "True"

    evicted = str((conditions.get("Evicted") or {}).get("message") or "") if true("Evicted") else ""
    reserved = conditions.get("QuotaReserved") or {}
    reason = "" if true("QuotaReserved") else str(reserved.get("message") or "")
    cluster = status.get("clusterName") or None
    for check in status.get("admissionChecks") or []:
        found = _CLUSTER_IN_MESSAGE.search(str((check or {}).get("message") or ""))
        if cluster is None and found:
            cluster = found.group(1)
    return Admission(reason=reason, admitted=true("Admitted"), evicted=evicted,
                     cluster=str(cluster) if cluster else None)
