"""The labels/annotations contract of the bot's Jobs, their names and tags, and reading them back."""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bot.core.config import ImageConfig, RepoConfig
from bot.core.text import timestamp

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "flops-bot"
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
KIND = "flops.dev/kind"
RUN = "flops.dev/run"
PR_LABEL = "flops.dev/pr"
BISECT_LABEL = "flops.dev/bisect"  # a regression run of a bisection: its id
# The Kubernetes recommended labels, on every object the bot creates (`recommended_labels`).
K8S = "app.kubernetes.io/"
NAME_LABEL, INSTANCE_LABEL, VERSION_LABEL = K8S + "name", K8S + "instance", K8S + "version"
COMPONENT_LABEL, PART_OF_LABEL = K8S + "component", K8S + "part-of"
# `kubectl logs job/<name>` (and `kubectl exec`) pick this container, not the init container.
DEFAULT_CONTAINER = "kubectl.kubernetes.io/default-container"

A = "flops.dev/"
REPO, SHA, REF, INSTALLATION, RUN_ID = A + "repo", A + "sha", A + "ref", A + "installation-id", A + "run-id"
CHECK_RUN, CHECK_NAME, REPORTED = A + "check-run-id", A + "check-name", A + "reported"
IMAGE, DESTINATION, TAG, PR = A + "image", A + "destination", A + "tag", A + "pr"
DELIVERY, DEPLOY_TARGETS, PUSHED = A + "delivery-id", A + "deploy-targets", A + "pushed"

# A reported Job also carries the label flops.dev/reported=true, so lists of running work select
# `!flops.dev/reported` and skip the finished Jobs kept for a week (ttlSecondsAfterFinished).
REPORTED_LABEL = {REPORTED: "true"}
# "<holder> <epoch seconds>": the replica reporting the Job right now, written by an update carrying the Job's
# resourceVersion (a 409 means another replica got there first). Removed when flops.dev/reported is written.
REPORTING = A + "reporting"

BUILD, REGRESSION = "build", "regression"
JOB, RAYJOB = "Job", "RayJob"  # the APIs work runs as: batch/v1 Jobs, KubeRay's ray.io/v1 RayJobs (regression)
FEDERATED_SERVER, FEDERATED_CLIENT = "federated-server", "federated-client"
OUTPUT, BASELINE, TRIGGER, METRICS = A + "output", A + "baseline", A + "trigger", A + "metrics"
DEFAULT_BRANCH = A + "default-branch"  # regression: where its baseline is looked for
ROUNDS, CLIENTS, CLIENT_ID = A + "rounds", A + "clients", A + "client-id"
# Seconds after the Job's start at which the bot itself stops it (tracker), while its Pod and log
# still exist; activeDeadlineSeconds is that plus STOP_GRACE, a backstop for when the bot is down.
TIMEOUT = A + "timeout"
STOP_GRACE = 300
WORKSPACE = "/workspace"
# Unpacks the commit's source (a presigned S3 URL: no credentials in the init container) into
# /workspace. Run as `python -c`, an argv list: nothing goes through a shell.
FETCH_SOURCE = (
    "import os, tarfile, urllib.request\n"
    "with urllib.request.urlopen(os.environ['FLOPS_SOURCE_URL'], timeout=600) as response:\n"
    "    with tarfile.open(fileobj=response, mode='r|gz') as tar:\n"
    "        tar.extractall('/workspace', filter='data')\n"
)
# Where Kaniko sees the source the init container unpacked into its `workspace` volume (`--context=dir://`,
# so Kaniko needs no S3 credential). Under /kaniko, which Kaniko never snapshots: a Dockerfile's own
# `WORKDIR /workspace` still ends up in the image.
KANIKO_CONTEXT = "/kaniko/buildcontext"
TTL_AFTER_FINISHED = 7 * 24 * 3600  # long enough for a bot that was down over a weekend to report


@dataclass(frozen=True)
class Source:
    """The commit a Job works on, and who asked."""

    repo: str
    sha: str
    installation_id: int
    ref: str = ""  # branch for pushes, "" otherwise
    pr: int | None = None
    delivery_id: str = ""


@dataclass(frozen=True)
class Cluster:
    """The deployment-wide settings Job specs need (from bot.platform.settings.Settings)."""

    namespace: str
    bucket: str  # the bot's state: Jobs never get a credential for it, only presigned source URLs
    s3_endpoint_url: str
    s3_secret: str
    registry_secret: str
    kaniko_image: str
    service_account: str
    github_url: str = "https://github.com"
    fetch_image: str = "python:3.13.5-slim-bookworm"  # 3.12.11+/3.13.4+: the 2025 tarfile filter fixes
    pr_registry_secret: str = "registry-credentials-pr"
    runs_bucket: str = ""  # where workloads write (FLOPS_S3_BUCKET in their env)


@dataclass(frozen=True)
class BuildRequest:
    source: Source
    image: ImageConfig
    registry: str
    tag: str
    created: str  # RFC 3339 commit time, for the OCI label
    attempt: str = ""  # distinguishes a re-run from the first build (Job names are deterministic)
    annotations: dict[str, str] = field(default_factory=dict)
    source_url: str = ""  # presigned GET of the commit's source: the init container unpacks it for Kaniko
    pr_build: bool = False  # a pull request's: `registry` is the pr_registry, pushed with the PR Secret
    push: bool = True  # False: built (so the Dockerfile is checked), pushed nowhere, no credential mounted
    also_tags: tuple[str, ...] = ()  # more tags of the same image (`in-<hash12>` of a content-addressed one)

    def secret(self, cluster: Cluster) -> str | None:
        """The registry Secret Kaniko pushes with; None when nothing is pushed."""
        if not self.push:
            return None
        return cluster.pr_registry_secret if self.pr_build else cluster.registry_secret

    @property
    def destination(self) -> str:
        return f"{self.registry}/{self.image.name}:{self.tag}"

    @property
    def destinations(self) -> tuple[str, ...]:
        """Every reference Kaniko pushes: `destination` first, then one per `also_tags`."""
        return (self.destination, *(f"{self.registry}/{self.image.name}:{tag}" for tag in self.also_tags))


def recommended_labels(kind: str, instance: str) -> dict[str, str]:
    """`app.kubernetes.io/*` of an object of the Job kind `kind` (the component) for the run or Job
    `instance`. The name is `flops-<kind>`, never `flops-bot`: the bot's own Service selects
    `app.kubernetes.io/name=flops-bot`, and must not send webhooks to a Job's pod."""
    return {NAME_LABEL: f"flops-{kind}", INSTANCE_LABEL: instance, VERSION_LABEL: bot_version(),
            COMPONENT_LABEL: kind, PART_OF_LABEL: MANAGED_BY, MANAGED_BY_LABEL: MANAGED_BY}


@functools.cache  # the installed package does not change under a running process
def bot_version() -> str:
    """The installed flops-bot's version, as a label value (at most 63 of [A-Za-z0-9._-])."""
    try:
        version = importlib.metadata.version("flops-bot")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree that was never installed
        version = "unknown"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", version)[:63].strip("-._") or "unknown"


_TAG_TIME = re.compile(r"-(\d{14})-([0-9a-f]{7,40})$")


def image_tag(branch: str, commit_time: str, sha: str) -> str:
    """`<branch>-<commit time UTC yyyymmddHHMMSS>-<sha7>`: sortable, immutable, a valid Docker tag."""
    when = datetime.fromisoformat(commit_time.replace("Z", "+00:00")).astimezone(timezone.utc)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", branch).strip("-.") or "branch"
    return f"{slug[:100]}-{when:%Y%m%d%H%M%S}-{sha[:7]}"


def tag_parts(tag: str) -> tuple[str, str] | None:
    """(`yyyymmddHHMMSS`, sha7+) of a branch build's tag (`image_tag`); None for other tags."""
    match = _TAG_TIME.search(tag or "")
    return (match.group(1), match.group(2)) if match else None


def tag_time(tag: str) -> str:
    """The commit time of a branch build's tag, sortable; "" for other tags (PR builds)."""
    parts = tag_parts(tag)
    return parts[0] if parts else ""


def pr_tag(number: int, sha: str) -> str:
    return f"pr-{number}-{sha[:7]}"


def job_name(kind: str, label: str, sha: str, *unique: str) -> str:
    """Deterministic and DNS-1123: the same request twice gives the same name (409, no-op)."""
    digest = hashlib.sha256("\0".join((kind, label, sha, *unique)).encode()).hexdigest()[:8]
    clean = re.sub(r"[^a-z0-9-]+", "-", label.lower()).strip("-")[:30].strip("-") or "x"
    return f"flops-{kind}-{clean}-{sha[:7]}-{digest}"[:63].rstrip("-")


def source_key(repo: str, sha: str) -> str:
    return f"sources/{repo}/{sha}.tar.gz"


# --- reading Jobs back -------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    finished: bool
    succeeded: bool = False
    reason: str = ""
    message: str = ""


def outcome(job: dict[str, Any]) -> Outcome:
    """Finished when the conditions say Complete/SuccessCriteriaMet or Failed/FailureTarget (a RayJob:
    `ray_outcome`)."""
    if job.get("kind") == RAYJOB:
        return ray_outcome(job)
    conditions = (job.get("status") or {}).get("conditions") or []
    true = {c.get("type"): c for c in conditions if c.get("status") == "True"}
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in true:
            return Outcome(True, True, true[kind].get("reason") or "", true[kind].get("message") or "")
    for kind in ("Failed", "FailureTarget"):
        if kind in true:
            return Outcome(True, False, true[kind].get("reason") or "", true[kind].get("message") or "")
    return Outcome(False)


def ray_outcome(rayjob: dict[str, Any]) -> Outcome:
    """A RayJob is finished when KubeRay says `status.jobDeploymentStatus` Complete or Failed; it succeeded
    when the Ray job did (`status.jobStatus` SUCCEEDED). The reason is KubeRay's (`DeadlineExceeded`,
    `AppFailed`, ...), else the Ray job's status (FAILED, STOPPED)."""
    status = rayjob.get("status") or {}
    if status.get("jobDeploymentStatus") not in ("Complete", "Failed"):
        return Outcome(False)
    ray_status = str(status.get("jobStatus") or "")
    succeeded = ray_status == "SUCCEEDED" and status.get("jobDeploymentStatus") == "Complete"
    return Outcome(True, succeeded, str(status.get("reason") or ray_status), str(status.get("message") or ""))


def api_kind(obj: dict[str, Any]) -> str:
    """`Job` or `RayJob`: which API the bot's object lives in (`bot.platform.kube` stamps it on what it reads)."""
    return RAYJOB if obj.get("kind") == RAYJOB else JOB


def unreported(kind: str, *more: str) -> str:
    """The label selector of the bot's Jobs of `kind` that are not reported yet (and `more` terms)."""
    return ",".join((SELECTOR, f"{KIND}={kind}", f"!{REPORTED}", *more))


def reporting_holder(job: dict[str, Any], now: float, duration: float) -> str | None:
    """The replica whose `flops.dev/reporting` claim on `job` is live (made within `duration`, the
    lease duration, of `now`); None when unclaimed or the claimer has had time to die (taken over)."""
    holder, _, since = annotations_of(job).get(REPORTING, "").partition(" ")
    return holder if holder and since.isdigit() and now - int(since) < duration else None


def annotations_of(job: dict[str, Any]) -> dict[str, str]:
    return dict((job.get("metadata") or {}).get("annotations") or {})


def kind_of(job: dict[str, Any]) -> str:
    return str(((job.get("metadata") or {}).get("labels") or {}).get(KIND, ""))


def name_of(job: dict[str, Any]) -> str:
    return str(job["metadata"]["name"])


def cluster_from(settings: Any) -> Cluster:
    """Cluster facts from bot.platform.settings.Settings (typed loosely to keep this module import-light)."""
    scheme = "https://" if settings.s3.secure else "http://"
    return Cluster(namespace=settings.namespace, bucket=settings.s3.bucket,
                   s3_endpoint_url=scheme + settings.s3.endpoint, s3_secret=settings.s3_secret,
                   registry_secret=settings.registry_secret, kaniko_image=settings.kaniko_image,
                   service_account=settings.job_service_account,
                   github_url=web_url(settings.api_url), fetch_image=settings.fetch_image,
                   pr_registry_secret=settings.pr_registry_secret,
                   runs_bucket=settings.s3.runs_bucket or settings.s3.bucket)


def web_url(api_url: str) -> str:
    """https://api.github.com -> https://github.com; GHES https://host/api/v3 -> https://host."""
    if api_url.rstrip("/") == "https://api.github.com":
        return "https://github.com"
    return re.sub(r"/api/v3/?$", "", api_url.rstrip("/"))


def images_to_build(cfg: RepoConfig, changed: list[str] | None) -> list[ImageConfig]:
    """All images, or (when the changed files are known) those whose `paths` match one."""
    if changed is None:
        return list(cfg.images)
    return [image for image in cfg.images if image.matches(changed)]


def secrets_received(pod_spec: dict[str, Any]) -> dict[str, frozenset[str] | None]:
    """The Secrets a Pod receives, by name: the keys it reads (`secretKeyRef`, volume `items`), or
    None for all of them (`envFrom`, a whole-Secret volume, `imagePullSecrets`). Log tails are masked
    with exactly these values."""
    found: dict[str, set[str] | None] = {}

    def add(name: object, keys: list[str] | None) -> None:
        if not isinstance(name, str) or not name or (name in found and found[name] is None):
            return
        found[name] = None if keys is None else (found.get(name) or set()) | set(keys)

    for container in (pod_spec.get("containers") or []) + (pod_spec.get("initContainers") or []):
        for var in container.get("env") or []:
            ref = (var.get("valueFrom") or {}).get("secretKeyRef") or {}
            add(ref.get("name"), [str(ref.get("key"))])
        for source in container.get("envFrom") or []:
            add((source.get("secretRef") or {}).get("name"), None)
    for volume in pod_spec.get("volumes") or []:
        secret = volume.get("secret") or {}
        add(secret.get("secretName"), [i["key"] for i in secret["items"]] if secret.get("items") else None)
        for source in (volume.get("projected") or {}).get("sources") or []:
            projected = source.get("secret") or {}
            add(projected.get("name"), [i["key"] for i in projected["items"]] if projected.get("items") else None)
    for pull in pod_spec.get("imagePullSecrets") or []:
        add(pull.get("name"), None)
    return {name: None if keys is None else frozenset(keys) for name, keys in found.items()}


FINAL_CONDITIONS = ("Complete", "SuccessCriteriaMet", "Failed", "FailureTarget")


def run_state(job: dict[str, Any]) -> str:
    """`running` while a pod of it is ready (a RayJob: while KubeRay runs its Ray job); `queued` before:
    suspended (Kueue), Pending for a node or an image, a Ray cluster starting."""
    spec, status = job.get("spec") or {}, job.get("status") or {}
    if api_kind(job) == RAYJOB:
        return "running" if status.get("jobDeploymentStatus") == "Running" else "queued"
    return "running" if not spec.get("suspend") and (status.get("ready") or 0) > 0 else "queued"


def run_seconds(job: dict[str, Any]) -> float | None:
    """Seconds from the Job's start to its completion (or its last condition, or now); None if it never started."""
    status = job.get("status") or {}
    ends = [c.get("lastTransitionTime") for c in status.get("conditions") or []
            if c.get("status") == "True" and c.get("type") in FINAL_CONDITIONS]
    start, end = status.get("startTime"), status.get("completionTime") or status.get("endTime") or \
        max(filter(None, ends), default=None)
    if not start:
        return None
    return max(0.0, (timestamp(str(end)) if end else time.time()) - timestamp(str(start)))


def report_identity(job: dict[str, Any]) -> dict[str, Any]:
    """What a report waiting for its turn keeps of a Job: name, labels, annotations. It reads the Job
    again when it starts, so thousands of waiting reports do not hold thousands of whole Jobs."""
    meta = job.get("metadata") or {}
    return {"kind": api_kind(job), "metadata": {k: meta[k] for k in ("name", "namespace", "labels", "annotations")
                                                if k in meta}}
