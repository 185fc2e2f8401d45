"""A test helper acting as KubeRay's operator (v1.7) on the Kubernetes emulator: a RayJob's status,
its submitter Job and its head Pod.

In K8sJobMode the operator creates a RayCluster named `<rayjob>-<5 chars>` (its head Pod labelled
`ray.io/cluster=<cluster>`, `ray.io/node-type=head`), then a batch Job of the RayJob's own name that
runs `ray job submit` (labels `ray.io/originated-from-crd=RayJob`, `ray.io/originated-from-cr-name`,
`app.kubernetes.io/created-by=kuberay-operator`; owned by the RayJob). It writes the RayJob's
`status`: `jobDeploymentStatus` (Initializing, Running, Complete, Failed), `jobStatus` (the Ray job:
PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED), `reason` / `message` when it failed (`DeadlineExceeded`
past `activeDeadlineSeconds`, `AppFailed` when the Ray job failed), `startTime`, `endTime`,
`rayClusterName`, `dashboardURL`, `jobId`. Shapes as ray-project/kuberay `ray-operator/apis/ray/v1/
rayjob_types.go` and `controllers/ray/rayjob_controller.go` write them.

Suspended (`spec.suspend: true`, Kueue's RayJob integration): the operator creates no cluster and no
submitter (`run`, `initialize`, `succeed`, `fail`, `deadline` refuse, as `KubeEmulator.start_job` does
for a suspended Job); `jobDeploymentStatus: Suspended`. `set_suspended` is the operator's answer to
Kueue changing the flag: suspending deletes the cluster and the submitter Job and resets the Ray job's
status (Suspending -> Suspended; `startTime` is kept, stale); resuming goes New -> Initializing with
a new `startTime` and a new cluster.

    kuberay = KubeRay(kube)
    kuberay.run("flops-regression-...")                     # cluster up, submitter Job running, RUNNING
    kuberay.succeed("flops-regression-...", logs="done\\n")  # Complete / SUCCEEDED (submitter Job Complete)
    kuberay.fail("flops-regression-...", logs="Traceback ...")   # Failed / FAILED, reason AppFailed
    kuberay.deadline("flops-regression-...")                # Failed, reason DeadlineExceeded
    kuberay.observe("flops-regression-...")                 # created suspended: Suspended, no cluster
    kuberay.set_suspended("flops-regression-...", False)    # Kueue admitted it: Initializing, a cluster
"""
from __future__ import annotations

import copy
import random
from typing import Any

from tests.emulators.kube import POD_SUFFIX_ALPHABET, RESOURCES, KubeEmulator, now

SUBMITTER = "ray-job-submitter"


class KubeRay:
    def __init__(self, kube: KubeEmulator, namespace: str | None = None) -> None:
        self.kube = kube
        self.namespace = namespace or kube.namespace

    def rayjob(self, name: str) -> dict[str, Any]:
        found = self.kube.get("rayjobs", self.namespace, name)
        if found is None:
            raise KeyError(f"no rayjob {self.namespace}/{name}")
        return found

    def observe(self, name: str) -> dict[str, Any]:
        """The operator's first look at a RayJob created suspended: `Suspended`, no cluster, no submitter."""
        with self.kube._lock:
            if not self.rayjob(name)["spec"].get("suspend"):
                raise ValueError(f"rayjob {name} is not suspended: KubeRay would start its cluster")
            return self._status(name, jobDeploymentStatus="Suspended", jobStatus="")

    def set_suspended(self, name: str, suspended: bool) -> dict[str, Any]:
        """`spec.suspend` changed (by Kueue) and the operator's answer (rayjob_controller.go): suspending
        deletes the Ray cluster and the submitter Job (their Pods go with them) and resets the cluster's and
        the Ray job's status (Suspended); resuming makes a new cluster, Initializing, with a new startTime."""
        with self.kube._lock:
            rayjob = copy.deepcopy(self.rayjob(name))
            if bool(rayjob["spec"].get("suspend")) == suspended:
                return rayjob
            rayjob["spec"]["suspend"] = suspended
            rayjob["metadata"]["generation"] = int(rayjob["metadata"].get("generation", 1)) + 1
            self.kube._save("rayjobs", rayjob)
            if not suspended:
                return self.initialize(name)
            self._delete_cluster(rayjob)
            status = {k: v for k, v in (rayjob.get("status") or {}).items()
                      if k not in ("rayClusterName", "dashboardURL", "jobId", "message", "reason", "rayClusterStatus")}
            rayjob = self.rayjob(name)
            rayjob["status"] = {**status, "jobStatus": "", "jobDeploymentStatus": "Suspended"}
            return self.kube._save("rayjobs", rayjob)

    def shut_down(self, name: str) -> None:
        """`ttlSecondsAfterFinished` after the end (`shutdownAfterJobFinishes`): the Ray cluster is deleted,
        its head Pod with it; the submitter Job stays until the RayJob goes."""
        with self.kube._lock:
            rayjob = self.rayjob(name)
            if (rayjob.get("status") or {}).get("jobDeploymentStatus") not in ("Complete", "Failed"):
                raise ValueError(f"rayjob {name} has not finished: KubeRay keeps its cluster")
            self._delete_cluster(rayjob, submitter=False)

    def _delete_cluster(self, rayjob: dict[str, Any], *, submitter: bool = True) -> None:
        name, cluster = rayjob["metadata"]["name"], (rayjob.get("status") or {}).get("rayClusterName")
        if submitter and self.kube.get("jobs", self.namespace, name) is not None:
            self.kube._delete(RESOURCES["jobs"], self.namespace, name, "Background")
        for pod in self.kube.list("pods", self.namespace, labels={"ray.io/cluster": cluster}) if cluster else []:
            self.kube._delete(RESOURCES["pods"], self.namespace, pod["metadata"]["name"], "Background")

    def _refuse_suspended(self, name: str) -> None:
        if self.rayjob(name)["spec"].get("suspend"):
            raise ValueError(f"rayjob {name} is suspended: KubeRay creates no cluster and no submitter for it")

    def run(self, name: str) -> dict[str, Any]:
        """The cluster is up (head Pod Running), the submitter Job runs, the Ray job RUNNING."""
        with self.kube._lock:
            self._refuse_suspended(name)
            rayjob = self.rayjob(name)
            cluster = (rayjob.get("status") or {}).get("rayClusterName")
            if cluster is None:
                cluster = f"{name}-" + "".join(random.choices(POD_SUFFIX_ALPHABET, k=5))
                self._head_pod(rayjob, cluster)
            self._submitter(rayjob)
            self.kube.start_job(self.namespace, name)
            return self._status(name, jobDeploymentStatus="Running", jobStatus="RUNNING", rayClusterName=cluster,
                                startTime=now(), jobId=f"{name}-{random.randint(10000, 99999)}",
                                dashboardURL=f"{cluster}-head-svc.{self.namespace}.svc.cluster.local:8265")

    def initialize(self, name: str) -> dict[str, Any]:
        """The cluster is starting (head Pod Running, not ready): Initializing, no submitter Job yet."""
        with self.kube._lock:
            self._refuse_suspended(name)
            rayjob = self.rayjob(name)
            cluster = f"{name}-" + "".join(random.choices(POD_SUFFIX_ALPHABET, k=5))
            self._head_pod(rayjob, cluster)
            return self._status(name, jobDeploymentStatus="Initializing", rayClusterName=cluster, startTime=now())

    def succeed(self, name: str, *, logs: str = "") -> dict[str, Any]:
        self._ensure_running(name)
        self.kube.succeed_job(self.namespace, name, logs=logs)
        return self._status(name, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED", endTime=now(),
                            message="Job finished successfully.", succeeded=1)

    def fail(self, name: str, *, logs: str = "", message: str = "Job entrypoint command failed with exit code 1, "
             "last available logs (truncated to 20,000 chars):\nTraceback (most recent call last): ...") -> dict:
        self._ensure_running(name)
        self.kube.fail_job(self.namespace, name, logs=logs)
        return self._status(name, jobDeploymentStatus="Failed", jobStatus="FAILED", endTime=now(),
                            reason="AppFailed", message=message, failed=1)

    def deadline(self, name: str) -> dict[str, Any]:
        """Past `activeDeadlineSeconds`: Failed with reason DeadlineExceeded (the Ray job still RUNNING, or the
        cluster still Initializing: then there is no submitter)."""
        self._refuse_suspended(name)
        if not (self.rayjob(name).get("status") or {}).get("jobDeploymentStatus"):
            self.run(name)
        spec = self.rayjob(name)["spec"]
        start = self.rayjob(name)["status"]["startTime"]
        return self._status(name, jobDeploymentStatus="Failed", endTime=now(), reason="DeadlineExceeded",
                            message=f"The RayJob has passed the activeDeadlineSeconds. StartTime: {start}. "
                                    f"ActiveDeadlineSeconds: {spec.get('activeDeadlineSeconds')}")

    def head_pod(self, name: str) -> dict[str, Any] | None:
        cluster = (self.rayjob(name).get("status") or {}).get("rayClusterName")
        found = self.kube.list("pods", self.namespace, labels={"ray.io/cluster": cluster, "ray.io/node-type": "head"})
        return found[0] if found else None

    def _ensure_running(self, name: str) -> None:
        self._refuse_suspended(name)
        if (self.rayjob(name).get("status") or {}).get("jobDeploymentStatus") != "Running":
            self.run(name)

    def _status(self, name: str, **changes: Any) -> dict[str, Any]:
        with self.kube._lock:
            rayjob = self.rayjob(name)
            status = {"failed": 0, "succeeded": 0, **(rayjob.get("status") or {}), **changes}
            status["observedGeneration"] = rayjob["metadata"].get("generation", 1)
            rayjob["status"] = status
            return self.kube._save("rayjobs", rayjob)

    def _owner(self, rayjob: dict[str, Any]) -> list[dict[str, Any]]:
        return [{"apiVersion": "ray.io/v1", "kind": "RayJob", "name": rayjob["metadata"]["name"],
                 "uid": rayjob["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]

    def _head_pod(self, rayjob: dict[str, Any], cluster: str) -> None:
        """The cluster's Pods, as KubeRay makes them: the head, then each worker group's `replicas` workers
        (`<cluster>-<group>-worker-<suffix>`, `ray.io/node-type=worker`, `ray.io/group=<group>`)."""
        spec = rayjob["spec"]["rayClusterSpec"]
        self._node_pod(rayjob, cluster, spec["headGroupSpec"]["template"], "head", "headgroup", f"{cluster}-head-")
        for group in spec.get("workerGroupSpecs") or []:
            for _ in range(int(group.get("replicas") or 0)):
                self._node_pod(rayjob, cluster, group["template"], "worker", group["groupName"],
                               f"{cluster}-{group['groupName']}-worker-")

    def _node_pod(self, rayjob: dict[str, Any], cluster: str, template: dict[str, Any], node_type: str, group: str,
                  prefix: str) -> None:
        template = copy.deepcopy(template)
        template.setdefault("metadata", {})
        labels = {**template["metadata"].get("labels", {}), "ray.io/cluster": cluster, "ray.io/node-type": node_type,
                  "ray.io/group": group, "ray.io/is-ray-node": "yes"}
        spec = template["spec"]
        spec.setdefault("nodeName", "emulator-node")
        statuses = [{"name": c["name"], "image": c["image"], "ready": True, "restartCount": 0, "started": True,
                     "state": {"running": {"startedAt": now()}}} for c in spec["containers"]]
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": prefix + "".join(random.choices(POD_SUFFIX_ALPHABET, k=5)),
                            "namespace": self.namespace, "labels": labels,
                            "annotations": template["metadata"].get("annotations", {}),
                            "ownerReferences": self._owner(rayjob)},  # (really the RayCluster's, owned by the RayJob)
               "spec": spec, "status": {"phase": "Running", "containerStatuses": statuses, "startTime": now()}}
        self.kube._create(RESOURCES["pods"], self.namespace, pod, validate=False)

    def _submitter(self, rayjob: dict[str, Any]) -> None:
        """The submitter Job from `submitterPodTemplate`; KubeRay sets its command (`ray job submit`)."""
        name = rayjob["metadata"]["name"]
        if self.kube.get("jobs", self.namespace, name) is not None:
            return
        template = copy.deepcopy(rayjob["spec"].get("submitterPodTemplate") or {"spec": {"containers": [
            {"name": SUBMITTER, "image": rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"][
                "containers"][0]["image"]}], "restartPolicy": "Never"}})
        container = template["spec"]["containers"][0]
        container.setdefault("command", ["/bin/sh"])
        container.setdefault("args", ["-c", "ray job submit --address http://$RAY_DASHBOARD_ADDRESS --submission-id "
                                      "$RAY_JOB_SUBMISSION_ID -- " + rayjob["spec"]["entrypoint"]])
        job = {"apiVersion": "batch/v1", "kind": "Job",
               "metadata": {"name": name, "namespace": self.namespace, "ownerReferences": self._owner(rayjob),
                            "labels": {"ray.io/originated-from-crd": "RayJob", "ray.io/originated-from-cr-name": name,
                                       "app.kubernetes.io/created-by": "kuberay-operator"}},
               "spec": {"backoffLimit": (rayjob["spec"].get("submitterConfig") or {}).get("backoffLimit", 2),
                        "template": template}}
        self.kube._create(RESOURCES["jobs"], self.namespace, job)
