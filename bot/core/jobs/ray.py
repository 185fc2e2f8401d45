"""KubeRay RayJobs (`ray.io/v1`, KubeRay 1.7): a Ray cluster that lives only for one regression run.

A RayJob is made from the regression run's batch Job body (`rayjob_from_job`), so both carry the
same name, labels and annotations (the tracker and the lifecycle read only those), the same env
(`FLOPS_*`, the run's S3 access, MLflow) and the same source: the init container that unpacks the
commit into /workspace runs on the head and on every worker. KubeRay runs `regression.command` as
the entrypoint from a submitter Job of the RayJob's own name (K8sJobMode), whose Pod keeps the
driver's log after the cluster is gone.
"""
from __future__ import annotations

import copy
import shlex
from typing import Any

from bot.core.config import RayConfig, RayGroup
from bot.core.jobs.contract import RUN
from bot.core.jobs.specs import RESTRICTED, resources

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
API_VERSION = f"{GROUP}/{VERSION}"
CRD = f"{PLURAL}.{GROUP}"
HEAD_CONTAINER, WORKER_CONTAINER, SUBMITTER_CONTAINER = "ray-head", "ray-worker", "ray-job-submitter"
# Seconds KubeRay keeps the finished cluster (head and workers) before deleting it: long enough for the bot
# to read the head's log when the submitter has none, short enough not to hold GPUs idle.
CLUSTER_TTL = 60
MAX_NAME = 47  # KubeRay refuses longer RayJob names (the cluster's and its Services' names derive from it)
# The finished states of status.jobDeploymentStatus; status.jobStatus says how the Ray job ended.
FINISHED = ("Complete", "Failed")
DASHBOARD = 8265  # the head's dashboard / job API port (KubeRay's default)
HEAD_PODS = "ray.io/node-type=head,ray.io/cluster={cluster}"
CLUSTER_PODS = "ray.io/cluster={cluster}"  # head and workers
SUBMITTER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def rayjob_from_job(job: dict[str, Any], ray: RayConfig, command: tuple[str, ...]) -> dict[str, Any]:
    """The RayJob running `command` (the argv contract; each argument quoted for the submitter's shell)
    on a cluster of `ray`'s head and worker groups, in place of the regression Job `job`."""
    spec, pod = job["spec"], job["spec"]["template"]["spec"]
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": copy.deepcopy(job["metadata"]),
        "spec": {
            "entrypoint": shlex.join(command),
            "submissionMode": "K8sJobMode",
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": CLUSTER_TTL,
            "activeDeadlineSeconds": spec["activeDeadlineSeconds"],
            "backoffLimit": 0,
            "submitterConfig": {"backoffLimit": 0},
            "rayClusterSpec": {
                "rayVersion": ray.version,
                "enableInTreeAutoscaling": False,
                "headGroupSpec": {"rayStartParams": {}, "template": _template(job, ray.head, HEAD_CONTAINER)},
                "workerGroupSpecs": [_workers(job, group) for group in ray.workers],
            },
            "submitterPodTemplate": _submitter(job, pod),
        },
    }


def _workers(job: dict[str, Any], group: RayGroup) -> dict[str, Any]:
    return {"groupName": group.name, "replicas": group.replicas, "minReplicas": group.replicas,
            "maxReplicas": group.replicas, "rayStartParams": {}, "template": _template(job, group, WORKER_CONTAINER)}


def _template(job: dict[str, Any], group: RayGroup, name: str) -> dict[str, Any]:
    """A Ray node's pod: the Job's pod (service account, no API token, init container, volumes) with one
    container running `ray start` (KubeRay sets its command) in the workload image, with the group's
    resources and placement (else the regression's own `node_selector` / `tolerations`)."""
    template = copy.deepcopy(job["spec"]["template"])
    pod = template["spec"]
    [workload] = pod["containers"]
    container = {k: v for k, v in workload.items() if k not in ("name", "command", "args", "resources")}
    container.update(name=name, resources=resources(group.resources))
    pod["containers"] = [container]
    pod.pop("restartPolicy", None)  # KubeRay's to choose for cluster pods
    if group.node_selector:
        pod["nodeSelector"] = dict(group.node_selector)
    if group.tolerations:
        pod["tolerations"] = [dict(t) for t in group.tolerations]
    template["metadata"]["annotations"] = {**template["metadata"]["annotations"],
                                           "kubectl.kubernetes.io/default-container": name}
    return template  # type: ignore[no-any-return]


def _submitter(job: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """The submitter's pod: KubeRay fills in its command (`ray job submit ... -- <entrypoint>`); it needs
    no env, source or credential of the run, and gets no API token either."""
    [workload] = pod["containers"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    return {"metadata": {"labels": dict(labels), "annotations": {
                "kubectl.kubernetes.io/default-container": SUBMITTER_CONTAINER}},
            "spec": {"restartPolicy": "Never", "serviceAccountName": pod["serviceAccountName"],
                     "automountServiceAccountToken": False, "enableServiceLinks": False,
                     "securityContext": copy.deepcopy(pod["securityContext"]),
                     "containers": [{"name": SUBMITTER_CONTAINER, "image": workload["image"],
                                     "resources": copy.deepcopy(SUBMITTER_RESOURCES),
                                     "securityContext": copy.deepcopy(RESTRICTED)}]}}


def network_policy(rayjob: dict[str, Any]) -> dict[str, Any]:
    """The run's opening in deploy/'s fence (Job pods get no ingress, and egress only to DNS, S3 and the
    registry): the run's pods (head, workers, submitter: all labelled with its run id) reach each other on
    every port, and KubeRay's operator (pods `app.kubernetes.io/name: kuberay-operator`, any namespace)
    reaches the dashboard port, where it reads the Ray job's status. Nothing else gets in. Owned by the
    RayJob: it goes when the RayJob goes."""
    meta = rayjob["metadata"]
    run = {"podSelector": {"matchLabels": {RUN: meta["labels"][RUN]}}}
    operator = {"namespaceSelector": {}, "podSelector": {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}}
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "labels": dict(meta["labels"]),
                         "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"],
                                              "uid": meta["uid"], "blockOwnerDeletion": False, "controller": False}]},
            "spec": {"podSelector": run["podSelector"], "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [run]}, {"from": [operator], "ports": [{"protocol": "TCP", "port": DASHBOARD}]}],
                     "egress": [{"to": [run]}]}}


def is_rayjob(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == KIND


def cluster_selector(rayjob: dict[str, Any]) -> str | None:
    """The label selector of the RayJob's cluster Pods (head and workers); None before KubeRay named it."""
    cluster = str((rayjob.get("status") or {}).get("rayClusterName") or "")
    return CLUSTER_PODS.format(cluster=cluster) if cluster else None


def head_selector(rayjob: dict[str, Any]) -> str | None:
    """The label selector of the RayJob's head pod; None before KubeRay named its cluster."""
    cluster = str((rayjob.get("status") or {}).get("rayClusterName") or "")
    return HEAD_PODS.format(cluster=cluster) if cluster else None
