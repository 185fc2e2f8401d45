"""The Kubernetes emulator, driven by the official client exactly as the bot drives it (in threads)."""
from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes.client
import kubernetes.config
import kubernetes.watch
import pytest
from kubernetes.client import ApiException

from tests.emulators.kube import (
    KubeEmulator,
    json_patch,
    merge_patch,
    parse_label_selector,
)

NS = "flops"


@pytest.fixture
async def kube() -> AsyncIterator[KubeEmulator]:
    emulator = KubeEmulator()
    await emulator.start()
    yield emulator
    await emulator.stop()
    assert emulator.errors == []


class Client:
    """The official client against the emulator; every call in a thread."""

    def __init__(self, configuration: kubernetes.client.Configuration) -> None:
        self.api = kubernetes.client.ApiClient(configuration)
        self.batch = kubernetes.client.BatchV1Api(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        self.networking = kubernetes.client.NetworkingV1Api(self.api)

    async def __call__(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(method, *args, **kwargs)

    def plain(self, model: Any) -> Any:
        return self.api.sanitize_for_serialization(model)


@pytest.fixture
def k8s(kube: KubeEmulator) -> Client:
    client = Client(kube.client_configuration())
    yield client
    client.api.close()


def job_body(name: str, labels: dict[str, str] | None = None, containers: list[str] | None = None,
             **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": labels or {}, **extra},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"labels": labels or {}},
            "spec": {"restartPolicy": "Never",
                     "containers": [{"name": c, "image": f"registry.example/{c}:1"} for c in containers or ["main"]]},
        }},
    }


async def wait_until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------- create / get


async def test_create_sets_server_metadata_and_get_round_trips(kube: KubeEmulator, k8s: Client) -> None:
    created = await k8s(k8s.batch.create_namespaced_job, NS, job_body("build-1", {"app": "x"}))
    assert isinstance(created, kubernetes.client.V1Job)
    meta = created.metadata
    assert (meta.name, meta.namespace, meta.generation) == ("build-1", NS, 1)
    assert re.fullmatch(r"[0-9a-f-]{36}", meta.uid)
    assert int(meta.resource_version) > 0 and meta.creation_timestamp is not None
    raw = kube.get("jobs", NS, "build-1")
    assert raw["status"] == {}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", raw["metadata"]["creationTimestamp"])
    assert raw["spec"]["template"]["metadata"]["labels"]["job-name"] == "build-1"
    fetched = await k8s(k8s.batch.read_namespaced_job, "build-1", NS)
    assert fetched.metadata.uid == meta.uid
    assert ("POST", "/apis/batch/v1/namespaces/flops/jobs") in kube.requests

    second = await k8s(k8s.batch.create_namespaced_job, NS, job_body("build-2"))
    assert int(second.metadata.resource_version) > int(meta.resource_version)  # one global counter


async def test_create_conflict_not_found_and_generate_name(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("dup"))
    with pytest.raises(ApiException) as conflict:
        await k8s(k8s.batch.create_namespaced_job, NS, job_body("dup"))
    assert conflict.value.status == 409
    status = json.loads(conflict.value.body)
    assert (status["kind"], status["status"], status["reason"], status["code"]) == ("Status", "Failure",
                                                                                 "AlreadyExists", 409)
    with pytest.raises(ApiException) as missing:
        await k8s(k8s.batch.read_namespaced_job, "nope", NS)
    assert missing.value.status == 404 and json.loads(missing.value.body)["reason"] == "NotFound"

    body = job_body("")
    body["metadata"] = {"generateName": "run-"}
    generated = await k8s(k8s.batch.create_namespaced_job, NS, body)
    assert re.fullmatch(r"run-[a-z0-9]{5}", generated.metadata.name)


@pytest.mark.parametrize("name", ["Bad_Name", "x" * 64, "-leading", "with.dot"])
async def test_invalid_job_names_are_rejected(k8s: Client, name: str) -> None:
    with pytest.raises(ApiException) as invalid:
        await k8s(k8s.batch.create_namespaced_job, NS, job_body(name))
    assert invalid.value.status == 422
    assert json.loads(invalid.value.body)["reason"] == "Invalid"


async def test_invalid_job_specs_are_rejected(kube: KubeEmulator, k8s: Client) -> None:
    no_image = job_body("no-image")
    del no_image["spec"]["template"]["spec"]["containers"][0]["image"]
    no_containers = job_body("no-containers")
    no_containers["spec"]["template"]["spec"]["containers"] = []
    restart_always = job_body("always")
    restart_always["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    bad_label = job_body("bad-label", {"flops.dev/run": "x" * 64})
    bad_annotation = job_body("bad-annotation", annotations={"n": 1})
    wrong_type = job_body("wrong-type")
    wrong_type["spec"]["backoffLimit"] = "three"
    for body in (no_image, no_containers, restart_always, bad_label):
        with pytest.raises(ApiException) as invalid:
            await k8s(k8s.batch.create_namespaced_job, NS, body)
        assert invalid.value.status == 422, body["metadata"]["name"]
    # wrong types never leave the (pydantic) client; the server rejects them too (schema check)
    headers = {"Authorization": f"Bearer {kube.token}"}
    async with aiohttp.ClientSession() as session:
        for body in (bad_annotation, wrong_type):
            async with session.post(f"{kube.url}/apis/batch/v1/namespaces/{NS}/jobs", json=body,
                                    headers=headers) as response:
                assert response.status == 422, body["metadata"]["name"]
                assert (await response.json())["reason"] == "Invalid"
    assert kube.list("jobs") == []


# ---------------------------------------------------------------------------------------------- list


async def test_list_with_label_and_field_selectors(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("a", {"kind": "build", "pr": "1"}))
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("b", {"kind": "build", "pr": "2"}))
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("c", {"kind": "regression"}))
    kube.put_object({**job_body("other-ns", {"kind": "build"}), "metadata": {
        "name": "elsewhere", "namespace": "other", "labels": {"kind": "build"}}})

    async def names(**selectors: str) -> list[str]:
        listing = await k8s(k8s.batch.list_namespaced_job, NS, **selectors)
        return [job.metadata.name for job in listing.items]

    assert await names() == ["a", "b", "c"]
    assert await names(label_selector="kind=build") == ["a", "b"]
    assert await names(label_selector="kind==build,pr=2") == ["b"]
    assert await names(label_selector="kind!=build") == ["c"]
    assert await names(label_selector="pr in (1, 3)") == ["a"]
    assert await names(label_selector="pr notin (1)") == ["b", "c"]
    assert await names(label_selector="pr") == ["a", "b"]
    assert await names(label_selector="!pr") == ["c"]
    assert await names(label_selector="kind in (build,regression),!pr") == ["c"]
    assert await names(field_selector="metadata.name=b") == ["b"]
    first = await k8s(k8s.batch.list_namespaced_job, NS, label_selector="kind=build", limit=1)  # a chunked list
    rest = await k8s(k8s.batch.list_namespaced_job, NS, label_selector="kind=build", limit=1,
                     _continue=first.metadata._continue)
    assert [j.metadata.name for j in first.items + rest.items] == ["a", "b"] and rest.metadata._continue is None
    assert first.metadata.resource_version == rest.metadata.resource_version

    raw = await k8s(k8s.batch.list_namespaced_job, NS, _preload_content=False)
    listing = json.loads(raw.data)
    assert listing["kind"] == "JobList" and listing["apiVersion"] == "batch/v1"
    assert listing["metadata"]["resourceVersion"] == kube.resource_version
    assert "kind" not in listing["items"][0]  # like the API server: list items carry no kind
    everywhere = await k8s(k8s.batch.list_job_for_all_namespaces, label_selector="kind=build")
    assert {j.metadata.name for j in everywhere.items} == {"a", "b", "elsewhere"}
    assert [j["metadata"]["name"] for j in kube.list("jobs", NS, labels={"kind": "build"})] == ["a", "b"]

    with pytest.raises(ApiException) as bad:
        await k8s(k8s.batch.list_namespaced_job, NS, label_selector="a in b")
    assert bad.value.status == 400


def test_label_selector_parser() -> None:
    match = parse_label_selector("a=1, b != 2, c in (x, y), d notin (z), e, !f")
    assert match({"a": "1", "c": "x", "e": ""})
    assert match({"a": "1", "b": "3", "c": "y", "d": "w", "e": "v"})
    assert not match({"a": "1", "b": "2", "c": "x", "e": ""})
    assert not match({"a": "1", "c": "x", "e": "", "f": ""})
    assert not match({"a": "1", "c": "q", "e": ""})


# ---------------------------------------------------------------------------------------------- watch


def _stream(k8s: Client, version: str, timeout: int, **kwargs: Any) -> list[dict[str, Any]]:
    watcher = kubernetes.watch.Watch()
    return list(watcher.stream(k8s.batch.list_namespaced_job, NS, resource_version=version, timeout_seconds=timeout,
                               deserialize=False, **kwargs))


async def test_watch_replays_history_streams_live_events_and_times_out(kube: KubeEmulator, k8s: Client) -> None:
    listing = await k8s(k8s.batch.list_namespaced_job, NS)
    version = listing.metadata.resource_version
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("first", {"flops": "yes"}))
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("unlabelled"))

    began = time.monotonic()
    task = asyncio.create_task(asyncio.to_thread(_stream, k8s, version, 1, label_selector="flops=yes"))
    await wait_until(lambda: kube.open_watches == 1)
    await k8s(k8s.batch.patch_namespaced_job, "first", NS, {"metadata": {"annotations": {"seen": "1"}}})
    kube.succeed_job(NS, "first")
    await k8s(k8s.batch.delete_namespaced_job, "first", NS, propagation_policy="Background")
    events = await asyncio.wait_for(task, 10)
    elapsed = time.monotonic() - began
    assert 0.9 <= elapsed < 5, elapsed  # ended by the server after timeoutSeconds
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "first"), ("MODIFIED", "first"), ("MODIFIED", "first"), ("DELETED", "first")]
    assert events[0]["object"]["kind"] == "Job"
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert events[2]["object"]["status"]["succeeded"] == 1
    assert kube.open_watches == 0


async def test_watch_deserialized_and_selector_transitions(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("moving", {"phase": "a"}))
    version = kube.resource_version

    def typed() -> list[tuple[str, str]]:
        watcher = kubernetes.watch.Watch()
        return [(e["type"], e["object"].metadata.name) for e in watcher.stream(
            k8s.batch.list_namespaced_job, NS, resource_version=version, timeout_seconds=1, label_selector="phase=b")]

    task = asyncio.create_task(asyncio.to_thread(typed))
    await wait_until(lambda: kube.open_watches == 1)
    await k8s(k8s.batch.patch_namespaced_job, "moving", NS, {"metadata": {"labels": {"phase": "b"}}})
    await k8s(k8s.batch.patch_namespaced_job, "moving", NS, {"metadata": {"labels": {"phase": "c"}}})
    assert await asyncio.wait_for(task, 10) == [("ADDED", "moving"), ("DELETED", "moving")]


async def test_watch_without_resource_version_starts_with_the_current_state(kube: KubeEmulator,
                                                                             k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("exists"))
    watcher = kubernetes.watch.Watch()
    events = await asyncio.to_thread(lambda: list(watcher.stream(k8s.batch.list_namespaced_job, NS,
                                                                 timeout_seconds=1, deserialize=False)))
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "exists")]


async def test_expired_resource_version_gets_410(kube: KubeEmulator, k8s: Client) -> None:
    old = kube.resource_version
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("later"))
    kube.expire_watches()
    with pytest.raises(ApiException) as gone:
        await asyncio.to_thread(lambda: list(kubernetes.watch.Watch().stream(
            k8s.batch.list_namespaced_job, NS, resource_version=old, timeout_seconds=5)))
    assert gone.value.status == 410

    # on the wire: one ERROR event carrying a Status, then the stream ends
    headers = {"Authorization": f"Bearer {kube.token}"}
    async with aiohttp.ClientSession() as session, session.get(
            f"{kube.url}/apis/batch/v1/namespaces/{NS}/jobs", params={"watch": "1", "resourceVersion": old},
            headers=headers) as response:
        lines = (await response.text()).splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert {k: event["object"][k] for k in ("kind", "code", "reason", "status")} == {
        "kind": "Status", "code": 410, "reason": "Expired", "status": "Failure"}

    # the current version is still fine
    current = kube.resource_version
    assert await asyncio.to_thread(_stream, k8s, current, 1) == []


async def test_expire_watches_ends_open_watches_with_410(kube: KubeEmulator, k8s: Client) -> None:
    version = kube.resource_version
    task = asyncio.create_task(asyncio.to_thread(_stream, k8s, version, 30, label_selector="x"))
    # a raw stream too, to see what the server sends
    headers = {"Authorization": f"Bearer {kube.token}"}
    async with aiohttp.ClientSession() as session, session.get(
            f"{kube.url}/apis/batch/v1/namespaces/{NS}/jobs",
            params={"watch": "true", "resourceVersion": version, "timeoutSeconds": "30"},
            headers=headers) as response:
        await wait_until(lambda: kube.open_watches == 2)
        kube.expire_watches()
        lines = (await asyncio.wait_for(response.text(), 10)).splitlines()
    assert [json.loads(line)["object"]["code"] for line in lines] == [410]
    with pytest.raises(Exception) as ended:  # deserialize=False: the client looks for "raw_object"
        await asyncio.wait_for(task, 10)
    assert isinstance(ended.value, (ApiException, KeyError))
    await wait_until(lambda: kube.open_watches == 0)  # the server's handler ends just after the client sees the end


# ---------------------------------------------------------------------------------------------- update / patch


async def test_patches_and_replace(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("p", {"keep": "1"}, annotations={"a": "1", "b": "2"}))
    before = kube.get("jobs", NS, "p")

    # a dict body: the client sends a strategic merge patch
    patched = await k8s(k8s.batch.patch_namespaced_job, "p", NS, {"metadata": {"annotations": {"c": "3"}}})
    assert patched.metadata.annotations == {"a": "1", "b": "2", "c": "3"}
    assert patched.metadata.generation == 1  # metadata only
    assert int(patched.metadata.resource_version) > int(before["metadata"]["resourceVersion"])

    # merge patch: null deletes
    merged = await k8s(k8s.batch.patch_namespaced_job, "p", NS, {"metadata": {"annotations": {"a": None}}},
                       _content_type="application/merge-patch+json")
    assert merged.metadata.annotations == {"b": "2", "c": "3"}
    assert kube.requests[-1] == ("PATCH", "/apis/batch/v1/namespaces/flops/jobs/p")

    # a list body: RFC 6902
    ops = [{"op": "test", "path": "/metadata/annotations/b", "value": "2"},
           {"op": "replace", "path": "/metadata/annotations/b", "value": "two"},
           {"op": "add", "path": "/metadata/annotations/flops.dev~1reported", "value": "success"},
           {"op": "remove", "path": "/metadata/annotations/c"},
           {"op": "add", "path": "/spec/backoffLimit", "value": 2}]
    result = await k8s(k8s.batch.patch_namespaced_job, "p", NS, ops)
    assert result.metadata.annotations == {"b": "two", "flops.dev/reported": "success"}
    assert result.spec.backoff_limit == 2 and result.metadata.generation == 2
    with pytest.raises(ApiException) as failed_test:
        await k8s(k8s.batch.patch_namespaced_job, "p", NS, [{"op": "test", "path": "/metadata/name", "value": "q"}])
    assert failed_test.value.status == 422

    # a no-op keeps the resourceVersion (and makes no event)
    same = await k8s(k8s.batch.patch_namespaced_job, "p", NS, {"metadata": {"annotations": {"b": "two"}}})
    assert same.metadata.resource_version == result.metadata.resource_version

    # status through the main resource is ignored; through /status it sticks
    ignored = await k8s(k8s.batch.patch_namespaced_job, "p", NS, {"status": {"active": 5}})
    assert ignored.status.active is None
    status = await k8s(k8s.batch.patch_namespaced_job_status, "p", NS, {"status": {"active": 1}})
    assert status.status.active == 1
    assert (await k8s(k8s.batch.read_namespaced_job_status, "p", NS)).status.active == 1

    # replace: resourceVersion conflicts
    current = kube.get("jobs", NS, "p")
    stale = dict(current, metadata={**current["metadata"], "resourceVersion": before["metadata"]["resourceVersion"]})
    with pytest.raises(ApiException) as conflict:
        await k8s(k8s.batch.replace_namespaced_job, "p", NS, stale)
    assert conflict.value.status == 409 and json.loads(conflict.value.body)["reason"] == "Conflict"
    current["metadata"]["labels"]["keep"] = "2"
    replaced = await k8s(k8s.batch.replace_namespaced_job, "p", NS, current)
    assert replaced.metadata.labels["keep"] == "2" and replaced.metadata.uid == before["metadata"]["uid"]
    with pytest.raises(ApiException) as missing:
        await k8s(k8s.batch.patch_namespaced_job, "nope", NS, {"metadata": {"labels": {"a": "b"}}})
    assert missing.value.status == 404


def test_patch_helpers() -> None:
    assert merge_patch({"a": {"b": 1, "c": 2}, "d": [1]}, {"a": {"b": None, "e": 3}, "d": [2]}) == {
        "a": {"c": 2, "e": 3}, "d": [2]}
    doc = {"list": [1, 3], "m": {}}
    assert json_patch(doc, [{"op": "add", "path": "/list/1", "value": 2}, {"op": "add", "path": "/list/-", "value": 4},
                            {"op": "copy", "from": "/list/0", "path": "/m/x"},
                            {"op": "move", "from": "/m/x", "path": "/y"}]) == {"list": [1, 2, 3, 4], "m": {}, "y": 1}
    assert doc == {"list": [1, 3], "m": {}}


# ---------------------------------------------------------------------------------------------- delete


async def test_delete_garbage_collects_dependents(kube: KubeEmulator, k8s: Client) -> None:
    job = await k8s(k8s.batch.create_namespaced_job, NS, job_body("owner"))
    kube.start_job(NS, "owner")
    owner_ref = {"apiVersion": "batch/v1", "kind": "Job", "name": "owner", "uid": job.metadata.uid,
                 "controller": True}
    service = await k8s(k8s.core.create_namespaced_service, NS, {
        "metadata": {"name": "owner-svc", "ownerReferences": [owner_ref]},
        "spec": {"clusterIP": "None", "selector": {"job-name": "owner"}, "ports": [{"port": 8080}]}})
    assert service.spec.ports[0].target_port == 8080
    kube.put_object({"kind": "Secret", "apiVersion": "v1", "metadata": {
        "name": "grandchild", "namespace": NS, "ownerReferences": [{
            "apiVersion": "v1", "kind": "Service", "name": "owner-svc", "uid": service.metadata.uid}]},
        "stringData": {"k": "v"}})
    await k8s(k8s.core.create_namespaced_config_map, NS, {"metadata": {"name": "unrelated"}, "data": {"x": "y"}})
    assert len(kube.list("pods", NS)) == 1

    status = await k8s(k8s.batch.delete_namespaced_job, "owner", NS, propagation_policy="Background")
    assert kube.get("jobs", NS, "owner") is None
    assert kube.list("pods", NS) == [] and kube.get("services", NS, "owner-svc") is None
    assert kube.get("secrets", NS, "grandchild") is None
    assert kube.get("configmaps", NS, "unrelated") is not None
    plain = status if isinstance(status, dict) else k8s.plain(status)
    assert plain["status"] == "Success"
    assert ("DELETE", "/apis/batch/v1/namespaces/flops/jobs/owner?propagationPolicy=Background") in kube.requests
    with pytest.raises(ApiException) as again:
        await k8s(k8s.batch.delete_namespaced_job, "owner", NS)
    assert again.value.status == 404


async def test_delete_orphans_when_asked_and_by_default_for_jobs(kube: KubeEmulator, k8s: Client) -> None:
    for name in ("orphan-explicit", "orphan-default", "foreground"):
        await k8s(k8s.batch.create_namespaced_job, NS, job_body(name))
        kube.start_job(NS, name)
    await k8s(k8s.batch.delete_namespaced_job, "orphan-explicit", NS,
              body=kubernetes.client.V1DeleteOptions(propagation_policy="Orphan"))
    await k8s(k8s.batch.delete_namespaced_job, "orphan-default", NS)
    await k8s(k8s.batch.delete_namespaced_job, "foreground", NS, propagation_policy="Foreground")
    pods = {p["metadata"]["labels"]["job-name"]: p for p in kube.list("pods", NS)}
    assert set(pods) == {"orphan-explicit", "orphan-default"}
    assert all("ownerReferences" not in p["metadata"] for p in pods.values())

    pod = next(iter(pods.values()))
    deleted = await k8s(k8s.core.delete_namespaced_pod, pod["metadata"]["name"], NS)
    assert isinstance(deleted, kubernetes.client.V1Pod)  # pods answer with the object


# ---------------------------------------------------------------------------------------------- job controller


async def test_succeed_job_shapes(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("ok", {"flops.dev/kind": "build"},
                                                            containers=["main", "sidecar"]))
    kube.start_job(NS, "ok")
    running = await k8s(k8s.batch.read_namespaced_job, "ok", NS)
    assert running.status.active == 1 and running.status.start_time is not None
    kube.succeed_job(NS, "ok", message='{"accuracy": 0.9}', logs="one\ntwo\nthree\n")

    job = await k8s(k8s.batch.read_namespaced_job, "ok", NS)
    assert [(c.type, c.status) for c in job.status.conditions] == [("SuccessCriteriaMet", "True"),
                                                                  ("Complete", "True")]
    assert job.status.succeeded == 1 and job.status.completion_time is not None and not job.status.active
    pods = (await k8s(k8s.core.list_namespaced_pod, NS, label_selector="job-name=ok")).items
    assert len(pods) == 1
    pod = pods[0]
    assert re.fullmatch(r"ok-[a-z]{5}", pod.metadata.name)
    assert pod.metadata.labels["batch.kubernetes.io/job-name"] == "ok"
    assert pod.metadata.labels["controller-uid"] == job.metadata.uid
    assert pod.metadata.labels["flops.dev/kind"] == "build"
    assert pod.metadata.owner_references[0].uid == job.metadata.uid
    assert pod.status.phase == "Succeeded"
    states = {s.name: s.state.terminated for s in pod.status.container_statuses}
    assert (states["main"].exit_code, states["main"].reason, states["main"].message) == (0, "Completed",
                                                                                      '{"accuracy": 0.9}')
    assert states["sidecar"].message is None

    log = await k8s(k8s.core.read_namespaced_pod_log, pod.metadata.name, NS, container="main", tail_lines=2)
    assert log == "two\nthree\n"
    assert await k8s(k8s.core.read_namespaced_pod_log, pod.metadata.name, NS, container="sidecar") == ""
    with pytest.raises(ApiException) as which:
        await k8s(k8s.core.read_namespaced_pod_log, pod.metadata.name, NS)
    assert which.value.status == 400  # two containers: one must be named
    with pytest.raises(ApiException) as unknown:
        await k8s(k8s.core.read_namespaced_pod_log, pod.metadata.name, NS, container="nope")
    assert unknown.value.status == 400
    headers = {"Authorization": f"Bearer {kube.token}"}
    async with aiohttp.ClientSession() as session, session.get(
            f"{kube.url}/api/v1/namespaces/{NS}/pods/{pod.metadata.name}/log",
            params={"container": "main", "tailLines": "1"}, headers=headers) as response:
        assert response.content_type == "text/plain"
        assert await response.text() == "three\n"


async def test_fail_job_shapes(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("oom", containers=["main", "uploader"]))
    kube.fail_job(NS, "oom", exit_code=137, terminated_reason="OOMKilled", logs={"main": "allocating\n"})
    job = await k8s(k8s.batch.read_namespaced_job, "oom", NS)
    assert [(c.type, c.status, c.reason) for c in job.status.conditions] == [
        ("FailureTarget", "True", "BackoffLimitExceeded"), ("Failed", "True", "BackoffLimitExceeded")]
    assert job.status.conditions[1].message == "Job has reached the specified backoff limit"
    assert job.status.failed == 1 and job.status.completion_time is None
    pod = (await k8s(k8s.core.list_namespaced_pod, NS, label_selector="job-name=oom")).items[0]
    assert pod.status.phase == "Failed"
    main = next(s for s in pod.status.container_statuses if s.name == "main").state.terminated
    assert (main.exit_code, main.reason) == (137, "OOMKilled")
    assert await k8s(k8s.core.read_namespaced_pod_log, pod.metadata.name, NS, container="main") == "allocating\n"

    await k8s(k8s.batch.create_namespaced_job, NS, job_body("slow"))
    kube.fail_job(NS, "slow", reason="DeadlineExceeded", message="Job was active longer than specified deadline",
                  container="main", termination_message="killed")
    slow = kube.get("jobs", NS, "slow")
    assert [c["reason"] for c in slow["status"]["conditions"]] == ["DeadlineExceeded", "DeadlineExceeded"]
    pod = kube.list("pods", NS, labels={"job-name": "slow"})[0]
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"] == "killed"


async def test_pod_waiting(kube: KubeEmulator, k8s: Client) -> None:
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("pulling"))
    kube.set_pod_waiting(NS, "pulling", reason="ImagePullBackOff", message="Back-off pulling image")
    pod = (await k8s(k8s.core.list_namespaced_pod, NS, label_selector="job-name=pulling")).items[0]
    assert pod.status.phase == "Pending"
    waiting = pod.status.container_statuses[0].state.waiting
    assert (waiting.reason, waiting.message) == ("ImagePullBackOff", "Back-off pulling image")
    assert (await k8s(k8s.batch.read_namespaced_job, "pulling", NS)).status.active == 1
    with pytest.raises(ApiException) as not_started:
        await k8s(k8s.core.read_namespaced_pod_log, pod.metadata.name, NS, container="main")
    assert not_started.value.status == 400
    kube.succeed_job(NS, "pulling")  # the same pod moves on
    assert len(kube.list("pods", NS)) == 1


# ---------------------------------------------------------------------------------------------- auth, config, faults


async def test_bearer_token_required(kube: KubeEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{kube.url}/apis/batch/v1/namespaces/{NS}/jobs") as response:
            assert response.status == 401
            body = await response.json()
            assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)
        async with session.get(f"{kube.url}/healthz") as response:
            assert (response.status, await response.text()) == (200, "ok")
        async with session.get(f"{kube.url}/version") as response:
            assert (await response.json())["gitVersion"] == "v1.31.0"
    wrong = kube.client_configuration()
    wrong.api_key = {"authorization": "Bearer wrong"}
    client = Client(wrong)
    with pytest.raises(ApiException) as denied:
        await client(client.batch.list_namespaced_job, NS)
    assert denied.value.status == 401
    client.api.close()


async def test_kubeconfig_loads_with_the_official_loader(kube: KubeEmulator, tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    kube.write_kubeconfig(path)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(path), client_configuration=configuration)
    assert configuration.host == kube.url
    _, active = kubernetes.config.list_kube_config_contexts(config_file=str(path))
    assert active["context"]["namespace"] == NS
    client = Client(configuration)
    assert (await client(client.batch.list_namespaced_job, NS)).items == []
    version = await client(kubernetes.client.VersionApi(client.api).get_code)
    assert (version.major, version.minor) == ("1", "31")
    namespace = await client(client.core.read_namespace, "anything")
    assert namespace.status.phase == "Active"
    await client(client.core.list_namespaced_event, NS)
    await client(kubernetes.client.CoreApi(client.api).get_api_versions)
    await client(kubernetes.client.ApisApi(client.api).get_api_versions)
    client.api.close()


async def test_fail_next_and_down(kube: KubeEmulator, k8s: Client) -> None:
    kube.fail_next("POST", r"/namespaces/flops/jobs$", 500, times=2)
    for _ in range(2):
        with pytest.raises(ApiException) as injected:
            await k8s(k8s.batch.create_namespaced_job, NS, job_body("flaky"))
        assert injected.value.status == 500
    await k8s(k8s.batch.create_namespaced_job, NS, job_body("flaky"))
    kube.fail_next("*", r"labelSelector=a=b", 429)
    with pytest.raises(ApiException) as throttled:
        await k8s(k8s.batch.list_namespaced_job, NS, label_selector="a=b")
    assert throttled.value.status == 429
    await k8s(k8s.batch.list_namespaced_job, NS, label_selector="a=b")

    kube.down = True
    with pytest.raises(ApiException) as down:
        await k8s(k8s.batch.list_namespaced_job, NS, limit=1, _request_timeout=5)
    assert down.value.status == 503
    kube.down = False
    await k8s(k8s.batch.list_namespaced_job, NS, limit=1)


async def test_secrets_configmaps_services(kube: KubeEmulator, k8s: Client) -> None:
    kube.put_object({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "creds"},
                     "stringData": {"token": "s3cret"}})
    secret = await k8s(k8s.core.read_namespaced_secret, "creds", NS)
    assert base64.b64decode(secret.data["token"]) == b"s3cret" and secret.type == "Opaque"
    await k8s(k8s.core.create_namespaced_config_map, NS, {"metadata": {"name": "cfg"}, "data": {"a": "b"}})
    await k8s(k8s.core.patch_namespaced_config_map, "cfg", NS, {"data": {"c": "d"}})
    assert kube.get("configmaps", NS, "cfg")["data"] == {"a": "b", "c": "d"}
    with pytest.raises(ApiException) as bad_service:
        await k8s(k8s.core.create_namespaced_service, NS, {"metadata": {"name": "1abc"}, "spec": {}})
    assert bad_service.value.status == 422  # services are DNS-1035 labels
    await k8s(k8s.core.delete_namespaced_config_map, "cfg", NS)
    assert kube.get("configmaps", NS, "cfg") is None


async def test_network_policies_are_served_under_networking_k8s_io(kube: KubeEmulator, k8s: Client) -> None:
    job = await k8s(k8s.batch.create_namespaced_job, NS, job_body("fl-1"))
    owner = {"apiVersion": "batch/v1", "kind": "Job", "name": "fl-1", "uid": job.metadata.uid}
    body = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "fl-1", "labels": {"flops.dev/run": "fl-1"}, "ownerReferences": [owner]},
            "spec": {"podSelector": {"matchLabels": {"flops.dev/run": "fl-1"}}, "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "client"}}}],
                                  "ports": [{"protocol": "TCP", "port": 8080}]}]}}
    created = await k8s(k8s.networking.create_namespaced_network_policy, NS, body)
    assert created.metadata.uid and created.spec.ingress[0].ports[0].port == 8080
    listed = await k8s(k8s.networking.list_namespaced_network_policy, NS, label_selector="flops.dev/run=fl-1")
    assert [p.metadata.name for p in listed.items] == ["fl-1"]
    with pytest.raises(ApiException) as again:
        await k8s(k8s.networking.create_namespaced_network_policy, NS, body)
    assert again.value.status == 409
    headers = {"Authorization": f"Bearer {kube.token}"}
    bad = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "bad"},
           "spec": {"podSelector": {}, "policyTypes": "Ingress"}}
    async with aiohttp.ClientSession(headers=headers) as session:
        async with session.post(f"{kube.url}/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies",
                                json=bad) as response:
            assert response.status == 422  # schema-checked like the others
        async with session.get(f"{kube.url}/api/v1/namespaces/{NS}/networkpolicies") as response:
            assert response.status == 404  # not in the core group
        async with session.get(f"{kube.url}/apis") as response:
            assert "networking.k8s.io" in {g["name"] for g in (await response.json())["groups"]}
    await k8s(k8s.batch.delete_namespaced_job, "fl-1", NS, propagation_policy="Background")
    assert kube.get("networkpolicies", NS, "fl-1") is None  # owned by the Job: garbage-collected


def test_usable_from_plain_synchronous_code(tmp_path: Path) -> None:
    """Own thread, own loop: blocking client calls from any thread (even without a running loop)."""
    with KubeEmulator() as kube:
        client = Client(kube.client_configuration())
        client.batch.create_namespaced_job(NS, job_body("sync"))
        kube.succeed_job(NS, "sync")
        assert client.batch.read_namespaced_job("sync", NS).status.succeeded == 1
        results: list[int] = []
        thread = threading.Thread(target=lambda: results.append(len(client.batch.list_namespaced_job(NS).items)))
        thread.start()
        thread.join(10)
        assert results == [1]
        client.api.close()
    assert kube.url  # stopped cleanly


async def test_blocking_calls_on_the_event_loop_do_not_deadlock(kube: KubeEmulator, k8s: Client) -> None:
    k8s.batch.create_namespaced_job(NS, job_body("blocking"))  # deliberately not in a thread
    assert kube.get("jobs", NS, "blocking") is not None
