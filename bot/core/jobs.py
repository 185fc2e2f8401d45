"""Job specs (pure functions from data to `batch/v1` bodies) and the labels/annotations contract.

Every Job the bot creates carries:
  labels       app.kubernetes.io/managed-by=flops-bot, flops.dev/kind=<kind>, flops.dev/run=<run id>
  annotations  flops.dev/repo, flops.dev/sha, flops.dev/installation-id, flops.dev/run-id,
               flops.dev/check-run-id (once created), flops.dev/reported (once GitHub accepted the
               final report) and kind-specific ones (flops.dev/image, flops.dev/destination, ...)
Kubernetes is the bot's database: the tracker rebuilds everything it needs from these.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from bot.core.config import ImageConfig, RepoConfig, Resources

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "flops-bot"
SELECTOR = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
KIND = "flops.dev/kind"
RUN = "flops.dev/run"
PR_LABEL = "flops.dev/pr"

A = "flops.dev/"
REPO, SHA, REF, INSTALLATION, RUN_ID = A + "repo", A + "sha", A + "ref", A + "installation-id", A + "run-id"
CHECK_RUN, CHECK_NAME, REPORTED = A + "check-run-id", A + "check-name", A + "reported"
IMAGE, DESTINATION, TAG, PR = A + "image", A + "destination", A + "tag", A + "pr"
DELIVERY, DEPLOY_TARGETS = A + "delivery-id", A + "deploy-targets"

# A reported Job also carries the label flops.dev/reported=true, so lists of running work select
# `!flops.dev/reported` and skip the finished Jobs kept for a week (ttlSecondsAfterFinished).
REPORTED_LABEL = {REPORTED: "true"}

BUILD, REGRESSION = "build", "regression"
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
    bucket: str
    s3_endpoint_url: str
    s3_secret: str
    registry_secret: str
    kaniko_image: str
    service_account: str
    github_url: str = "https://github.com"
    fetch_image: str = "python:3.12.7-slim-bookworm"


@dataclass(frozen=True)
class BuildRequest:
    source: Source
    image: ImageConfig
    registry: str
    tag: str
    created: str  # RFC 3339 commit time, for the OCI label
    attempt: str = ""  # distinguishes a re-run from the first build (Job names are deterministic)
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def destination(self) -> str:
        return f"{self.registry}/{self.image.name}:{self.tag}"


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


def build_job(req: BuildRequest, cluster: Cluster, *, check: str) -> dict[str, Any]:
    """The Kaniko Job for one image of one commit, reported on the check run named `check`."""
    src, image = req.source, req.image
    name = job_name(BUILD, image.name, src.sha, src.repo, req.tag, req.attempt)
    labels = _labels(BUILD, run=name, pr=src.pr)
    annotations = {**_annotations(src, run_id=name), IMAGE: image.name, DESTINATION: req.destination,
                   TAG: req.tag, CHECK_NAME: check, **req.annotations}
    container = {
        "name": "kaniko",
        "image": cluster.kaniko_image,
        "args": kaniko_args(req, cluster),
        "env": _s3_env(cluster) + [
            {"name": "S3_ENDPOINT", "value": cluster.s3_endpoint_url},
            {"name": "S3_FORCE_PATH_STYLE", "value": "true"},
            {"name": "AWS_REGION", "value": "us-east-1"},
        ],
        "resources": resources(image.resources),
        "volumeMounts": [{"name": "registry-credentials", "mountPath": "/kaniko/.docker", "readOnly": True}],
        "terminationMessagePolicy": "File",
    }
    volumes = [{"name": "registry-credentials", "secret": {
        "secretName": cluster.registry_secret,
        "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}]
    return job_body(name, cluster, labels, annotations, [container], volumes=volumes,
                    deadline=image.timeout, backoff_limit=1)


def kaniko_args(req: BuildRequest, cluster: Cluster) -> list[str]:
    src, image = req.source, req.image
    args = [
        f"--context=s3://{cluster.bucket}/{source_key(src.repo, src.sha)}",
        f"--dockerfile={KANIKO_CONTEXT}/{image.dockerfile}",
        f"--destination={req.destination}",
        "--digest-file=/dev/termination-log",
        "--cache=true",
        f"--cache-repo={req.registry}/cache",
        f"--label=org.opencontainers.image.revision={src.sha}",
        f"--label=org.opencontainers.image.source={cluster.github_url}/{src.repo}",
        f"--label=org.opencontainers.image.created={req.created}",
    ]
    if image.context not in ("", "."):
        args.append(f"--context-sub-path={image.context}")
    if image.target:
        args.append(f"--target={image.target}")
    args += [f"--build-arg={key}={value}" for key, value in sorted(image.build_args.items())]
    return args


@dataclass(frozen=True)
class Workload:
    """What a regression or federated container runs, and where (from .github/flops.yml)."""

    image: str
    command: tuple[str, ...] = ()
    resources: Resources = Resources(None, None, 0)
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()
    volumes: tuple[Any, ...] = ()  # config.Volume: claim, mount_path, read_only
    env: dict[str, str] = field(default_factory=dict)


def output_prefix(repo: str, run_id: str) -> str:
    """Where a run writes: `runs/<owner>/<repo>/<run id>/` (FLOPS_OUTPUT, ends in '/')."""
    return f"runs/{repo}/{run_id}/"


def workload_env(src: Source, cluster: Cluster, run_id: str, extra: dict[str, str]) -> list[dict[str, Any]]:
    """The variables every workload gets; S3 credentials come from the Secret, never from the bot."""
    plain = {**extra, "FLOPS_RUN_ID": run_id, "FLOPS_REPO": src.repo, "FLOPS_SHA": src.sha,
             "FLOPS_S3_ENDPOINT": cluster.s3_endpoint_url, "FLOPS_S3_BUCKET": cluster.bucket,
             "FLOPS_OUTPUT": output_prefix(src.repo, run_id), "AWS_ENDPOINT_URL": cluster.s3_endpoint_url,
             "MLFLOW_S3_ENDPOINT_URL": cluster.s3_endpoint_url}
    if src.pr is not None:
        plain["FLOPS_PR"] = str(src.pr)
    return [{"name": k, "value": v} for k, v in plain.items()] + _s3_env(cluster)


def workload_pod(src: Source, cluster: Cluster, run_id: str, work: Workload, source_url: str | None, *,
                 name: str, env: dict[str, str], ports: list[dict[str, Any]] | None = None,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(init containers, containers, volumes, pod spec extras) of a workload Job. With a
    `source_url` the commit's source is unpacked into /workspace first (the working directory);
    without one the image carries its code (federated runs of built images)."""
    mounts: list[dict[str, Any]] = []
    volumes: list[dict[str, Any]] = []
    init: list[dict[str, Any]] = []
    if source_url is not None:
        mounts.append({"name": "workspace", "mountPath": WORKSPACE})
        volumes.append({"name": "workspace", "emptyDir": {}})
        init.append(_fetch_container(cluster, source_url))
    for i, vol in enumerate(work.volumes):
        mounts.append({"name": f"data-{i}", "mountPath": vol.mount_path, "readOnly": vol.read_only})
        volumes.append({"name": f"data-{i}", "persistentVolumeClaim": {"claimName": vol.claim,
                                                                      "readOnly": vol.read_only}})
    container: dict[str, Any] = {"name": name, "image": work.image,
                                 "env": workload_env(src, cluster, run_id, {**work.env, **env}),
                                 "resources": resources(work.resources)}
    if mounts:
        container["volumeMounts"] = mounts
    if source_url is not None:
        container["workingDir"] = WORKSPACE
    if work.command:
        container["command"] = list(work.command)
    if ports:
        container["ports"] = ports
    extras: dict[str, Any] = {}
    if work.node_selector:
        extras["nodeSelector"] = dict(work.node_selector)
    if work.tolerations:
        extras["tolerations"] = [dict(t) for t in work.tolerations]
    return init, [container], volumes, extras


def _fetch_container(cluster: Cluster, source_url: str) -> dict[str, Any]:
    return {"name": "fetch-source", "image": cluster.fetch_image, "command": ["python", "-c", FETCH_SOURCE],
            "env": [{"name": "FLOPS_SOURCE_URL", "value": source_url}],
            "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE}],
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}}}


def regression_job(src: Source, cluster: Cluster, work: Workload, *, check: str, source_url: str, timeout: int,
                   trigger: str, attempt: str = "", baseline: bool = False) -> dict[str, Any]:
    """The train + evaluate Job of a PR head (or of a default-branch commit: a baseline)."""
    # Distinct labels: a merge-queue commit becomes a default-branch commit, whose baseline run must not
    # collide with the merge group's Job name.
    label = f"pr{src.pr}" if src.pr is not None else "base" if baseline else "queue"
    name = job_name(REGRESSION, label, src.sha, src.repo, attempt)
    annotations = {**_annotations(src, run_id=name), CHECK_NAME: check, TRIGGER: trigger,
                   OUTPUT: output_prefix(src.repo, name), TIMEOUT: str(timeout)}
    if baseline:
        annotations[BASELINE] = "true"
    init, containers, volumes, extras = workload_pod(src, cluster, name, work, source_url, name="regression", env={})
    # The tracker stops it at `timeout` (its log still readable); Kubernetes only STOP_GRACE later.
    return job_body(name, cluster, _labels(REGRESSION, run=name, pr=src.pr), annotations, containers,
                    deadline=timeout + STOP_GRACE, init_containers=init, volumes=volumes, pod_spec=extras)


@dataclass(frozen=True)
class FederatedRun:
    source: Source
    server: Workload
    client: Workload
    port: int
    rounds: int
    clients: int
    timeout: int
    trigger: str
    attempt: str = ""

    @property
    def run_id(self) -> str:
        label = f"pr{self.source.pr}" if self.source.pr is not None else "push"
        return job_name("fl", label, self.source.sha, self.source.repo, self.attempt, str(self.rounds),
                        str(self.clients))[:55].rstrip("-")

    @property
    def address(self) -> str:
        return f"{self.run_id}:{self.port}"


def federated_server_job(run: FederatedRun, cluster: Cluster, *, check: str) -> dict[str, Any]:
    """The aggregation server: its end is the run's end. The bot stops it at `timeout` (the
    tracker, so the server's log can still be read); Kubernetes only STOP_GRACE later."""
    src, name = run.source, run.run_id
    annotations = {**_annotations(src, run_id=name), CHECK_NAME: check, TRIGGER: run.trigger,
                   OUTPUT: output_prefix(src.repo, name), ROUNDS: str(run.rounds), CLIENTS: str(run.clients),
                   TIMEOUT: str(run.timeout)}
    env = _fl_env(run)
    init, containers, volumes, extras = workload_pod(src, cluster, name, run.server, None, name="server", env=env,
                                                     ports=[{"name": "fl", "containerPort": run.port}])
    return job_body(name, cluster, _labels(FEDERATED_SERVER, run=name, pr=src.pr), annotations, containers,
                    deadline=run.timeout + STOP_GRACE, volumes=volumes, pod_spec=extras)


def federated_client_job(run: FederatedRun, cluster: Cluster, index: int, owner: dict[str, Any]) -> dict[str, Any]:
    """Client `index` (FL_CLIENT_ID, 0..N-1), owned by the server Job: deleting the server deletes it."""
    src, name = run.source, federated_client_name(run.run_id, index)
    annotations = {**_annotations(src, run_id=run.run_id), CLIENT_ID: str(index)}
    env = {**_fl_env(run), "FL_CLIENT_ID": str(index)}
    init, containers, volumes, extras = workload_pod(src, cluster, run.run_id, run.client, None, name="client",
                                                     env=env)
    body = job_body(name, cluster, _labels(FEDERATED_CLIENT, run=run.run_id, pr=src.pr), annotations, containers,
                    deadline=run.timeout + STOP_GRACE, volumes=volumes, pod_spec=extras)
    body["metadata"]["ownerReferences"] = [owner_reference(owner)]
    return body


def federated_client_name(run_id: str, index: int) -> str:
    return f"{run_id}-c{index}"


def federated_service(run: FederatedRun, cluster: Cluster, owner: dict[str, Any]) -> dict[str, Any]:
    """A stable DNS name for the server: `<run id>:<port>` inside the namespace."""
    labels = _labels(FEDERATED_SERVER, run=run.run_id, pr=run.source.pr)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": run.run_id, "namespace": cluster.namespace, "labels": labels,
                         "ownerReferences": [owner_reference(owner)]},
            "spec": {"selector": {RUN: run.run_id, KIND: FEDERATED_SERVER},
                     "ports": [{"name": "fl", "port": run.port, "targetPort": run.port, "protocol": "TCP"}]}}


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    """Deleting the server Job deletes the run's clients and Service (garbage collection)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"],
            "blockOwnerDeletion": False, "controller": False}


def _fl_env(run: FederatedRun) -> dict[str, str]:
    return {"FL_SERVER_ADDRESS": run.address, "FL_ROUNDS": str(run.rounds), "FL_NUM_CLIENTS": str(run.clients),
            "FL_PORT": str(run.port)}


def job_body(name: str, cluster: Cluster, labels: dict[str, str], annotations: dict[str, str],
             containers: list[dict[str, Any]], *, deadline: int, backoff_limit: int = 0,
             init_containers: list[dict[str, Any]] | None = None, volumes: list[dict[str, Any]] | None = None,
             pod_spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """The shape every bot Job shares: labels on Job and Pod, no API token, never restarted in place."""
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": cluster.service_account,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "containers": containers,
        **(pod_spec or {}),
    }
    if init_containers:
        spec["initContainers"] = init_containers
    if volumes:
        spec["volumes"] = volumes
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "backoffLimit": backoff_limit,
            "activeDeadlineSeconds": deadline,
            "ttlSecondsAfterFinished": TTL_AFTER_FINISHED,
            "template": {"metadata": {"labels": labels, "annotations": {A + "run-id": annotations[RUN_ID]}},
                         "spec": spec},
        },
    }


def resources(res: Resources) -> dict[str, dict[str, str]]:
    """Requests equal limits for memory (no OOM surprises), CPU limited too; GPUs as nvidia.com/gpu."""
    amounts: dict[str, str] = {}
    if res.cpu:
        amounts["cpu"] = str(res.cpu)
    if res.memory:
        amounts["memory"] = str(res.memory)
    if res.gpu:
        amounts["nvidia.com/gpu"] = str(res.gpu)
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def _s3_env(cluster: Cluster) -> list[dict[str, Any]]:
    return [{"name": key, "valueFrom": {"secretKeyRef": {"name": cluster.s3_secret, "key": key}}}
            for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]


def _labels(kind: str, *, run: str, pr: int | None = None) -> dict[str, str]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY, KIND: kind, RUN: run}
    if pr is not None:
        labels[PR_LABEL] = str(pr)
    return labels


def _annotations(src: Source, *, run_id: str) -> dict[str, str]:
    annotations = {REPO: src.repo, SHA: src.sha, INSTALLATION: str(src.installation_id), RUN_ID: run_id}
    if src.ref:
        annotations[REF] = src.ref
    if src.pr is not None:
        annotations[PR] = str(src.pr)
    if src.delivery_id:
        annotations[DELIVERY] = src.delivery_id
    return annotations


# --- reading Jobs back -------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    finished: bool
    succeeded: bool = False
    reason: str = ""
    message: str = ""


def outcome(job: dict[str, Any]) -> Outcome:
    """Finished when the conditions say Complete/SuccessCriteriaMet or Failed/FailureTarget."""
    conditions = (job.get("status") or {}).get("conditions") or []
    true = {c.get("type"): c for c in conditions if c.get("status") == "True"}
    for kind in ("Complete", "SuccessCriteriaMet"):
        if kind in true:
            return Outcome(True, True, true[kind].get("reason") or "", true[kind].get("message") or "")
    for kind in ("Failed", "FailureTarget"):
        if kind in true:
            return Outcome(True, False, true[kind].get("reason") or "", true[kind].get("message") or "")
    return Outcome(False)


def unreported(kind: str, *more: str) -> str:
    """The label selector of the bot's Jobs of `kind` that are not reported yet (and `more` terms)."""
    return ",".join((SELECTOR, f"{KIND}={kind}", f"!{REPORTED}", *more))


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
                   github_url=_web_url(settings.api_url), fetch_image=settings.fetch_image)


def _web_url(api_url: str) -> str:
    if api_url.rstrip("/") == "https://api.github.com":
        return "https://github.com"
    return re.sub(r"/api/v3/?$", "", api_url.rstrip("/"))


def images_to_build(cfg: RepoConfig, changed: list[str] | None) -> list[ImageConfig]:
    """All images, or (when the changed files are known) those whose `paths` match one."""
    if changed is None:
        return list(cfg.images)
    return [image for image in cfg.images if image.matches(changed)]
