"""The Kueue side of the test bed: the emulator's suspend semantics (Job controller, 1.31) and
`kueue.x-k8s.io/v1beta1` Workloads read through the official client; and the pure reading of a
Workload (`bot.core.jobs.kueue`)."""
from __future__ import annotations

import asyncio
from typing import Any

import kubernetes.client
import pytest

from bot.core.jobs import kueue
from tests.emulators.kube import KubeEmulator
from tests.emulators.kueue import JOB_UID_LABEL, Kueue

NS = "flops"


def job(name: str, queue: str | None = "gpu") -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "labels": {}},
                            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
                                {"name": "main", "image": "busybox:1.36"}]}}}}
    return kueue.enqueue(body, queue)


def test_enqueue_suspends_and_labels_only_with_a_queue() -> None:
    queued = job("a")
    assert queued["spec"]["suspend"] is True and queued["metadata"]["labels"][kueue.QUEUE_LABEL] == "gpu"
    plain = job("b", None)
    assert "suspend" not in plain["spec"] and kueue.QUEUE_LABEL not in plain["metadata"]["labels"]


def test_admission_reads_kueues_conditions_and_multikueue_placement() -> None:
    assert kueue.admission(None) == kueue.Admission()
    waiting = {"status": {"conditions": [{"type": "QuotaReserved", "status": "False", "reason": "Pending",
                                          "message": "insufficient quota"}]}}
    assert kueue.admission(waiting) == kueue.Admission(reason="insufficient quota")
    evicted = {"status": {"conditions": [{"type": "Evicted", "status": "True", "reason": "Preempted",
                                          "message": "Preempted to accommodate a workload"},
                                         {"type": "Admitted", "status": "False"}]}}
    assert kueue.admission(evicted).evicted == "Preempted to accommodate a workload"
    remote = {"status": {"conditions": [{"type": "QuotaReserved", "status": "True"},
                                        {"type": "Admitted", "status": "True"}],
                         "admissionChecks": [{"name": "mk", "state": "Ready",
                                              "message": 'The workload got reservation on "worker-2"'}]}}
    assert kueue.admission(remote) == kueue.Admission(admitted=True, cluster="worker-2")
    named = {"status": {"clusterName": "worker-3", **remote["status"]}}
    assert kueue.admission(named).cluster == "worker-3"


async def test_suspended_jobs_start_no_pods_and_resume_with_a_new_start_time(kube: KubeEmulator) -> None:
    api = kubernetes.client.ApiClient(kube.client_configuration())
    batch, custom = kubernetes.client.BatchV1Api(api), kubernetes.client.CustomObjectsApi(api)
    try:
        await asyncio.to_thread(batch.create_namespaced_job, NS, job("train"))
        with pytest.raises(ValueError, match="suspended"):
            kube.start_job(NS, "train")
        queue = Kueue(kube)
        queue.pending("train", "insufficient quota")
        uid = kube.get("jobs", NS, "train")["metadata"]["uid"]
        listed = await asyncio.to_thread(custom.list_namespaced_custom_object, "kueue.x-k8s.io", "v1beta1", NS,
                                         "workloads", label_selector=f"{JOB_UID_LABEL}={uid}")
        [workload] = listed["items"]
        assert workload["spec"]["queueName"] == "gpu"
        assert workload["metadata"]["ownerReferences"][0]["uid"] == uid
        assert kueue.admission(workload).reason == "insufficient quota"

        queue.admit("train")
        admitted = kube.get("jobs", NS, "train")
        assert admitted["spec"]["suspend"] is False and admitted["status"]["startTime"]
        kube.start_job(NS, "train")
        assert len(kube.list("pods", NS, labels={"job-name": "train"})) == 1

        queue.evict("train")
        evicted = kube.get("jobs", NS, "train")
        assert evicted["spec"]["suspend"] is True and "startTime" not in evicted["status"]
        assert {c["type"]: c["status"] for c in evicted["status"]["conditions"]} == {"Suspended": "True"}
        assert kube.list("pods", NS, labels={"job-name": "train"}) == []  # deleted, not failed
        assert kueue.admission(queue.workload("train")).evicted

        queue.finish_elsewhere("train", cluster="worker-1")  # MultiKueue: status mirrored, no Pod here
        done = kube.get("jobs", NS, "train")
        assert done["status"]["succeeded"] == 1 and kube.list("pods", NS, labels={"job-name": "train"}) == []
        assert queue.workload("train")["status"]["clusterName"] == "worker-1"
    finally:
        api.close()
