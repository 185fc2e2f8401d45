"""Job specs: pure functions from data to `batch/v1` bodies (Kaniko builds, regression runs)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from bot.core.config import Resources
from bot.core.jobs.contract import (
    BASELINE,
    BUILD,
    CHECK_NAME,
    DEFAULT_CONTAINER,
    DELIVERY,
    DESTINATION,
    FETCH_SOURCE,
    IMAGE,
    INSTALLATION,
    KANIKO_CONTEXT,
    KIND,
    OUTPUT,
    PR,
    PR_LABEL,
    PUSHED,
    REF,
    REGRESSION,
    REPO,
    RUN,
    RUN_ID,
    SHA,
    STOP_GRACE,
    TAG,
    TIMEOUT,
    TRIGGER,
    TTL_AFTER_FINISHED,
    WORKSPACE,
    A,
    BuildRequest,
    Cluster,
    Source,
    job_name,
    recommended_labels,
)

# Every container the bot starts: no privilege escalation (no setuid gains), the runtime's default
# seccomp filter, no Linux capabilities. The workload images are the teams' own, so runAsNonRoot is
# not imposed (an image without USER would not start); without capabilities, root in them is weak.
RESTRICTED: dict[str, Any] = {"allowPrivilegeEscalation": False, "seccompProfile": {"type": "RuntimeDefault"},
                              "capabilities": {"drop": ["ALL"]}}
# Kaniko unpacks base images and runs RUN steps as root in its own container, so it keeps the few
# capabilities a root build needs to set file owners, modes and users; everything else is dropped.
KANIKO_SECURITY: dict[str, Any] = {**RESTRICTED, "capabilities": {
    "drop": ["ALL"], "add": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "SETUID", "SETGID", "SETFCAP"]}}


def build_job(req: BuildRequest, cluster: Cluster, *, check: str) -> dict[str, Any]:
    """The Kaniko Job for one image of one commit, reported on the check run named `check`."""
    src, image = req.source, req.image
    name = job_name(BUILD, image.name, src.sha, src.repo, req.tag, req.attempt)
    labels = _labels(BUILD, run=name, pr=src.pr)
    annotations = {**_annotations(src, run_id=name), IMAGE: image.name, DESTINATION: req.destination,
                   TAG: req.tag, CHECK_NAME: check, **req.annotations}
    container: dict[str, Any] = {
        "name": "kaniko",
        "image": cluster.kaniko_image,
        "args": kaniko_args(req, cluster),
        "resources": resources(image.resources),
        "terminationMessagePolicy": "File",
        "securityContext": KANIKO_SECURITY,
    }
    # No S3 credential in a build: the source comes through a presigned URL, unpacked by the init container.
    mounts: list[dict[str, Any]] = [{"name": "workspace", "mountPath": KANIKO_CONTEXT}]
    volumes: list[dict[str, Any]] = [{"name": "workspace", "emptyDir": {}}]
    container["volumeMounts"] = mounts
    secret = req.secret(cluster)
    if secret is not None:  # a build that pushes nothing holds no registry credential at all
        mounts.append({"name": "registry-credentials", "mountPath": "/kaniko/.docker", "readOnly": True})
        volumes.append({"name": "registry-credentials", "secret": {
            "secretName": secret, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}})
    else:
        annotations[PUSHED] = "false"
    return job_body(name, cluster, labels, annotations, [container], volumes=volumes,
                    init_containers=[_fetch_container(cluster, req.source_url)], deadline=image.timeout,
                    backoff_limit=1)


def kaniko_args(req: BuildRequest, cluster: Cluster) -> list[str]:
    src, image = req.source, req.image
    args = [
        f"--context=dir://{KANIKO_CONTEXT}",
        f"--dockerfile={KANIKO_CONTEXT}/{image.dockerfile}",
        *(f"--destination={destination}" for destination in req.destinations),
        "--digest-file=/dev/termination-log",
        *(("--cache=true", f"--cache-repo={req.registry}/cache") if req.push else ("--no-push", "--cache=false")),
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
             "FLOPS_S3_ENDPOINT": cluster.s3_endpoint_url, "FLOPS_S3_BUCKET": cluster.runs_bucket or cluster.bucket,
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
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [_fenced(c) for c in containers],
        **(pod_spec or {}),
    }
    if init_containers:
        spec["initContainers"] = [_fenced(c) for c in init_containers]
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
            "template": {"metadata": {"labels": labels, "annotations": {
                A + "run-id": annotations[RUN_ID], DEFAULT_CONTAINER: containers[0]["name"]}}, "spec": spec},
        },
    }


def _fenced(container: dict[str, Any]) -> dict[str, Any]:
    """The container with RESTRICTED as its securityContext unless it brings its own (Kaniko)."""
    return {**container, "securityContext": copy.deepcopy(container.get("securityContext", RESTRICTED))}


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


def _labels(kind: str, *, run: str, pr: int | None = None, instance: str = "") -> dict[str, str]:
    """The one place labels are made: what the tracker selects by (managed-by, kind, run, pr) and the
    Kubernetes recommended labels (`instance`: the Job's name when it is not the run's)."""
    labels = {**recommended_labels(kind, instance or run), KIND: kind, RUN: run}
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
