"""The Kubernetes side: one ApiClient, every call run in a thread (the client is synchronous).

Only the verbs listed here are used by the bot; `deploy/base/rbac.yaml` grants exactly these
(tests/test_deploy_manifests.py checks the two agree).
"""
from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import kubernetes.client
import kubernetes.config
from kubernetes.client import ApiException

from bot.core import jobs
from bot.core.jobs import kueue
from bot.core.jobs import ray as rayjobs
from bot.platform.settings import Settings

SECRET_TTL = 60.0  # seconds a Secret read for masking is reused (a rotated key is masked a minute later)


def client_configuration(settings: Settings) -> kubernetes.client.Configuration:
    configuration = kubernetes.client.Configuration()
    if settings.kubeconfig is None:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
    else:
        kubernetes.config.load_kube_config(config_file=settings.kubeconfig, client_configuration=configuration)
    return configuration


class Kube:
    """Namespaced access to Jobs, Pods, Services, NetworkPolicies (and, read-only, the Jobs' Secrets),
    async on top of the official client."""

    def __init__(self, configuration: kubernetes.client.Configuration, namespace: str) -> None:
        self.api_client = kubernetes.client.ApiClient(configuration)
        self.batch = kubernetes.client.BatchV1Api(self.api_client)
        self.core = kubernetes.client.CoreV1Api(self.api_client)
        self.networking = kubernetes.client.NetworkingV1Api(self.api_client)
        self.custom = kubernetes.client.CustomObjectsApi(self.api_client)
        self.coordination = kubernetes.client.CoordinationV1Api(self.api_client)
        self.namespace = namespace
        self._secrets: dict[str, tuple[float, dict[str, str]]] = {}

    def close(self) -> None:
        self.api_client.close()

    async def ping(self) -> None:
        """Readiness: the API answers and lets us list our Jobs."""
        await asyncio.to_thread(self.batch.list_namespaced_job, self.namespace, limit=1,
                                label_selector=jobs.SELECTOR, _request_timeout=5)

    async def create_job(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Job (or, for a `RayJob` body, a RayJob); None when one of that name exists (a redelivery,
        a restart): no-op. A RayJob where KubeRay's CRD is not installed raises ApiException 404."""
        if rayjobs.is_rayjob(body):
            return await _call(self.custom.create_namespaced_custom_object, *self._ray, body, none_on=(409,))
        return await self._create(self.batch.create_namespaced_job, body)

    @property
    def _ray(self) -> tuple[str, str, str, str]:
        """The CustomObjectsApi arguments that address the namespace's RayJobs."""
        return rayjobs.GROUP, rayjobs.VERSION, self.namespace, rayjobs.PLURAL

    async def create_service(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._create(self.core.create_namespaced_service, body)

    async def create_network_policy(self, body: dict[str, Any]) -> dict[str, Any] | None:
        return await self._create(self.networking.create_namespaced_network_policy, body)

    async def _create(self, method: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        return await _call(method, self.namespace, body, none_on=(409,))

    async def list_jobs(self, selector: str, kind: str = jobs.JOB) -> list[dict[str, Any]]:
        return (await self.list_jobs_page(selector, kind=kind)).get("items") or []  # type: ignore[no-any-return]

    async def list_jobs_page(self, selector: str, limit: int | None = None, page: str | None = None,
                             kind: str = jobs.JOB) -> dict[str, Any]:
        """One page of a Job (or RayJob) list as the API server sends it (`items`, `metadata.resourceVersion`,
        `metadata.continue`), each item stamped with its `kind`; without `limit`, all of them. RayJobs
        where KubeRay is not installed (404) or the bot may not list them (403): an empty list, version ""."""
        if kind == jobs.RAYJOB:
            result = await _call(self.custom.list_namespaced_custom_object, *self._ray, label_selector=selector,
                                 limit=limit, _continue=page, none_on=(403, 404))
            listing = result or {"metadata": {"resourceVersion": ""}, "items": []}
        else:
            listing = _json(await asyncio.to_thread(self.batch.list_namespaced_job, self.namespace,
                                                    label_selector=selector, limit=limit, _continue=page,
                                                    _preload_content=False))
        for item in listing.get("items") or []:
            _stamp(item, kind)
        return listing  # type: ignore[no-any-return]

    async def get_job(self, name: str, kind: str = jobs.JOB) -> dict[str, Any] | None:
        """The Job (or RayJob) `name`; None when there is none (or no RayJob CRD)."""
        if kind == jobs.RAYJOB:
            return _stamp(await _call(self.custom.get_namespaced_custom_object, *self._ray, name, none_on=(404,)),
                          kind)
        return _stamp(await _call(self.batch.read_namespaced_job, name, self.namespace, none_on=(404,)), kind)

    def watch_method(self, kind: str = jobs.JOB) -> tuple[Any, tuple[Any, ...]]:
        """The list call a watch of `kind` streams, and its positional arguments."""
        if kind == jobs.RAYJOB:
            return self.custom.list_namespaced_custom_object, self._ray
        return self.batch.list_namespaced_job, (self.namespace,)

    async def annotate_job(self, name: str, annotations: dict[str, str | None],
                           labels: dict[str, str] | None = None, kind: str = jobs.JOB) -> None:
        body: dict[str, Any] = {"metadata": {"annotations": annotations}}
        if labels:
            body["metadata"]["labels"] = labels
        await asyncio.to_thread(*self._patch(name, body, kind))

    def _patch(self, name: str, body: dict[str, Any], kind: str) -> tuple[Any, ...]:
        """The client call (and its arguments) of a merge patch of Job or RayJob `name`."""
        if kind == jobs.RAYJOB:
            return self.custom.patch_namespaced_custom_object, *self._ray, name, body
        return self.batch.patch_namespaced_job, name, self.namespace, body

    async def claim_job(self, name: str, resource_version: str, annotations: dict[str, str | None],
                        labels: dict[str, str] | None = None, kind: str = jobs.JOB) -> dict[str, Any] | None:
        """Annotate the Job only if it is still at `resource_version` (an optimistic update); the Job as
        written, or None when it changed since it was read (409) or is gone (404): of two replicas claiming
        one Job only one succeeds."""
        body: dict[str, Any] = {"metadata": {"resourceVersion": resource_version, "annotations": annotations}}
        if labels:
            body["metadata"]["labels"] = labels
        return _stamp(await _call(*self._patch(name, body, kind), none_on=(404, 409)), kind)

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A coordination.k8s.io/v1 Lease (in the bot's own namespace, not the Jobs'); None when there is none."""
        return await _call(self.coordination.read_namespaced_lease, name, namespace, none_on=(404,),
                           _request_timeout=5)

    async def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create a Lease; None when one of that name exists (another replica created it first)."""
        return await _call(self.coordination.create_namespaced_lease, namespace, body, none_on=(409,),
                           _request_timeout=5)

    async def replace_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """Replace a Lease; `body` carries the resourceVersion it was read at. None on a conflict (409):
        someone else wrote it since."""
        return await _call(self.coordination.replace_namespaced_lease, body["metadata"]["name"], namespace, body,
                           none_on=(409,), _request_timeout=5)

    async def delete_lease(self, namespace: str, name: str, resource_version: str) -> bool:
        """Delete a Lease only if it is still at `resource_version`; False when it changed since (409) or is gone."""
        options = {"preconditions": {"resourceVersion": resource_version}}
        return await _call(self.coordination.delete_namespaced_lease, name, namespace, body=options,
                           _request_timeout=5, none_on=(404, 409)) is not None

    async def delete_job(self, name: str, kind: str = jobs.JOB) -> bool:
        """Delete a Job and (in the background) its Pods, or a RayJob and with it its Ray cluster and
        submitter Job. False when it was already gone."""
        method: Any = self.custom.delete_namespaced_custom_object if kind == jobs.RAYJOB \
            else self.batch.delete_namespaced_job
        args = (*self._ray, name) if kind == jobs.RAYJOB else (name, self.namespace)
        try:
            await asyncio.to_thread(method, *args, propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def delete_service(self, name: str) -> None:
        await _delete_if_there(self.core.delete_namespaced_service, name, self.namespace)

    async def delete_network_policy(self, name: str) -> None:
        await _delete_if_there(self.networking.delete_namespaced_network_policy, name, self.namespace)

    async def job_pods(self, job_name: str) -> list[dict[str, Any]]:
        return await self.pods(f"job-name={job_name}")

    async def pods(self, selector: str) -> list[dict[str, Any]]:
        pods = await asyncio.to_thread(self.core.list_namespaced_pod, self.namespace,
                                       label_selector=selector, _preload_content=False)
        return _json(pods).get("items") or []  # type: ignore[no-any-return]

    async def pod_log(self, pod: str, container: str, tail_lines: int = 50) -> str:
        try:
            text = await asyncio.to_thread(self.core.read_namespaced_pod_log, pod, self.namespace,
                                           container=container, tail_lines=tail_lines)
        except ApiException as exc:
            if exc.status in (400, 404):
                return ""
            raise
        return str(text)

    async def whole_log(self, pod: str, container: str, limit_bytes: int, tail_lines: int | None = None) -> str | None:
        """The container's log (its last `tail_lines` lines when given), at most `limit_bytes` of it; None when
        the Pod or its log is not there (gone, not started)."""
        response = await _raw(self.core.read_namespaced_pod_log, pod, self.namespace, container=container,
                              limit_bytes=limit_bytes, tail_lines=tail_lines)
        return None if response is None else bytes(response.data).decode("utf-8", "replace")

    def follow_log(self, pod: str, container: str) -> Any:
        """`pods/log?follow=true`: the open HTTP response, read on the caller's thread (bot.platform.podlogs)."""
        return self.core.read_namespaced_pod_log(pod, self.namespace, container=container, follow=True,
                                                 _preload_content=False)

    async def workload_of(self, job_uid: str) -> dict[str, Any] | None:
        """Kueue's Workload of the Job with `job_uid` (label `kueue.x-k8s.io/job-uid`); None when there is
        none yet, or when Kueue's CRD is not installed or the bot may not read it (404, 403): the bot's
        checks then say less, never fail. Read-only: the Role grants get/list/watch on workloads."""
        listing = await _call(self.custom.list_namespaced_custom_object, kueue.GROUP, kueue.VERSION, self.namespace,
                              kueue.WORKLOADS, label_selector=f"{kueue.JOB_UID_LABEL}={job_uid}", none_on=(403, 404))
        items = (listing or {}).get("items") or []
        return items[0] if items else None  # type: ignore[no-any-return]

    async def secret_data(self, name: str) -> dict[str, str] | None:
        """The decoded data of Secret `name` (None when there is none), reused for SECRET_TTL
        seconds once read. Only for masking what Jobs print: the Role grants `get` on exactly the Secrets the
        bot's Jobs receive, by name (deploy/base/rbac.yaml); another name answers 403 (raised)."""
        now = time.monotonic()
        cached = self._secrets.get(name)
        if cached is not None and cached[0] > now:
            return cached[1]
        secret = await _call(self.core.read_namespaced_secret, name, self.namespace, none_on=(404,))
        if secret is None:  # not cached: a Secret created a moment later is used at once
            return None
        raw = secret.get("data") or {}
        data = {str(k): base64.b64decode(v).decode("utf-8", "replace") for k, v in raw.items()}
        self._secrets[name] = (now + SECRET_TTL, data)
        return data


async def _call(method: Any, *args: Any, none_on: tuple[int, ...], **kwargs: Any) -> dict[str, Any] | None:
    """One API call, its JSON read as plain data (`_json`); None when the server answers a status of
    `none_on` (404: not there; 409: exists already, or changed since it was read). The client takes
    plain JSON bodies as well as its models."""
    try:
        response = await asyncio.to_thread(method, *args, _preload_content=False, **kwargs)
    except ApiException as exc:
        if exc.status in none_on:
            return None
        raise
    return _json(response)  # type: ignore[no-any-return]


async def _raw(method: Any, *args: Any, **kwargs: Any) -> Any:
    """One API call's raw response; None on 400 (a container waiting to start) or 404 (gone)."""
    try:
        return await asyncio.to_thread(method, *args, _preload_content=False, **kwargs)
    except ApiException as exc:
        if exc.status in (400, 404):
            return None
        raise


async def _delete_if_there(method: Any, name: str, namespace: str) -> None:
    """Delete; one already gone (404) is what was wanted."""
    try:
        await asyncio.to_thread(method, name, namespace)
    except ApiException as exc:
        if exc.status != 404:
            raise


def _stamp(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    """`obj` with its `kind` (list items come without one): the bot tells a RayJob from a Job by it."""
    if obj is not None:
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", rayjobs.API_VERSION if kind == jobs.RAYJOB else "batch/v1")
    return obj


def _json(response: Any) -> Any:
    """The API server's JSON as plain data: reading model objects back out of the client's pydantic
    models costs milliseconds per Job, and the bot only ever wants dicts."""
    return json.loads(response.data)
