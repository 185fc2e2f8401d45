"""A test helper acting as Kueue on the Kubernetes emulator: Workloads and the Jobs' `spec.suspend`.

Kueue watches Jobs labelled `kueue.x-k8s.io/queue-name` that are created suspended, makes one
`kueue.x-k8s.io/v1beta1` Workload per Job (label `kueue.x-k8s.io/job-uid`, owned by the Job), and
moves it on: QuotaReserved=False while it waits (its reason in the message), QuotaReserved and
Admitted=True when it admits it (then it sets `spec.suspend: false`), Evicted=True when it preempts
it (`spec.suspend: true` again; the Job controller deletes the Pods). Under MultiKueue the Workload
says where the Job runs (`status.clusterName`, the admission check's message) and the Job's status
is mirrored back with no Pod in this cluster. Shapes as https://kueue.sigs.k8s.io/docs/ documents them.

A KubeRay RayJob of that name (Kueue's RayJob integration) is managed the same way: its Workload
(`rayjob-<name>-<uid>`, owned by the RayJob, labelled with the RayJob's uid) has a pod set per Ray
node group (`head`, each worker group with its replicas) and `submitter` (K8sJobMode); admitting and
evicting change the RayJob's `spec.suspend`, and KubeRay's operator answers (tests/emulators/kuberay.py).

    kueue = Kueue(kube)
    kueue.pending("flops-regression-...", "couldn't assign flavors to pod set main: insufficient quota")
    kueue.admit("flops-regression-...")            # Admitted; the Job resumes (a new status.startTime)
    kueue.evict("flops-regression-...")            # Preempted: suspended again, its Pod deleted
    kueue.finish_elsewhere("flops-...", cluster="worker-1")   # MultiKueue: finished, no Pod here
"""
from __future__ import annotations

import copy
from typing import Any

from tests.emulators.kube import RESOURCES, KubeEmulator, now
from tests.emulators.kuberay import KubeRay

GROUP_VERSION = "kueue.x-k8s.io/v1beta1"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"


class Kueue:
    def __init__(self, kube: KubeEmulator, namespace: str | None = None, cluster_queue: str = "team-gpu") -> None:
        self.kube = kube
        self.namespace = namespace or kube.namespace
        self.cluster_queue = cluster_queue

    def managed(self, job_name: str) -> tuple[str, dict[str, Any]] | None:
        """(plural, object) Kueue manages under `job_name`: the RayJob of that name (its submitter is a Job of
        the same name, which Kueue does not manage), else the Job."""
        for plural in ("rayjobs", "jobs"):
            found = self.kube.get(plural, self.namespace, job_name)
            if found is not None:
                return plural, found
        return None

    def workload(self, job_name: str) -> dict[str, Any] | None:
        managed = self.managed(job_name)
        if managed is None:
            return None
        job = managed[1]
        uid = job["metadata"]["uid"]
        found = [w for w in self.kube.list("workloads", self.namespace)
                 if (w["metadata"].get("labels") or {}).get(JOB_UID_LABEL) == uid]
        return found[0] if found else None

    def pending(self, job_name: str, message: str = "couldn't assign flavors to pod set main: insufficient unused "
                "quota for nvidia.com/gpu in flavor default-flavor, 1 more needed") -> dict[str, Any]:
        """The Workload exists and waits for quota (QuotaReserved=False, reason Pending)."""
        return self._conditions(job_name, {"QuotaReserved": ("False", "Pending", message),
                                           "Admitted": ("False", "NoReservation", "The workload has no reservation")})

    def admit(self, job_name: str, *, cluster: str | None = None) -> dict[str, Any]:
        """Quota reserved and admitted; the Job is resumed. With `cluster`, MultiKueue dispatched it there."""
        changes = {"QuotaReserved": ("True", "QuotaReserved", f"Quota reserved in ClusterQueue {self.cluster_queue}"),
                   "Admitted": ("True", "Admitted", "The workload is admitted"),
                   "Evicted": None, "Requeued": ("True", "Admitted", "")}
        workload = self._conditions(job_name, changes, admitted=True, cluster=cluster)
        self._suspend(job_name, False)
        return workload

    def evict(self, job_name: str, *, reason: str = "Preempted",
              message: str = "Preempted to accommodate a workload due to prioritization in the ClusterQueue"
              ) -> dict[str, Any]:
        """Kueue evicts the running Job: suspended again (its Pods deleted), the Workload requeued."""
        changes = {"Evicted": ("True", reason, message),
                   "QuotaReserved": ("False", "Pending", message),
                   "Admitted": ("False", "NoReservation", "The workload has no reservation"),
                   "Requeued": ("True", reason, message)}
        workload = self._conditions(job_name, changes, admitted=False)
        self._suspend(job_name, True)
        return workload

    def _suspend(self, job_name: str, suspended: bool) -> None:
        """Kueue writes `spec.suspend`; the Job controller (or KubeRay's operator, for a RayJob) answers."""
        if (self.managed(job_name) or ("jobs", {}))[0] == "rayjobs":
            KubeRay(self.kube, self.namespace).set_suspended(job_name, suspended)
        else:
            self.kube.set_suspended(self.namespace, job_name, suspended)

    def finish_elsewhere(self, job_name: str, *, succeeded: bool = True, cluster: str = "worker-1") -> None:
        """MultiKueue: the Job ran in worker cluster `cluster`; its status is mirrored here, no Pod exists."""
        stamp = now()
        kind = ("SuccessCriteriaMet", "Complete") if succeeded else ("FailureTarget", "Failed")
        reason = "CompletionsReached" if succeeded else "BackoffLimitExceeded"
        message = "Reached expected number of succeeded pods" if succeeded else \
            "Job has reached the specified backoff limit"
        conditions = [{"type": t, "status": "True", "reason": reason, "message": message,
                       "lastProbeTime": stamp, "lastTransitionTime": stamp} for t in kind]
        with self.kube._lock:
            job = copy.deepcopy(self.kube._objects["jobs"][(self.namespace, job_name)])
            old = [c for c in (job.get("status") or {}).get("conditions") or [] if c["type"] not in kind]
            status = {**(job.get("status") or {}), "conditions": old + conditions, "ready": 0,
                      "succeeded" if succeeded else "failed": 1}
            status.pop("active", None)
            if succeeded:
                status["completionTime"] = stamp
            job["status"] = status
            self.kube._save("jobs", job)
        self._conditions(job_name, {"Finished": ("True", "Succeeded" if succeeded else "Failed", message)},
                         cluster=cluster)

    def _conditions(self, job_name: str, changes: dict[str, tuple[str, str, str] | None], *,
                    admitted: bool | None = None, cluster: str | None = None) -> dict[str, Any]:
        with self.kube._lock:
            current = self.workload(job_name)
            workload = copy.deepcopy(current) if current is not None else self._new(job_name)
            stamp = now()
            conditions = {c["type"]: c for c in (workload.get("status") or {}).get("conditions") or []}
            for kind, change in changes.items():
                if change is None:
                    conditions.pop(kind, None)
                    continue
                status, reason, message = change
                conditions[kind] = {"type": kind, "status": status, "reason": reason, "message": message,
                                    "lastTransitionTime": stamp, "observedGeneration": 1}
            status_block: dict[str, Any] = {**(workload.get("status") or {}), "conditions": list(conditions.values())}
            if admitted is True:
                status_block["admission"] = {"clusterQueue": self.cluster_queue, "podSetAssignments": [
                    {"name": p["name"], "count": p["count"], "flavors": {"nvidia.com/gpu": "default-flavor"}}
                    for p in workload["spec"]["podSets"]]}
            elif admitted is False:
                status_block.pop("admission", None)
            if cluster is not None:
                status_block["clusterName"] = cluster
                status_block["admissionChecks"] = [{"name": "multikueue", "state": "Ready", "lastTransitionTime": stamp,
                                                    "message": f'The workload got reservation on "{cluster}"'}]
            workload["status"] = status_block
            if current is None:
                return self.kube._create(RESOURCES["workloads"], self.namespace, workload, validate=False)
            return self.kube._save("workloads", workload)

    def _new(self, job_name: str) -> dict[str, Any]:
        managed = self.managed(job_name)
        if managed is None:
            raise KeyError(f"no job {self.namespace}/{job_name}")
        plural, job = managed
        labels = job["metadata"].get("labels") or {}
        if QUEUE_LABEL not in labels:
            raise ValueError(f"job {job_name} has no {QUEUE_LABEL} label: Kueue does not manage it")
        uid, ray = job["metadata"]["uid"], plural == "rayjobs"
        owner = {"apiVersion": "ray.io/v1", "kind": "RayJob"} if ray else {"apiVersion": "batch/v1", "kind": "Job"}
        return {"apiVersion": GROUP_VERSION, "kind": "Workload",
                "metadata": {"name": f"{'rayjob' if ray else 'job'}-{job_name}"[:57] + "-" + uid[:5],
                             "namespace": self.namespace, "labels": {JOB_UID_LABEL: uid},
                             "ownerReferences": [{**owner, "name": job_name, "uid": uid, "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "spec": {"queueName": labels[QUEUE_LABEL], "active": True, "priority": 0,
                         "podSets": ray_pod_sets(job) if ray else [{"name": "main", "count": 1,
                                                                     "template": job["spec"]["template"]}]},
                "status": {}}


def ray_pod_sets(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    """Kueue's pod sets of a RayJob: the head, each worker group (its replicas), the submitter (K8sJobMode)."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    sets = [{"name": "head", "count": 1, "template": cluster["headGroupSpec"]["template"]}]
    sets += [{"name": g["groupName"], "count": g.get("replicas", 1), "template": g["template"]}
             for g in cluster.get("workerGroupSpecs") or []]
    if rayjob["spec"].get("submissionMode", "K8sJobMode") == "K8sJobMode":
        sets.append({"name": "submitter", "count": 1, "template": rayjob["spec"].get("submitterPodTemplate") or {}})
    return sets
