"""The KubeRay side of the test bed: `ray.io/v1` RayJobs served through the official client's
CustomObjectsApi (create, get, list, watch, patch, delete; status written as KubeRay's operator writes
it, with its submitter Job and head Pod), validated against KubeRay v1.7.0's CRD, and "not installed";
plus the pure reading of a RayJob's status (`bot.core.jobs.ray_outcome`)."""
from __future__ import annotations

import asyncio
import copy
from typing import Any

import kubernetes.client
import kubernetes.watch
import pytest
from kubernetes.client import ApiException

from bot.core import jobs
from tests.emulators.kube import KubeEmulator
from tests.emulators.kuberay import KubeRay

NS = "flops"
RAY = ("ray.io", "v1", NS, "rayjobs")


def rayjob(name: str) -> dict[str, Any]:
    pod = {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.40.0"}]}
    return {"apiVersion": "ray.io/v1", "kind": "RayJob",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "flops-bot"}},
            "spec": {"entrypoint": "python -m regression", "submissionMode": "K8sJobMode",
                     "rayClusterSpec": {"rayVersion": "2.40.0",
                                        "headGroupSpec": {"rayStartParams": {}, "template": {"spec": pod}}}}}


def test_ray_outcome_reads_the_deployment_status_and_the_ray_jobs() -> None:
    def of(**status: str) -> jobs.Outcome:
        return jobs.outcome({"kind": "RayJob", "status": status})
    assert of() == jobs.Outcome(False) and of(jobDeploymentStatus="Running", jobStatus="RUNNING").finished is False
    assert of(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED") == jobs.Outcome(True, True, "SUCCEEDED")
    assert of(jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed", message="exit 1") == \
        jobs.Outcome(True, False, "AppFailed", "exit 1")
    assert of(jobDeploymentStatus="Failed", reason="DeadlineExceeded").reason == "DeadlineExceeded"
    assert of(jobDeploymentStatus="Complete", jobStatus="STOPPED") == jobs.Outcome(True, False, "STOPPED")
    # a Job's conditions mean nothing on a RayJob, and the other way round
    assert jobs.outcome({"status": {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}}).finished is False


async def test_rayjobs_through_custom_objects_api_with_kuberays_status(kube: KubeEmulator) -> None:
    api = kubernetes.client.ApiClient(kube.client_configuration())
    custom = kubernetes.client.CustomObjectsApi(api)
    try:
        listing = await asyncio.to_thread(custom.list_namespaced_custom_object, *RAY)
        watcher = kubernetes.watch.Watch()
        events: list[dict[str, Any]] = []

        def stream() -> None:
            for event in watcher.stream(custom.list_namespaced_custom_object, *RAY, deserialize=False, timeout_seconds=5,
                                        resource_version=listing["metadata"]["resourceVersion"],
                                        label_selector="app.kubernetes.io/managed-by=flops-bot"):
                events.append(event)
                if event["type"] == "DELETED":
                    watcher.stop()

        watching = asyncio.create_task(asyncio.to_thread(stream))
        created = await asyncio.to_thread(custom.create_namespaced_custom_object, *RAY, rayjob("r1"))
        assert created["metadata"]["uid"] and created["kind"] == "RayJob"
        patched = await asyncio.to_thread(custom.patch_namespaced_custom_object, *RAY, "r1",
                                          {"metadata": {"annotations": {"flops.dev/reported": "success"}}})
        assert patched["metadata"]["annotations"] == {"flops.dev/reported": "success"}
        kuberay = KubeRay(kube)
        kuberay.succeed("r1", logs="done\n")
        got = await asyncio.to_thread(custom.get_namespaced_custom_object, *RAY, "r1")
        assert (got["status"]["jobDeploymentStatus"], got["status"]["jobStatus"]) == ("Complete", "SUCCEEDED")
        [submitter] = kube.list("jobs", NS)
        assert submitter["metadata"]["name"] == "r1" and submitter["status"]["succeeded"] == 1
        assert submitter["metadata"]["labels"]["ray.io/originated-from-crd"] == "RayJob"
        assert kuberay.head_pod("r1") is not None
        await asyncio.to_thread(custom.delete_namespaced_custom_object, *RAY, "r1", propagation_policy="Background")
        await asyncio.wait_for(watching, 10)
        assert [e["type"] for e in events][:2] == ["ADDED", "MODIFIED"] and events[-1]["type"] == "DELETED"
        assert kube.list("jobs", NS) == [] and kube.list("pods", NS) == []  # owned: gone with it
    finally:
        api.close()


async def test_bodies_are_checked_against_the_crd_and_a_missing_crd_answers_404(kube: KubeEmulator) -> None:
    api = kubernetes.client.ApiClient(kube.client_configuration())
    custom = kubernetes.client.CustomObjectsApi(api)
    try:
        typo = copy.deepcopy(rayjob("r2"))
        typo["spec"]["shutdownAfterJobFinish"] = True  # missing an s: the API server would prune it silently
        with pytest.raises(ApiException) as refused:
            await asyncio.to_thread(custom.create_namespaced_custom_object, *RAY, typo)
        assert refused.value.status == 422 and "shutdownAfterJobFinish" in str(refused.value.body)
        long = rayjob("r" * 48)
        with pytest.raises(ApiException, match="47 characters"):
            await asyncio.to_thread(custom.create_namespaced_custom_object, *RAY, long)
        kube.missing.add("rayjobs")
        with pytest.raises(ApiException) as missing:
            await asyncio.to_thread(custom.create_namespaced_custom_object, *RAY, rayjob("r3"))
        assert missing.value.status == 404
    finally:
        api.close()


async def test_a_suspended_rayjob_gets_no_cluster_and_kueue_moves_it_as_kuberay_answers(kube: KubeEmulator) -> None:
    """Kueue's RayJob integration on the emulator: created suspended, the operator makes nothing (Suspended);
    admitted, a cluster with a new startTime; evicted, cluster and submitter deleted, status reset, the old
    startTime kept (as rayjob_controller.go does); a Workload labelled with the RayJob's uid throughout."""
    from tests.emulators.kueue import JOB_UID_LABEL, QUEUE_LABEL, Kueue
    body = rayjob("r2")
    body["metadata"]["labels"][QUEUE_LABEL] = "gpu"
    body["spec"].update(suspend=True, shutdownAfterJobFinishes=True)
    kube.put_object(body)
    kuberay, kueue = KubeRay(kube), Kueue(kube)
    assert kuberay.observe("r2")["status"]["jobDeploymentStatus"] == "Suspended"
    for start in (kuberay.run, kuberay.initialize, kuberay.deadline):
        with pytest.raises(ValueError, match="suspended"):
            start("r2")
    assert kube.list("pods", NS) == [] and kube.list("jobs", NS) == []
    workload = kueue.pending("r2")
    assert workload["metadata"]["labels"][JOB_UID_LABEL] == kuberay.rayjob("r2")["metadata"]["uid"]
    assert [p["name"] for p in workload["spec"]["podSets"]] == ["head", "submitter"]
    kueue.admit("r2")
    admitted = kuberay.rayjob("r2")
    assert admitted["spec"]["suspend"] is False and admitted["status"]["jobDeploymentStatus"] == "Initializing"
    assert kuberay.head_pod("r2") is not None
    running = kuberay.run("r2")
    assert kube.list("jobs", NS)[0]["metadata"]["name"] == "r2"
    kueue.evict("r2")
    evicted = kuberay.rayjob("r2")
    assert evicted["spec"]["suspend"] is True and evicted["status"]["jobDeploymentStatus"] == "Suspended"
    assert "rayClusterName" not in evicted["status"] and evicted["status"]["jobStatus"] == ""
    assert evicted["status"]["startTime"] == running["status"]["startTime"]  # stale until the next admission
    assert kube.list("pods", NS) == [] and kube.list("jobs", NS) == []
    conditions = {c["type"]: c["status"] for c in kueue.workload("r2")["status"]["conditions"]}
    assert (conditions["Evicted"], conditions["Admitted"]) == ("True", "False")
