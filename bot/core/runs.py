"""A run as its page shows it, read from the labels, annotations and status of its Jobs and Pods (or
from the record the bot kept of it once they are gone): pure, data in, dataclasses out.

A run is every Job labelled `flops.dev/run=<run id>`: one build, regression or test Job (the run id is
its name), or a federated run's server and clients (the run id is the server's name).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from bot.core import jobs

RUN_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")  # a Job name (DNS-1123 label)
REPO = re.compile(r"[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}")
CONCLUSIONS = ("success", "failure", "cancelled", "timed_out", "neutral", "skipped", "deleted")
FILTERS = ("kind", "pr", "branch", "conclusion")


@dataclass(frozen=True)
class Container:
    name: str
    init: bool
    state: str  # waiting | running | terminated | "" (not started)
    reason: str = ""
    exit_code: int | None = None
    restarts: int = 0


@dataclass(frozen=True)
class Pod:
    name: str
    phase: str
    node: str
    reason: str  # why a Pending or failed Pod is so; "" otherwise
    restarts: int
    started: str
    containers: tuple[Container, ...]


@dataclass(frozen=True)
class Job:
    name: str
    kind: str
    state: str  # queued | running | succeeded | failed
    started: str
    finished: str
    pods: tuple[Pod, ...]
    api: str = "Job"  # or "RayJob"
    detail: str = ""  # a RayJob's jobDeploymentStatus / jobStatus, reason and message


@dataclass(frozen=True)
class Run:
    run_id: str
    repo: str
    sha: str
    kind: str
    installation: int
    ref: str = ""
    pr: str = ""
    trigger: str = ""
    check_name: str = ""
    conclusion: str = ""  # "" while it runs
    output: str = ""  # the runs-bucket prefix its workload writes (metrics.json)
    created: str = ""
    jobs: tuple[Job, ...] = field(default_factory=tuple)

    @property
    def started(self) -> str:
        return min((j.started for j in self.jobs if j.started), default=self.created)

    @property
    def finished(self) -> str:
        ends = [j.finished for j in self.jobs]
        return max(ends) if ends and all(ends) else ""

    @property
    def state(self) -> str:
        if self.conclusion:
            return self.conclusion
        states = {j.state for j in self.jobs}
        return "running" if "running" in states else "queued" if "queued" in states or not states else \
            "failed" if "failed" in states else "succeeded"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Run:
        """A record the bot wrote (`to_json`); ValueError when it lacks the shape."""
        try:
            pods = [tuple(Pod(**{**p, "containers": tuple(Container(**c) for c in p["containers"])})
                          for p in j["pods"]) for j in data["jobs"]]
            found = tuple(Job(**{**j, "pods": ps}) for j, ps in zip(data["jobs"], pods, strict=True))
            return cls(**{**data, "jobs": found})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a run record: {exc}") from None


def run_of(run_id: str, found_jobs: list[dict[str, Any]], pods: dict[str, list[dict[str, Any]]]) -> Run | None:
    """The run of `found_jobs` (every Job labelled with `run_id`), the first (the server, for a federated run)
    deciding what it is; `pods` by Job name. None when there is no Job."""
    if not found_jobs:
        return None
    ordered = sorted(found_jobs, key=lambda j: (jobs.name_of(j) != run_id, jobs.name_of(j)))
    ann, lead = jobs.annotations_of(ordered[0]), ordered[0]
    return Run(run_id=run_id, repo=ann.get(jobs.REPO, ""), sha=ann.get(jobs.SHA, ""), kind=jobs.kind_of(lead),
               installation=int(ann.get(jobs.INSTALLATION) or 0), ref=ann.get(jobs.REF, ""), pr=ann.get(jobs.PR, ""),
               trigger=ann.get(jobs.TRIGGER, ""), check_name=ann.get(jobs.CHECK_NAME, ""),
               conclusion=ann.get(jobs.REPORTED, ""), output=ann.get(jobs.OUTPUT, ""),
               created=str(lead["metadata"].get("creationTimestamp") or ""),
               jobs=tuple(job_of(j, pods.get(jobs.name_of(j), [])) for j in ordered))


def job_of(job: dict[str, Any], pods: list[dict[str, Any]]) -> Job:
    if jobs.api_kind(job) == jobs.RAYJOB:
        return rayjob_of(job, pods)
    status, result = job.get("status") or {}, jobs.outcome(job)
    state = ("succeeded" if result.succeeded else "failed") if result.finished else \
        "running" if (status.get("ready") or 0) > 0 or (status.get("active") or 0) > 0 else "queued"
    ends = [c.get("lastTransitionTime") or "" for c in status.get("conditions") or [] if c.get("status") == "True"]
    finished = (status.get("completionTime") or max(ends, default="")) if result.finished else ""
    return Job(name=jobs.name_of(job), kind=jobs.kind_of(job), state=state, started=str(status.get("startTime") or ""),
               finished=str(finished), pods=tuple(pod_of(p) for p in sorted(pods, key=_created)))


def rayjob_of(rayjob: dict[str, Any], pods: list[dict[str, Any]]) -> Job:
    """A RayJob as KubeRay reports it, with its submitter's and its cluster's Pods."""
    status, result = rayjob.get("status") or {}, jobs.outcome(rayjob)
    deployment = str(status.get("jobDeploymentStatus") or "")
    state = ("succeeded" if result.succeeded else "failed") if result.finished else \
        "running" if deployment == "Running" else "queued"
    told = [str(status.get(k) or "") for k in ("jobDeploymentStatus", "jobStatus", "reason", "message")]
    detail = " / ".join(part for part in told[:2] if part) + "".join(f": {part}" for part in told[2:] if part)
    return Job(name=jobs.name_of(rayjob), kind=jobs.kind_of(rayjob), state=state,
               started=str(status.get("startTime") or ""), finished=str(status.get("endTime") or "")
               if result.finished else "", pods=tuple(pod_of(p) for p in sorted(pods, key=_created)),
               api=jobs.RAYJOB, detail=detail[:DETAIL_MAX])


DETAIL_MAX = 500


def pod_of(pod: dict[str, Any]) -> Pod:
    spec, status = pod.get("spec") or {}, pod.get("status") or {}
    statuses = {s.get("name"): s for s in (status.get("initContainerStatuses") or [])
                + (status.get("containerStatuses") or [])}
    containers = [_container(c["name"], True, statuses.get(c["name"])) for c in spec.get("initContainers") or []]
    containers += [_container(c["name"], False, statuses.get(c["name"])) for c in spec.get("containers") or []]
    return Pod(name=str(pod["metadata"]["name"]), phase=str(status.get("phase") or "Pending"),
               node=str(spec.get("nodeName") or ""), reason=_pod_reason(status, containers),
               restarts=sum(c.restarts for c in containers), started=str(status.get("startTime") or ""),
               containers=tuple(containers))


def _container(name: str, init: bool, status: dict[str, Any] | None) -> Container:
    state = (status or {}).get("state") or {}
    for key in ("terminated", "running", "waiting"):
        if key in state:
            detail = state[key] or {}
            code = detail.get("exitCode")
            return Container(name, init, key, str(detail.get("reason") or ""),
                             int(code) if isinstance(code, int) else None, int((status or {}).get("restartCount") or 0))
    return Container(name, init, "")


def _pod_reason(status: dict[str, Any], containers: list[Container]) -> str:
    """A Pending Pod's unschedulable message or waiting container, a failed one's failing container."""
    phase = status.get("phase") or "Pending"
    if phase == "Pending":
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                return f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".strip(": ")
        waiting = next((c for c in containers if c.state == "waiting" and c.reason), None)
        return f"{waiting.name}: {waiting.reason}" if waiting else ""
    if phase == "Failed":
        failed = next((c for c in containers if c.exit_code not in (None, 0)), None)
        if failed is not None:
            return f"{failed.name} exited with code {failed.exit_code} ({failed.reason or 'Error'})"
        return str(status.get("reason") or status.get("message") or "")
    return ""


def _created(pod: dict[str, Any]) -> str:
    return str(pod["metadata"].get("creationTimestamp") or "")


def metric_rows(data: Any) -> tuple[list[tuple[str, str]], list[dict[str, str]], dict[str, str]]:
    """metrics.json as the page shows it: (metric, value) rows, per-round rows (federated), links;
    anything that is not a scalar is left out."""
    if not isinstance(data, dict):
        return [], [], {}
    given = data.get("metrics")
    metrics: dict[str, Any] = given if isinstance(given, dict) else {
        k: v for k, v in data.items() if k not in ("rounds", "links")}
    rows = [(str(k), _scalar(v)) for k, v in sorted(metrics.items())[:200] if _scalar(v)]
    rounds = [{"round": _scalar(r.get("round")), **{str(k): _scalar(v) for k, v in (r.get("metrics") or {}).items()}}
              for r in (data.get("rounds") or [])[:500] if isinstance(r, dict) and isinstance(r.get("metrics"), dict)]
    given = data.get("links")
    links: dict[str, Any] = given if isinstance(given, dict) else {}
    return rows, rounds, {str(k): str(v) for k, v in list(links.items())[:50]}


def _scalar(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, (int, float, str)):
        return f"{value:.6g}" if isinstance(value, float) else str(value)[:200]
    return ""


def matches(run: Run, filters: dict[str, str]) -> bool:
    """`/runs?repo=...&kind=&pr=&branch=&conclusion=`: every filter given holds."""
    wanted = {k: v for k, v in filters.items() if k in FILTERS and v}
    got = {"kind": run.kind, "pr": run.pr, "branch": run.ref, "conclusion": run.conclusion or "running"}
    return all(got[key] == value for key, value in wanted.items())
