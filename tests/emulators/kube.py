"""A small, stateful Kubernetes API server emulator over real HTTP, for the official `kubernetes` client.

The bot talks to it exactly as it talks to a cluster: a kubeconfig (server URL + bearer token), the
unmodified official client, real HTTP. Tests drive the parts a cluster would do by itself (the Job
controller, the kubelet) with helpers, and inspect the object store directly.

Design: the server runs on **its own thread with its own event loop**. That makes it usable from async
tests (``await kube.start()`` / ``await kube.stop()``), from plain synchronous code
(``kube.start_sync()`` / ``kube.stop_sync()`` or ``with KubeEmulator() as kube:``) and - importantly -
from code that calls the blocking official client directly on the test's event loop thread without
deadlocking. All test-side helpers (``get``, ``list``, ``put_object``, ``succeed_job`` ...) are plain
synchronous, thread-safe methods (one lock guards the store; watch fan-out is handed to the server loop
with ``call_soon_threadsafe``).

Usage::

    kube = KubeEmulator()
    await kube.start()                       # or kube.start_sync(), or `with KubeEmulator() as kube:`
    kube.write_kubeconfig(tmp_path / "kubeconfig")   # namespace "flops", bearer token auth

    api = kubernetes.client.ApiClient(kube.client_configuration())
    batch = kubernetes.client.BatchV1Api(api)
    await asyncio.to_thread(batch.create_namespaced_job, "flops", job_body)

    kube.start_job("flops", "build-1")       # a running Pod, status.active=1
    kube.succeed_job("flops", "build-1", message="ok", logs="line 1\\nline 2\\n")
    assert kube.get("jobs", "flops", "build-1")["status"]["succeeded"] == 1
    assert ("DELETE", "/apis/batch/v1/namespaces/flops/jobs/build-1?propagationPolicy=Background") in kube.requests

    kube.fail_next("POST", r"/jobs$", 500)  # the next Job create answers 500
    kube.expire_watches()                    # open watches get a 410 ERROR event; old resourceVersions too
    kube.down = True                         # every request answers 503
    await kube.stop()

Semantics follow the real API server where the bot can tell the difference: resourceVersions are one
global counter, list items carry no kind/apiVersion, Job deletes default to orphaning (like batch/v1),
no-op updates do not bump the resourceVersion, objects are schema-checked (kubernetes-validate, 1.31)
and names/labels are validated, Job status looks like 1.31+ (SuccessCriteriaMet/FailureTarget).
Public endpoints (/healthz, /livez, /readyz, /version) need no token; everything else does.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import random
import re
import threading
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote

import kubernetes.client
from aiohttp import web

from tests.emulators import crds

try:  # schema validation like the API server's (optional: skipped when the package is missing)
    import jsonschema
    import kubernetes_validate as _kubernetes_validate
    import kubernetes_validate.utils  # noqa: F401 (loads the submodule read as _kubernetes_validate.utils)
    import referencing
except ImportError:  # pragma: no cover
    _kubernetes_validate = None

SCHEMA_VERSION = "1.31"
DEFAULT_NAMESPACE = "flops"
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the API server uses for generateName suffixes
POD_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz"
WATCH_DEFAULT_SECONDS = 1800

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
           409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


@dataclass(frozen=True)
class Resource:
    plural: str
    group: str  # "" = core
    version: str
    kind: str
    status_subresource: bool = False
    name_rule: str = "subdomain"  # "label" (DNS-1123 label), "dns1035", "subdomain"
    generation: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def base_path(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


RESOURCES: dict[str, Resource] = {r.plural: r for r in (
    Resource("jobs", "batch", "v1", "Job", status_subresource=True, name_rule="label"),
    Resource("pods", "", "v1", "Pod", status_subresource=True),
    Resource("services", "", "v1", "Service", status_subresource=True, name_rule="dns1035"),
    Resource("secrets", "", "v1", "Secret", generation=False),
    Resource("configmaps", "", "v1", "ConfigMap", generation=False),
    Resource("events", "", "v1", "Event", generation=False),
    Resource("networkpolicies", "networking.k8s.io", "v1", "NetworkPolicy"),
    # Kueue's CRD (kueue.x-k8s.io/v1beta1): created and moved on by tests/emulators/kueue.py, as Kueue would
    Resource("workloads", "kueue.x-k8s.io", "v1beta1", "Workload", status_subresource=True),
    Resource("leases", "coordination.k8s.io", "v1", "Lease", generation=False),
    # KubeRay's CRD (ray.io/v1, v1.7.0, tests/crds/): moved on by tests/emulators/kuberay.py, as the operator would
    Resource("rayjobs", "ray.io", "v1", "RayJob", status_subresource=True, name_rule="label"),
)}
BY_KIND = {r.kind: r for r in RESOURCES.values()}
GROUPS = sorted({r.group for r in RESOURCES.values() if r.group})  # the named API groups served under /apis
GROUP_PATHS = {f"/apis/{g}/v1": g for g in GROUPS} | {"/api/v1": ""}


class ApiError(Exception):
    """Answered as a `Status` object."""

    def __init__(self, code: int, message: str, reason: str | None = None, details: dict[str, Any] | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        self.retry_after: int | None = None

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.message, self.reason, self.details)


def status_object(code: int, message: str, reason: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return _meta(obj).get("labels") or {}


# ---------------------------------------------------------------------------------------------- selectors

Requirement = Callable[[dict[str, str]], bool]


def _split_terms(selector: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t.strip() for t in terms if t.strip()]


def parse_label_selector(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """`a=b,c!=d,e in (f,g),h notin (i),j,!k` -> predicate on a label dict (ANDed). Raises ApiError 400."""
    if not selector:
        return lambda labels: True
    requirements: list[Requirement] = []
    for term in _split_terms(selector):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s*\(([^)]*)\)", term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",") if v.strip()}
            if op == "in":
                requirements.append(lambda l, k=key, vs=values: k in l and l[k] in vs)
            else:
                requirements.append(lambda l, k=key, vs=values: k not in l or l[k] not in vs)
        elif m := re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term):
            key, op, value = m.groups()
            if op == "!=":
                requirements.append(lambda l, k=key, v=value: l.get(k) != v)
            else:
                requirements.append(lambda l, k=key, v=value: k in l and l[k] == v)
        elif m := re.fullmatch(r"!\s*([^=!\s()]+)", term):
            absent = m.group(1)
            requirements.append(lambda l, k=absent: k not in l)
        elif re.fullmatch(r"[^=!\s()]+", term):
            requirements.append(lambda l, k=term: k in l)
        else:
            raise ApiError(400, f"unable to parse requirement: {term!r}", "BadRequest")
    return lambda labels: all(req(labels) for req in requirements)


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def parse_field_selector(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    if not selector:
        return lambda obj: True
    checks: list[Callable[[dict[str, Any]], bool]] = []
    for term in _split_terms(selector):
        m = re.fullmatch(r"([^=!\s]+)\s*(==|=|!=)\s*(\S*)", term)
        if not m:
            raise ApiError(400, f"invalid field selector: {term!r}", "BadRequest")
        path, op, value = m.groups()
        if op == "!=":
            checks.append(lambda o, p=path, v=value: _field_value(o, p) != v)
        else:
            checks.append(lambda o, p=path, v=value: _field_value(o, p) == v)
    return lambda obj: all(check(obj) for check in checks)


# ---------------------------------------------------------------------------------------------- patches

def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patch is treated the same way)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container_at(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError) as exc:
                raise ApiError(422, f"JSON pointer index {part!r} is invalid") from exc
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            raise ApiError(422, f"JSON pointer: path segment {part!r} not found")
    return doc


def _get_pointer(doc: Any, path: str) -> Any:
    return _container_at(doc, _pointer(path))


def _remove_pointer(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise ApiError(422, "cannot remove the document root")
    parent = _container_at(doc, parts[:-1])
    last = parts[-1]
    try:
        if isinstance(parent, list):
            return parent.pop(int(last))
        return parent.pop(last)
    except (KeyError, ValueError, IndexError) as exc:
        raise ApiError(422, f"unable to remove nonexistent key: {last}") from exc


def _add_pointer(doc: Any, path: str, value: Any, replace: bool = False) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _container_at(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
            return doc
        try:
            index = int(last)
        except ValueError as exc:
            raise ApiError(422, f"invalid array index {last!r}") from exc
        if replace:
            if not 0 <= index < len(parent):
                raise ApiError(422, f"array index {index} out of bounds")
            parent[index] = copy.deepcopy(value)
        else:
            if not 0 <= index <= len(parent):
                raise ApiError(422, f"array index {index} out of bounds")
            parent.insert(index, copy.deepcopy(value))
    elif isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, f"replace operation does not apply: doc is missing key: {path}")
        parent[last] = copy.deepcopy(value)
    else:
        raise ApiError(422, f"JSON pointer {path!r} does not point into an object or array")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902: add, remove, replace, test, move, copy."""
    if not isinstance(operations, list):
        raise ApiError(400, "json patch must be a list of operations", "BadRequest")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise ApiError(400, f"invalid json patch operation: {op!r}", "BadRequest")
        kind, path = op["op"], op["path"]
        if kind == "add":
            doc = _add_pointer(doc, path, op.get("value"))
        elif kind == "replace":
            doc = _add_pointer(doc, path, op.get("value"), replace=True)
        elif kind == "remove":
            _remove_pointer(doc, path)
        elif kind == "test":
            if _get_pointer(doc, path) != op.get("value"):
                raise ApiError(422, f"testing value {path} failed")
        elif kind in ("move", "copy"):
            value = copy.deepcopy(_get_pointer(doc, op["from"]))
            if kind == "move":
                _remove_pointer(doc, op["from"])
            doc = _add_pointer(doc, path, value)
        else:
            raise ApiError(400, f"unsupported json patch operation {kind!r}", "BadRequest")
    return doc


# ---------------------------------------------------------------------------------------------- validation

def _check_name(name: Any, rule: str, field_path: str = "metadata.name") -> list[str]:
    if not isinstance(name, str) or not name:
        return [f"{field_path}: Required value: name or generateName is required"]
    if rule == "label":
        if len(name) > 63 or not DNS1123_LABEL.match(name):
            return [(f"{field_path}: Invalid value: {name!r}: a lowercase RFC 1123 label must consist of lower case "
                     "alphanumeric characters or '-', start and end with an alphanumeric character, and be at most "
                     "63 characters")]
    elif rule == "dns1035":
        if len(name) > 63 or not DNS1035_LABEL.match(name):
            return [(f"{field_path}: Invalid value: {name!r}: a DNS-1035 label must consist of lower case "
                     "alphanumeric characters or '-', start with an alphabetic character, end with an alphanumeric "
                     "character, and be at most 63 characters")]
    elif len(name) > 253 or not DNS1123_SUBDOMAIN.match(name):
        return [(f"{field_path}: Invalid value: {name!r}: a lowercase RFC 1123 subdomain must consist of lower "
                 "case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character")]
    return []


def _check_key(key: Any, where: str) -> list[str]:
    if not isinstance(key, str):
        return [f"{where}: Invalid value: {key!r}: key must be a string"]
    prefix, _, name = key.rpartition("/")
    problems = []
    if "/" in key and (not prefix or len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        problems.append(f"{where}: Invalid value: {key!r}: prefix part must be a DNS-1123 subdomain")
    if not name or len(name) > 63 or not QUALIFIED_NAME.match(name):
        problems.append(f"{where}: Invalid value: {key!r}: name part must consist of alphanumeric characters, '-', "
                        "'_' or '.', must start and end with an alphanumeric character, and be at most 63 characters")
    return problems


def _check_labels(labels: Any, where: str) -> list[str]:
    if labels is None:
        return []
    if not isinstance(labels, dict):
        return [f"{where}: Invalid value: must be a map of strings"]
    problems = []
    for key, value in labels.items():
        problems += _check_key(key, where)
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            problems.append(f"{where}: Invalid value: {value!r}: a valid label must be an empty string or consist of "
                            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
                            "character, at most 63 characters")
    return problems


def _check_annotations(annotations: Any, where: str) -> list[str]:
    if annotations is None:
        return []
    if not isinstance(annotations, dict):
        return [f"{where}: Invalid value: must be a map of strings"]
    problems = []
    for key, value in annotations.items():
        problems += _check_key(key, where)
        if not isinstance(value, str):
            problems.append(f"{where}[{key}]: Invalid value: annotation values must be strings")
    if len(json.dumps(annotations)) > 256 * 1024:
        problems.append(f"{where}: Too long: must have at most 262144 bytes")
    return problems


def _check_pod_spec(spec: Any, where: str, job: bool) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{where}: Required value"]
    problems = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        problems.append(f"{where}.containers: Required value")
        containers = []
    seen: set[str] = set()
    for i, container in enumerate(containers + list(spec.get("initContainers") or [])):
        at = f"{where}.containers[{i}]"
        if not isinstance(container, dict):
            problems.append(f"{at}: Invalid value")
            continue
        name = container.get("name")
        if not name:
            problems.append(f"{at}.name: Required value")
        else:
            problems += _check_name(name, "label", f"{at}.name")
            if name in seen:
                problems.append(f"{at}.name: Duplicate value: {name!r}")
            seen.add(name)
        if not container.get("image"):
            problems.append(f"{at}.image: Required value")
    if job and spec.get("restartPolicy") not in ("Never", "OnFailure"):
        problems.append(f"{where}.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"")
    return problems


@functools.lru_cache(maxsize=None)
def _schema_validator(kind: str, api_version: str) -> Any:
    """What `kubernetes_validate.validate(obj, SCHEMA_VERSION)` checks an object against, built once per
    kind: the package re-reads its schema files (the definitions alone are 1.8 MB of JSON) on every call."""
    utils = _kubernetes_validate.utils
    wanted = utils.major_minor(SCHEMA_VERSION)
    version = [v for v in utils.all_versions() if utils.major_minor(v) <= wanted][-1]
    group = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    folder = f"kubernetes-json-schema/v{version}-local"
    schema = utils.schema_contents(f"{folder}/{kind.lower()}-{group}.json", SCHEMA_VERSION)
    registry = _schema_definitions(folder) @ (referencing.Resource.from_contents(schema) @ referencing.Registry())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry)


@functools.lru_cache(maxsize=None)
def _schema_definitions(folder: str) -> Any:
    """The definitions every kind's schema refers to: read once, shared by all kinds."""
    return referencing.Resource.from_contents(
        _kubernetes_validate.utils.schema_contents(f"{folder}/_definitions.json", SCHEMA_VERSION))


def _check_rayjob(obj: dict[str, Any]) -> list[str]:
    """What KubeRay's webhook / validation refuses beyond the schema: long names, groups without templates."""
    problems = [] if len(str(_meta(obj).get("name") or "")) <= 47 else [
        "metadata.name: Invalid value: RayJob name should be no more than 47 characters"]
    cluster = ((obj.get("spec") or {}).get("rayClusterSpec") or {})
    groups = [("headGroupSpec", cluster.get("headGroupSpec"))] + [
        (f"workerGroupSpecs[{i}]", g) for i, g in enumerate(cluster.get("workerGroupSpecs") or [])]
    for where, group in groups:
        template = (group or {}).get("template") if isinstance(group, dict) else None
        if isinstance(template, dict):
            problems += _check_labels(_labels(template), f"spec.rayClusterSpec.{where}.template.metadata.labels")
        problems += _check_pod_spec((template or {}).get("spec"), f"spec.rayClusterSpec.{where}.template.spec",
                                    job=False)
    return problems


def validate_object(resource: Resource, obj: dict[str, Any]) -> None:
    """The API server's validation, roughly: names, labels, annotations, the pod template, the schema."""
    meta = _meta(obj)
    problems = _check_name(meta.get("name"), resource.name_rule)
    problems += _check_labels(meta.get("labels"), "metadata.labels")
    problems += _check_annotations(meta.get("annotations"), "metadata.annotations")
    spec = obj.get("spec")
    if resource.kind == "Job":
        template = (spec or {}).get("template") if isinstance(spec, dict) else None
        if not isinstance(template, dict):
            problems.append("spec.template: Required value")
        else:
            problems += _check_labels(_labels(template), "spec.template.metadata.labels")
            problems += _check_pod_spec(template.get("spec"), "spec.template.spec", job=True)
    elif resource.kind == "Pod":
        problems += _check_pod_spec(spec, "spec", job=False)
    elif resource.kind == "RayJob":
        problems += _check_rayjob(obj)
    if not problems and resource.kind == "RayJob":
        try:
            crds.validate(obj)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}: Invalid value: {str(exc.message).splitlines()[0][:300]}")
    elif not problems and _kubernetes_validate is not None:
        try:
            _schema_validator(str(obj.get("kind")), str(obj.get("apiVersion"))).validate(obj)
        except jsonschema.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}: Invalid value: {str(exc.message).splitlines()[0]}")
        except Exception:  # noqa: BLE001, S110 - no schema for this kind/version: nothing to check against
            pass
    if problems:
        name = meta.get("name") or meta.get("generateName") or ""
        message = f"{resource.kind} {json.dumps(name)} is invalid: " + ", ".join(problems)
        details = {"name": name, "group": resource.group, "kind": resource.plural,
                   "causes": [{"reason": "FieldValueInvalid", "message": p} for p in problems]}
        raise ApiError(422, message, "Invalid", details)


# ---------------------------------------------------------------------------------------------- the emulator

_CLOSE = object()
_EXPIRE = object()


@dataclass(eq=False)
class _Watch:
    resource: Resource
    namespace: str | None
    labels: Callable[[dict[str, str]], bool]
    fields: Callable[[dict[str, Any]], bool]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    def matches(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and _meta(obj).get("namespace") != self.namespace:
            return False
        return self.labels(_labels(obj)) and self.fields(obj)

    def translate(self, plural: str, kind: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> dict | None:
        """The event this watch sees (selector transitions become ADDED/DELETED, like the watch cache)."""
        if plural != self.resource.plural:
            return None
        now_in, was_in = self.matches(obj), self.matches(prev)
        if kind == "MODIFIED":
            if now_in and not was_in:
                kind = "ADDED"
            elif was_in and not now_in:
                kind = "DELETED"
            elif not now_in:
                return None
        elif not now_in:
            return None
        return {"type": kind, "object": obj}


@dataclass
class _Fault:
    method: str
    path: re.Pattern[str]
    status: int
    times: int
    retry_after: int | None = None
    applied: bool = False


class KubeEmulator:
    """A Kubernetes API server for tests (see the module docstring)."""

    def __init__(self, namespace: str = DEFAULT_NAMESPACE, token: str | None = None) -> None:
        self.namespace = namespace
        self.token = token or "flops-emulator-" + uuid.uuid4().hex
        self.url = ""
        self.requests: list[tuple[str, str]] = []
        self.errors: list[str] = []  # tracebacks of emulator bugs (answered 500)
        self.down = False
        self._lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {p: {} for p in RESOURCES}
        self._logs: dict[tuple[str, str, str], str] = {}
        self._history: list[tuple[int, str, str, dict[str, Any], dict[str, Any] | None]] = []
        self._rv = 1
        self._compacted = 0
        self._watches: set[_Watch] = set()
        self._faults: list[_Fault] = []
        self.missing: set[str] = set()  # plurals of custom resources whose CRD is "not installed" (404)
        self._namespaces: dict[str, dict[str, Any]] = {}
        self._pod_of_job: dict[str, tuple[str, str]] = {}  # Job uid -> the Pod the controller made for it
        self._log_followers: set[asyncio.Queue[None]] = set()  # `pods/log?follow=true` streams open now
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        """Start serving on a free 127.0.0.1 port (own thread, own loop); the base URL."""
        return await asyncio.to_thread(self.start_sync)

    async def stop(self) -> None:
        await asyncio.to_thread(self.stop_sync)

    def start_sync(self, timeout: float = 10) -> str:
        if self._thread is not None:
            return self.url
        self._stopping = False
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve, name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the Kubernetes emulator did not start")
        if self._startup_error is not None:
            raise RuntimeError("the Kubernetes emulator did not start") from self._startup_error
        return self.url

    def stop_sync(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(30)
        thread.join(30)
        self._thread = None
        self._loop = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        self.start_sync()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_sync()

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # noqa: BLE001 - reported to start_sync
            self._startup_error = exc
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _startup(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

    async def _shutdown(self) -> None:
        with self._lock:
            watches = list(self._watches)
        for watch in watches:
            watch.queue.put_nowait(_CLOSE)
        with self._lock:
            followers, self._stopping = list(self._log_followers), True
        for queue in followers:  # follow streams end as the server goes away
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
        asyncio.get_running_loop().call_soon(asyncio.get_running_loop().stop)

    # ------------------------------------------------------------------ client configuration

    def kubeconfig(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1", "kind": "Config", "preferences": {},
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "flops-bot", "user": {"token": self.token}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "flops-bot",
                                                          "namespace": self.namespace}}],
            "current-context": "emulator",
        }

    def write_kubeconfig(self, path: str | Path) -> None:
        """A kubeconfig for `kubernetes.config.load_kube_config(config_file=path)` (JSON is valid YAML)."""
        Path(path).write_text(json.dumps(self.kubeconfig(), indent=2))

    def client_configuration(self) -> kubernetes.client.Configuration:
        configuration = kubernetes.client.Configuration()
        configuration.host = self.url
        configuration.api_key = {"authorization": f"Bearer {self.token}"}
        return configuration

    # ------------------------------------------------------------------ test-side store access

    def get(self, kind_plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects[kind_plural].get((namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, kind_plural: str, namespace: str | None = None,
             labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            found = [copy.deepcopy(obj) for (ns, _), obj in sorted(self._objects[kind_plural].items())
                     if (namespace is None or ns == namespace)
                     and all(_labels(obj).get(k) == v for k, v in (labels or {}).items())]
        return found

    def put_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if created through the API (replaced when it exists); the stored copy."""
        resource = BY_KIND.get(obj.get("kind", ""))
        if resource is None:
            raise ValueError(f"unsupported kind {obj.get('kind')!r}")
        namespace = _meta(obj).get("namespace") or self.namespace
        with self._lock:
            name = _meta(obj).get("name")
            if name and (namespace, name) in self._objects[resource.plural]:
                stored = self._update(resource, namespace, name, copy.deepcopy(obj), subresource=None,
                                      check_version=False)
                if "status" in obj and resource.status_subresource:
                    stored = self._update(resource, namespace, name, {"status": copy.deepcopy(obj["status"])},
                                          subresource="status", check_version=False)
                return copy.deepcopy(stored)
            return copy.deepcopy(self._create(resource, namespace, copy.deepcopy(obj)))

    def logs_of(self, namespace: str, pod: str, container: str) -> str:
        with self._lock:
            return self._logs.get((namespace, pod, container), "")

    def set_logs(self, namespace: str, pod: str, container: str, text: str) -> None:
        with self._lock:
            self._logs[(namespace, pod, container)] = text
            self._wake_log_followers()

    def append_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        """The container prints `text`: added to its log and sent at once to every `follow=true` stream."""
        with self._lock:
            self._logs[(namespace, pod, container)] = self._logs.get((namespace, pod, container), "") + text
            self._wake_log_followers()

    @property
    def log_followers(self) -> int:
        """How many `pods/log?follow=true` streams are open right now."""
        with self._lock:
            return len(self._log_followers)

    def _wake_log_followers(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        for queue in self._log_followers:
            loop.call_soon_threadsafe(queue.put_nowait, None)

    @property
    def open_watches(self) -> int:
        """How many watch streams are open right now (poll it to know a watch has started)."""
        with self._lock:
            return len(self._watches)

    @property
    def resource_version(self) -> str:
        """The current (global) resourceVersion."""
        with self._lock:
            return str(self._rv)

    # ------------------------------------------------------------------ fault injection

    def fail_next(self, method: str, path_regex: str, status: int, times: int = 1, *,
                  retry_after: int | None = None, applied: bool = False) -> None:
        """The next `times` requests whose method matches (or "*") and whose path?query (URL-decoded)
        matches `path_regex` (re.search) answer `status` with a Status body. No Retry-After header unless
        `retry_after` is given (urllib3 inside the client silently retries 429/503 that carry one). With
        `applied`, each is carried out first and only its answer is the failure (a 504 whose write landed)."""
        with self._lock:
            self._faults.append(_Fault(method.upper(), re.compile(path_regex), status, times, retry_after, applied))

    def expire_watches(self) -> None:
        """Compact history at the current resourceVersion: open watches get a 410 ERROR event and are
        closed; a watch from an older resourceVersion gets the same."""
        with self._lock:
            self._compacted = self._rv
            self._history = [h for h in self._history if h[0] >= self._compacted]
            watches = list(self._watches)
            for watch in watches:
                self._send(watch, _EXPIRE)

    # ------------------------------------------------------------------ the Job controller / kubelet

    def set_suspended(self, namespace: str, name: str, suspended: bool) -> None:
        """`spec.suspend` changed (by Kueue) and the Job controller's answer, like 1.31: suspending deletes the
        Pods (not counted as failed), clears startTime and active, condition Suspended=True; resuming sets
        Suspended=False and a new startTime (activeDeadlineSeconds counts from the resumption)."""
        with self._lock:
            job = copy.deepcopy(self._lookup(RESOURCES["jobs"], namespace, name))
            if bool(job["spec"].get("suspend")) == suspended:
                return
            job["spec"]["suspend"] = suspended
            job["metadata"]["generation"] = int(job["metadata"].get("generation", 1)) + 1
            if suspended:
                for key, pod in list(self._objects["pods"].items()):
                    if any(r.get("uid") == job["metadata"]["uid"] for r in pod["metadata"].get("ownerReferences") or []):
                        self._delete(RESOURCES["pods"], key[0], key[1], "Background")
            stamp = now()
            conditions = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("type") != "Suspended"]
            conditions.append({"type": "Suspended", "status": "True" if suspended else "False",
                               "reason": "JobSuspended" if suspended else "JobResumed",
                               "message": "Job suspended" if suspended else "Job resumed",
                               "lastProbeTime": stamp, "lastTransitionTime": stamp})
            status = dict(job.get("status") or {})
            status.pop("startTime", None)
            status.pop("active", None)
            if not suspended:
                status["startTime"] = stamp
            job["status"] = {**status, "conditions": conditions, "ready": 0}
            self._save("jobs", job)

    def _refuse_suspended(self, namespace: str, name: str) -> None:
        job = self._objects["jobs"].get((namespace, name))
        if job is not None and (job.get("spec") or {}).get("suspend"):
            raise ValueError(f"job {namespace}/{name} is suspended: a suspended Job starts no Pods (admit it first)")

    def start_job(self, namespace: str, name: str) -> None:
        """A running Pod for the Job; status.active=1, ready=1, startTime."""
        with self._lock:
            self._refuse_suspended(namespace, name)
            job, pod = self._job_and_pod(namespace, name)
            stamp = now()
            pod["status"] = self._pod_status(job, "Running", {
                c["name"]: ({"running": {"startedAt": stamp}}, True) for c in self._containers(job)})
            self._save("pods", pod)
            self._set_job_status(job, active=1, ready=1)

    def set_pod_waiting(self, namespace: str, job_name: str, reason: str = "ImagePullBackOff",
                        message: str = 'Back-off pulling image "example": ErrImagePull') -> None:
        """The Job's Pod is Pending with every container waiting (`reason`, `message`); status.active=1."""
        with self._lock:
            self._refuse_suspended(namespace, job_name)
            job, pod = self._job_and_pod(namespace, job_name)
            pod["status"] = self._pod_status(job, "Pending", {
                c["name"]: ({"waiting": {"reason": reason, "message": message}}, False) for c in self._containers(job)})
            self._save("pods", pod)
            self._set_job_status(job, active=1, ready=0)

    def succeed_job(self, namespace: str, name: str, *, message: str = "", logs: str | dict[str, str] = "",
                    container: str | None = None) -> None:
        """The Job's Pod Succeeded (every container exit 0, "Completed"); the Job Complete like k8s 1.31+.
        `message` is the termination message of `container` (default: the first container); `logs` is that
        container's log (or a dict container -> log)."""
        self._finish(namespace, name, succeeded=True, message=message, logs=logs, container=container,
                     exit_code=0, terminated_reason="Completed", reason="CompletionsReached",
                     condition_message="Reached expected number of succeeded pods")

    def fail_job(self, namespace: str, name: str, *, reason: str = "BackoffLimitExceeded",
                 message: str = "Job has reached the specified backoff limit", exit_code: int = 1,
                 logs: str | dict[str, str] = "", terminated_reason: str = "Error",
                 container: str | None = None, termination_message: str = "") -> None:
        """The Job's Pod Failed (`container` - default the first - exited `exit_code`/`terminated_reason`,
        the others 0); the Job Failed with `reason`/`message` (conditions FailureTarget + Failed)."""
        self._finish(namespace, name, succeeded=False, message=termination_message, logs=logs, container=container,
                     exit_code=exit_code, terminated_reason=terminated_reason, reason=reason,
                     condition_message=message)

    def _finish(self, namespace: str, name: str, *, succeeded: bool, message: str, logs: str | dict[str, str],
                container: str | None, exit_code: int, terminated_reason: str, reason: str,
                condition_message: str) -> None:
        with self._lock:
            self._refuse_suspended(namespace, name)
            job, pod = self._job_and_pod(namespace, name, mark_active=False)
            containers = [c["name"] for c in self._containers(job)]
            target = container or containers[0]
            if target not in containers:
                raise ValueError(f"job {name} has no container {target!r} (has {containers})")
            started = _started_at(pod) or now()
            finished = now()
            states = {}
            for cname in containers:
                terminated: dict[str, Any] = {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                              "finishedAt": finished, "containerID": _container_id(pod, cname)}
                if cname == target:
                    terminated.update(exitCode=exit_code, reason=terminated_reason)
                    if message:
                        terminated["message"] = message
                states[cname] = ({"terminated": terminated}, False)
            pod["status"] = self._pod_status(job, "Succeeded" if succeeded else "Failed", states)
            pod_name = pod["metadata"]["name"]
            texts = logs if isinstance(logs, dict) else ({target: logs} if logs else {})
            for cname, text in texts.items():
                self._logs[(namespace, pod_name, cname)] = text
            self._save("pods", pod)
            condition = {"status": "True", "lastProbeTime": finished, "lastTransitionTime": finished,
                         "reason": reason, "message": condition_message}
            if succeeded:
                conditions = [{"type": "SuccessCriteriaMet", **condition}, {"type": "Complete", **condition}]
                self._set_job_status(job, active=None, ready=0, succeeded=1, conditions=conditions,
                                     completionTime=finished)
            else:
                conditions = [{"type": "FailureTarget", **condition}, {"type": "Failed", **condition}]
                self._set_job_status(job, active=None, ready=0, failed=1, conditions=conditions)

    def _job_and_pod(self, namespace: str, name: str,
                     mark_active: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
        job = self._objects["jobs"].get((namespace, name))
        if job is None:
            raise KeyError(f"no job {namespace}/{name}")
        uid = job["metadata"]["uid"]

        def owned(pod: dict[str, Any]) -> bool:
            return pod["metadata"].get("namespace") == namespace and any(
                ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])

        made = self._objects["pods"].get(self._pod_of_job.get(uid, ("", "")))
        if made is not None and owned(made):  # the Pod made below for this Job (no scan of every Pod)
            return copy.deepcopy(job), copy.deepcopy(made)
        for pod in self._objects["pods"].values():
            if owned(pod):
                return copy.deepcopy(job), copy.deepcopy(pod)
        template = copy.deepcopy(job["spec"].get("template") or {})
        labels = dict(_labels(template))
        labels.update({"job-name": name, "batch.kubernetes.io/job-name": name, "controller-uid": uid,
                       "batch.kubernetes.io/controller-uid": uid})
        pod_name = f"{name}-" + "".join(random.choices(POD_SUFFIX_ALPHABET, k=5))
        spec = template.get("spec") or {}
        spec.setdefault("nodeName", "emulator-node")
        pod = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "generateName": f"{name}-", "namespace": namespace, "labels": labels,
                         "annotations": dict(_meta(template).get("annotations") or {}),
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": uid,
                                              "controller": True, "blockOwnerDeletion": True}],
                         "finalizers": ["batch.kubernetes.io/job-tracking"]},
            "spec": spec,
            "status": {"phase": "Pending", "qosClass": "BestEffort"},
        }
        pod = self._create(RESOURCES["pods"], namespace, pod, validate=False)
        self._pod_of_job[uid] = (namespace, pod["metadata"]["name"])
        if mark_active:
            self._set_job_status(copy.deepcopy(job), active=1, ready=0)
        return copy.deepcopy(self._objects["jobs"][(namespace, name)]), copy.deepcopy(pod)

    @staticmethod
    def _containers(job: dict[str, Any]) -> list[dict[str, Any]]:
        return list(((job.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or [])

    def _pod_status(self, job: dict[str, Any], phase: str,
                    states: dict[str, tuple[dict[str, Any], bool]]) -> dict[str, Any]:
        stamp = now()
        ready = all(r for _, r in states.values())
        images = {c["name"]: c.get("image", "") for c in self._containers(job)}
        statuses = []
        for cname, (state, is_ready) in states.items():
            image = images.get(cname, "")
            running_or_done = "waiting" not in state
            status = {"name": cname, "image": image, "imageID": f"{image}@sha256:" + "0" * 64 if running_or_done else "",
                      "ready": is_ready, "restartCount": 0, "started": "running" in state, "state": state,
                      "lastState": {}}
            if running_or_done:
                status["containerID"] = "containerd://" + uuid.uuid5(uuid.NAMESPACE_OID, job["metadata"]["uid"] + cname).hex
            statuses.append(status)
        conditions = [{"type": t, "status": "True" if ok else "False", "lastProbeTime": None,
                       "lastTransitionTime": stamp}
                      for t, ok in (("PodReadyToStartContainers", phase != "Pending"), ("Initialized", True),
                                    ("Ready", ready), ("ContainersReady", ready), ("PodScheduled", True))]
        return {"phase": phase, "conditions": conditions, "hostIP": "10.0.0.10", "hostIPs": [{"ip": "10.0.0.10"}],
                "podIP": "10.244.0.10", "podIPs": [{"ip": "10.244.0.10"}], "startTime": stamp,
                "containerStatuses": statuses, "qosClass": "BestEffort"}

    def _set_job_status(self, job: dict[str, Any], **changes: Any) -> None:
        status = dict(job.get("status") or {})
        status.setdefault("startTime", now())
        status.setdefault("uncountedTerminatedPods", {})
        status.setdefault("terminating", 0)
        for key, value in changes.items():
            if value is None:
                status.pop(key, None)
            else:
                status[key] = value
        job["status"] = status
        self._save("jobs", job)

    # ------------------------------------------------------------------ store internals (hold the lock)

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _send(self, watch: _Watch, item: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(watch.queue.put_nowait, item)

    def _record(self, plural: str, kind: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        if plural == "pods":
            self._wake_log_followers()  # a container that terminated (or a Pod deleted) ends its follow streams
        rv = int(obj["metadata"]["resourceVersion"])
        snapshot = copy.deepcopy(obj)
        self._history.append((rv, plural, kind, snapshot, prev))
        for watch in self._watches:
            event = watch.translate(plural, kind, snapshot, prev)
            if event is not None:
                self._send(watch, event)

    def _save(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Write a changed object (test helpers): new resourceVersion, MODIFIED (or ADDED) event."""
        key = (obj["metadata"]["namespace"], obj["metadata"]["name"])
        prev = self._objects[plural].get(key)
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[plural][key] = obj
        self._record(plural, "MODIFIED" if prev is not None else "ADDED", obj, copy.deepcopy(prev))
        return obj

    def _create(self, resource: Resource, namespace: str, body: Any, validate: bool = True) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format", "BadRequest")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata must be an object", "BadRequest")
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                                "request", "BadRequest")
        obj["apiVersion"], obj["kind"] = resource.api_version, resource.kind
        meta["namespace"] = namespace
        if not meta.get("name") and meta.get("generateName"):
            prefix = str(meta["generateName"])
            limit = 63 if resource.name_rule != "subdomain" else 253
            prefix = prefix[: limit - 5]
            for _ in range(100):
                candidate = prefix + "".join(random.choices(NAME_ALPHABET, k=5))
                if (namespace, candidate) not in self._objects[resource.plural]:
                    break
            meta["name"] = candidate
        for server_field in ("uid", "resourceVersion", "creationTimestamp", "deletionTimestamp", "generation",
                             "selfLink", "managedFields"):
            meta.pop(server_field, None)
        self._default(resource, obj)
        if validate:
            validate_object(resource, obj)
        key = (namespace, meta["name"])
        if key in self._objects[resource.plural]:
            raise ApiError(409, f'{resource.qualified} "{meta["name"]}" already exists', "AlreadyExists",
                           {"name": meta["name"], "group": resource.group, "kind": resource.plural})
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now()
        if resource.generation:
            meta["generation"] = 1
        if resource.kind == "Job":
            self._default_job_selector(obj)
        meta["resourceVersion"] = self._next_rv()
        self._objects[resource.plural][key] = obj
        self._record(resource.plural, "ADDED", obj, None)
        return obj

    @staticmethod
    def _default(resource: Resource, obj: dict[str, Any]) -> None:
        """The few API-server defaults the bot might look at."""
        if resource.kind == "Lease" and isinstance(obj.get("spec"), dict):
            for key in ("acquireTime", "renewTime"):  # MicroTime, as the API server writes it back
                if isinstance(obj["spec"].get(key), str):
                    obj["spec"][key] = _micro_time(obj["spec"][key], f"spec.{key}")
        if resource.kind == "Job":
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("parallelism", 1)
                spec.setdefault("completions", 1)
                spec.setdefault("backoffLimit", 6)
                spec.setdefault("completionMode", "NonIndexed")
                spec.setdefault("suspend", False)
                spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            obj.setdefault("status", {})
        elif resource.kind == "Service":
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("type", "ClusterIP")
                if "clusterIP" not in spec:
                    spec["clusterIP"] = f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}"
                spec.setdefault("clusterIPs", [spec["clusterIP"]])
                spec.setdefault("sessionAffinity", "None")
                for port in spec.get("ports") or []:
                    if isinstance(port, dict):
                        port.setdefault("protocol", "TCP")
                        port.setdefault("targetPort", port.get("port"))
            obj.setdefault("status", {"loadBalancer": {}})
        elif resource.kind == "Secret":
            obj.setdefault("type", "Opaque")
            string_data = obj.pop("stringData", None)
            if isinstance(string_data, dict):
                data = obj.setdefault("data", {})
                for key, value in string_data.items():
                    data[key] = base64.b64encode(str(value).encode()).decode()
        elif resource.kind == "Pod":
            spec = obj.setdefault("spec", {})
            if isinstance(spec, dict):
                spec.setdefault("restartPolicy", "Always")
            obj.setdefault("status", {"phase": "Pending", "qosClass": "BestEffort"})
        if resource.kind in ("Job", "Pod"):
            pod_spec = (obj.get("spec") or {}).get("template", {}).get("spec") if resource.kind == "Job" \
                else obj.get("spec")
            if isinstance(pod_spec, dict):
                pod_spec.setdefault("dnsPolicy", "ClusterFirst")
                pod_spec.setdefault("schedulerName", "default-scheduler")
                pod_spec.setdefault("terminationGracePeriodSeconds", 30)
                pod_spec.setdefault("securityContext", {})
                for container in pod_spec.get("containers") or []:
                    if isinstance(container, dict):
                        container.setdefault("terminationMessagePath", "/dev/termination-log")
                        container.setdefault("terminationMessagePolicy", "File")
                        container.setdefault("resources", {})
                        image = str(container.get("image") or "")
                        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
                        container.setdefault("imagePullPolicy",
                                             "IfNotPresent" if tagged and not image.endswith(":latest") else "Always")

    @staticmethod
    def _default_job_selector(job: dict[str, Any]) -> None:
        uid, name = job["metadata"]["uid"], job["metadata"]["name"]
        spec = job["spec"]
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}})
        template = spec.setdefault("template", {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({"batch.kubernetes.io/controller-uid": uid, "batch.kubernetes.io/job-name": name,
                       "controller-uid": uid, "job-name": name})
        if not job["metadata"].get("labels"):
            job["metadata"]["labels"] = dict(labels)

    def _lookup(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        obj = self._objects[resource.plural].get((namespace, name))
        if obj is None:
            raise ApiError(404, f'{resource.qualified} "{name}" not found', "NotFound",
                           {"name": name, "group": resource.group, "kind": resource.plural})
        return obj

    def _conflict(self, resource: Resource, name: str) -> ApiError:
        return ApiError(409, f'Operation cannot be fulfilled on {resource.qualified} "{name}": the object has been '
                             "modified; please apply your changes to the latest version and try again", "Conflict",
                        {"name": name, "group": resource.group, "kind": resource.plural})

    def _update(self, resource: Resource, namespace: str, name: str, body: Any, *, subresource: str | None,
                check_version: bool = True) -> dict[str, Any]:
        current = self._lookup(resource, namespace, name)
        if not isinstance(body, dict):
            raise ApiError(400, "the body of the request was in an unknown format", "BadRequest")
        meta = body.get("metadata")
        if not isinstance(meta, dict):
            meta = body["metadata"] = {}
        if meta.get("name") not in (None, name):
            raise ApiError(400, "the name of the object does not match the name on the URL", "BadRequest")
        if meta.get("namespace") not in (None, "", namespace):
            raise ApiError(400, "the namespace of the provided object does not match the namespace sent on the "
                                "request", "BadRequest")
        given = meta.get("resourceVersion")
        if check_version and given not in (None, "") and str(given) != current["metadata"]["resourceVersion"]:
            raise self._conflict(resource, name)
        if subresource == "status":
            new = copy.deepcopy(current)
            if "status" in body:
                new["status"] = copy.deepcopy(body["status"])
        else:
            new = copy.deepcopy(body)
            new["apiVersion"], new["kind"] = resource.api_version, resource.kind
            for server_field in ("uid", "creationTimestamp", "generation", "deletionTimestamp"):
                if server_field in current["metadata"]:
                    new["metadata"][server_field] = current["metadata"][server_field]
                else:
                    new["metadata"].pop(server_field, None)
            new["metadata"]["name"], new["metadata"]["namespace"] = name, namespace
            if resource.status_subresource:
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            if resource.kind in ("Secret", "Lease"):
                self._default(resource, new)
            validate_object(resource, new)
            if resource.generation and new.get("spec") != current.get("spec"):
                new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:  # a no-op: no new resourceVersion, no event (like the API server)
            return current
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._objects[resource.plural][(namespace, name)] = new
        self._record(resource.plural, "MODIFIED", new, copy.deepcopy(current))
        return new

    def _delete(self, resource: Resource, namespace: str, name: str, policy: str | None,
                preconditions: dict[str, Any] | None = None) -> dict[str, Any]:
        current = self._lookup(resource, namespace, name)
        if preconditions:
            if preconditions.get("uid") not in (None, current["metadata"]["uid"]):
                raise ApiError(409, f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object "
                                    f"meta: {current['metadata']['uid']}", "Conflict")
            if preconditions.get("resourceVersion") not in (None, current["metadata"]["resourceVersion"]):
                raise self._conflict(resource, name)
        if policy is None:
            policy = "Orphan" if resource.kind == "Job" else "Background"  # batch/v1 Jobs orphan by default
        if policy not in ("Background", "Foreground", "Orphan"):
            raise ApiError(400, f"propagationPolicy {policy!r} is not supported", "BadRequest")
        uid = current["metadata"]["uid"]
        dependents = []
        for plural, objects in self._objects.items():
            for key, obj in objects.items():
                refs = obj["metadata"].get("ownerReferences") or []
                owned = any(ref.get("uid") == uid for ref in refs)
                job_pod = (resource.kind == "Job" and plural == "pods" and key[0] == namespace
                           and _labels(obj).get("job-name") == name)
                if owned or job_pod:
                    dependents.append((plural, key, owned))
        if policy == "Orphan":
            for plural, key, owned in dependents:
                if owned:
                    obj = copy.deepcopy(self._objects[plural][key])
                    refs = [r for r in obj["metadata"]["ownerReferences"] if r.get("uid") != uid]
                    if refs:
                        obj["metadata"]["ownerReferences"] = refs
                    else:
                        obj["metadata"].pop("ownerReferences")
                    self._save(plural, obj)
        else:
            for plural, key, _ in dependents:
                if key in self._objects[plural]:
                    self._delete(RESOURCES[plural], key[0], key[1], "Background")
        current = self._objects[resource.plural].pop((namespace, name))
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = self._next_rv()
        gone["metadata"]["deletionTimestamp"] = now()
        gone["metadata"]["deletionGracePeriodSeconds"] = 0
        self._record(resource.plural, "DELETED", gone, copy.deepcopy(current))
        if resource.kind == "Pod":
            for log_key in [k for k in self._logs if k[:2] == (namespace, name)]:
                del self._logs[log_key]
        return gone

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = unquote(request.query_string)
        self.requests.append((request.method, request.path + (f"?{query}" if query else "")))
        try:
            if self.down:
                raise ApiError(503, "the server is currently unable to handle the request", "ServiceUnavailable")
            public = request.path in ("/healthz", "/livez", "/readyz", "/version")
            if not public and request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            fault = self._maybe_fail(request)
            response = await self._route(request)
            if fault is not None:
                raise fault
            return response
        except ApiError as exc:
            headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
            return web.json_response(exc.status(), status=exc.code, headers=headers)
        except Exception as exc:  # noqa: BLE001 - an emulator bug: answer like the API server would, keep it for the test
            self.errors.append(traceback.format_exc())
            return web.json_response(status_object(500, f"emulator error: {exc!r}", "InternalError"), status=500)

    def _maybe_fail(self, request: web.Request) -> ApiError | None:
        """Raise the failure injected for this request; return it instead when it is to be raised once the
        request was carried out (`applied`)."""
        query = unquote(request.query_string)
        target = request.path + (f"?{query}" if query else "")
        with self._lock:
            for fault in self._faults:
                if fault.method in ("*", request.method) and fault.path.search(target):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    error = ApiError(fault.status, f"injected failure ({fault.status})")
                    error.retry_after = fault.retry_after
                    if fault.applied:
                        return error
                    raise error
        return None

    async def _route(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path.rstrip("/") or "/", request.method
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return web.json_response({"major": "1", "minor": "31", "gitVersion": "v1.31.0", "gitCommit": "emulator",
                                      "gitTreeState": "clean", "buildDate": "2024-08-13T07:28:49Z",
                                      "goVersion": "go1.22.5", "compiler": "gc", "platform": "linux/amd64"})
        if path == "/api":
            return web.json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": self.url.removeprefix("http://")}]})
        if path == "/apis":
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": f"{g}/v1", "version": "v1"}} for g in GROUPS]})
        if path in GROUP_PATHS:
            group = GROUP_PATHS[path]
            resources = [{"name": r.plural, "singularName": r.kind.lower(), "namespaced": True, "kind": r.kind,
                          "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
                         for r in RESOURCES.values() if r.group == group]
            if not group:
                resources.append({"name": "namespaces", "singularName": "namespace", "namespaced": False,
                                  "kind": "Namespace", "verbs": ["get", "list"]})
            return web.json_response({"kind": "APIResourceList", "apiVersion": "v1",
                                      "groupVersion": f"{group}/v1" if group else "v1", "resources": resources})
        if m := re.fullmatch(r"/api/v1/namespaces(?:/([^/]+))?", path):
            if method != "GET":
                raise ApiError(405, "the server does not allow this method on the requested resource",
                               "MethodNotAllowed")
            if m.group(1):
                return web.json_response(self._namespace(m.group(1)))
            with self._lock:
                names = sorted({self.namespace, "default", "kube-system"} | {
                    ns for objects in self._objects.values() for ns, _ in objects})
                items = [{k: v for k, v in self._namespace(n).items() if k not in ("kind", "apiVersion")}
                         for n in names]
                return web.json_response({"kind": "NamespaceList", "apiVersion": "v1",
                                          "metadata": {"resourceVersion": str(self._rv)}, "items": items})
        m = re.fullmatch(r"(/api/v1|/apis/[^/]+/[^/]+)/namespaces/([^/]+)/([^/]+)(?:/([^/]+)(?:/([^/]+))?)?", path)
        all_namespaces = re.fullmatch(r"(/api/v1|/apis/[^/]+/[^/]+)/([^/]+)", path)
        if m:
            prefix, namespace, plural, name, sub = m.groups()
        elif all_namespaces:
            prefix, plural = all_namespaces.groups()
            namespace, name, sub = None, None, None
        else:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        resource = RESOURCES.get(plural)
        if resource is None or prefix != resource.base_path or plural in self.missing:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if name is None:
            if method == "GET":
                if request.query.get("watch", "").lower() in ("true", "1"):
                    return await self._watch(request, resource, namespace)
                return self._list(request, resource, namespace)
            if method == "POST" and namespace is not None:
                body = await self._json(request)
                with self._lock:
                    created = self._create(resource, namespace, body)
                    return web.json_response(created, status=201)
            raise ApiError(405, "the server does not allow this method on the requested resource",
                           "MethodNotAllowed")
        assert namespace is not None
        if sub == "log" and resource.kind == "Pod" and method == "GET":
            if request.query.get("follow") == "true":
                return await self._follow_log(request, namespace, name)
            return self._log(request, namespace, name)
        if sub not in (None, "status") or (sub == "status" and not resource.status_subresource):
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if method == "GET":
            with self._lock:
                return web.json_response(self._lookup(resource, namespace, name))
        if method == "PUT":
            body = await self._json(request)
            with self._lock:
                return web.json_response(self._update(resource, namespace, name, body, subresource=sub))
        if method == "PATCH":
            return await self._patch(request, resource, namespace, name, sub)
        if method == "DELETE" and sub is None:
            raw = await request.read()
            options = json.loads(raw) if raw.strip() else {}
            if not isinstance(options, dict):
                raise ApiError(400, "invalid DeleteOptions", "BadRequest")
            policy = request.query.get("propagationPolicy") or options.get("propagationPolicy")
            if policy is None and "orphanDependents" in options:
                policy = "Orphan" if options["orphanDependents"] else "Background"
            if policy is None and request.query.get("orphanDependents") is not None:
                policy = "Orphan" if request.query["orphanDependents"] == "true" else "Background"
            with self._lock:
                gone = self._delete(resource, namespace, name, policy, options.get("preconditions"))
            if resource.kind in ("Pod", "Service"):  # the API server's ReturnDeletedObject stores
                return web.json_response(gone)
            return web.json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                      "details": {"name": name, "group": resource.group, "kind": resource.plural,
                                                  "uid": gone["metadata"]["uid"]}})
        raise ApiError(405, "the server does not allow this method on the requested resource", "MethodNotAllowed")

    def _namespace(self, name: str) -> dict[str, Any]:
        return {"kind": "Namespace", "apiVersion": "v1",
                "metadata": {"name": name, "uid": str(uuid.uuid5(uuid.NAMESPACE_DNS, name)), "resourceVersion": "1",
                             "creationTimestamp": "2024-01-01T00:00:00Z",
                             "labels": {"kubernetes.io/metadata.name": name}},
                "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}

    @staticmethod
    async def _json(request: web.Request) -> Any:
        raw = await request.read()
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ApiError(400, f"the body of the request was in an unknown format: {exc}", "BadRequest") from exc

    def _select(self, request: web.Request) -> tuple[Callable[[dict[str, str]], bool], Callable[[dict], bool]]:
        return (parse_label_selector(request.query.get("labelSelector")),
                parse_field_selector(request.query.get("fieldSelector")))

    def _list(self, request: web.Request, resource: Resource, namespace: str | None) -> web.Response:
        labels, fields = self._select(request)
        limit, after, version = self._page(request)
        with self._lock:
            items, last = [], None
            for key, obj in sorted(self._objects[resource.plural].items()):
                if after is not None and key <= after:
                    continue
                if (namespace is None or key[0] == namespace) and labels(_labels(obj)) and fields(obj):
                    if limit and len(items) == limit:  # more remain: the next page starts after the last one
                        last = items[-1]["metadata"]
                        break
                    items.append({k: v for k, v in obj.items() if k not in ("kind", "apiVersion")})
            version = version or str(self._rv)
        meta: dict[str, Any] = {"resourceVersion": version}
        if last is not None:
            meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                {"rv": version, "start": [last["namespace"], last["name"]]}).encode()).decode()
        return web.json_response({"kind": f"{resource.kind}List", "apiVersion": resource.api_version,
                                  "metadata": meta, "items": items})

    @staticmethod
    def _page(request: web.Request) -> tuple[int, tuple[str, str] | None, str | None]:
        """`limit` and `continue` of a chunked list: (limit or 0, the key pages continue after, the first
        page's resourceVersion, which every page of one list reports)."""
        try:
            limit = int(request.query.get("limit") or 0)
            token = request.query.get("continue")
            state = json.loads(base64.urlsafe_b64decode(token)) if token else None
        except ValueError as exc:
            raise ApiError(400, f"invalid limit or continue: {exc}", "BadRequest") from exc
        if state is None:
            return max(0, limit), None, None
        return max(0, limit), (str(state["start"][0]), str(state["start"][1])), str(state["rv"])

    async def _watch(self, request: web.Request, resource: Resource, namespace: str | None) -> web.StreamResponse:
        labels, fields = self._select(request)
        try:
            timeout = float(request.query.get("timeoutSeconds") or WATCH_DEFAULT_SECONDS)
        except ValueError as exc:
            raise ApiError(400, "invalid timeoutSeconds", "BadRequest") from exc
        version = request.query.get("resourceVersion", "")
        watch = _Watch(resource, namespace, labels, fields)
        backlog: list[dict[str, Any]] = []
        with self._lock:
            if version not in ("", "0"):
                try:
                    start = int(version)
                except ValueError as exc:
                    raise ApiError(400, f"invalid resource version {version!r}", "BadRequest") from exc
                if start < self._compacted:
                    backlog = [_expired(start, self._compacted)]
                    expired = True
                else:
                    expired = False
                    for rv, plural, kind, obj, prev in self._history:
                        if rv > start and (event := watch.translate(plural, kind, obj, prev)) is not None:
                            backlog.append(event)
            else:
                expired = False
                for (ns, _), obj in sorted(self._objects[resource.plural].items()):
                    if watch.matches(obj):
                        backlog.append({"type": "ADDED", "object": copy.deepcopy(obj)})
            if not expired:
                self._watches.add(watch)
            compacted = self._compacted
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Cache-Control": "no-cache, private"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            for event in backlog:
                await response.write(json.dumps(event).encode() + b"\n")
            if not expired:
                loop = asyncio.get_running_loop()
                deadline = loop.time() + timeout
                while (remaining := deadline - loop.time()) > 0:
                    try:
                        item = await asyncio.wait_for(watch.queue.get(), remaining)
                    except TimeoutError:
                        break
                    if item is _CLOSE:
                        break
                    if item is _EXPIRE:
                        with self._lock:
                            compacted = self._compacted
                        await response.write(json.dumps(_expired(int(version or 0), compacted)).encode() + b"\n")
                        break
                    await response.write(json.dumps(item).encode() + b"\n")
            with self._lock:
                self._watches.discard(watch)
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._watches.discard(watch)
        return response

    def _log(self, request: web.Request, namespace: str, name: str) -> web.Response:
        with self._lock:
            container = self._log_container(request, namespace, name)
            text = self._logs.get((namespace, name, container), "")
        return web.Response(text=_log_window(request, text), content_type="text/plain")

    async def _follow_log(self, request: web.Request, namespace: str, name: str) -> web.StreamResponse:
        """`follow=true`, as the kubelet streams it: what is there (after `tailLines`), then each new line as
        the container prints it, until the container terminates or the Pod is deleted; a terminated
        container's whole log at once."""
        queue: asyncio.Queue[None] = asyncio.Queue()
        with self._lock:
            container = self._log_container(request, namespace, name)
            text = self._logs.get((namespace, name, container), "")
            self._log_followers.add(queue)
        sent = len(text)
        response = web.StreamResponse(status=200, headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            if first := _log_window(request, text):
                await response.write(first.encode())
            while True:
                over = self._log_over(namespace, name, container)  # read first: what it printed before is sent
                with self._lock:
                    text = self._logs.get((namespace, name, container), "")
                if len(text) > sent:
                    await response.write(text[sent:].encode())
                    sent = len(text)
                if over or self._stopping:
                    break
                try:
                    await asyncio.wait_for(queue.get(), 0.5)
                except TimeoutError:  # a client that went away is noticed, as the API server notices a closed socket
                    if request.transport is None or request.transport.is_closing():
                        break
            await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with self._lock:
                self._log_followers.discard(queue)
        return response

    def _log_over(self, namespace: str, pod: str, container: str) -> bool:
        """The Pod is gone or `container` terminated: a follow stream ends."""
        with self._lock:
            current = self._objects["pods"].get((namespace, pod))
            if current is None:
                return True
            for status in (current.get("status") or {}).get("containerStatuses") or []:
                if status.get("name") == container:
                    return "terminated" in (status.get("state") or {})
            return False

    def _log_container(self, request: web.Request, namespace: str, name: str) -> str:
        """The container a `pods/log` request reads, refused as the API server refuses it (hold the lock)."""
        pod = self._lookup(RESOURCES["pods"], namespace, name)
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        init = [c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []]
        container = request.query.get("container")
        if not container:
            if len(containers) != 1:
                raise ApiError(400, f"a container name must be specified for pod {name}, choose one of: "
                                    f"[{' '.join(str(c) for c in containers)}]", "BadRequest")
            container = containers[0]
        if container not in containers + init:
            raise ApiError(400, f"container {container} is not valid for pod {name}", "BadRequest")
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (status.get("state") or {}).get("waiting")
            if status.get("name") == container and waiting:
                raise ApiError(400, f'container "{container}" in pod "{name}" is waiting to start: '
                                    f"{waiting.get('reason', 'ContainerCreating')}", "BadRequest")
        return str(container)

    async def _patch(self, request: web.Request, resource: Resource, namespace: str, name: str,
                     sub: str | None) -> web.Response:
        content_type = request.content_type
        body = await self._json(request)
        with self._lock:
            current = self._lookup(resource, namespace, name)
            if content_type == "application/json-patch+json":
                patched = json_patch(current, body)
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                if not isinstance(body, dict):
                    raise ApiError(400, "a merge patch must be a JSON object", "BadRequest")
                patched = merge_patch(current, body)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format - accepted media types "
                                    f"include: application/json-patch+json, application/merge-patch+json, "
                                    f"application/strategic-merge-patch+json (got {content_type})",
                               "UnsupportedMediaType")
            if not isinstance(patched, dict):
                raise ApiError(422, "the patch produced something that is not an object")
            if not isinstance(patched.get("metadata"), dict):
                raise ApiError(422, "metadata: Required value")
            return web.json_response(self._update(resource, namespace, name, patched, subresource=sub))


def _micro_time(value: str, where: str) -> str:
    """A MicroTime (RFC 3339, any offset) as the API server serializes it: UTC, microseconds, `Z`."""
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{where}: parsing time {json.dumps(value)} as RFC 3339 failed", "BadRequest") from None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _log_window(request: web.Request, text: str) -> str:
    """`tailLines` (the last n lines), then `limitBytes` (the first n bytes of those), as the kubelet applies them."""
    tail = request.query.get("tailLines")
    if tail is not None:
        try:
            count = int(tail)
        except ValueError as exc:
            raise ApiError(400, "invalid tailLines", "BadRequest") from exc
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-count:]) if count > 0 else ""
    limit = request.query.get("limitBytes")
    if limit is not None:
        text = text.encode()[: int(limit)].decode(errors="ignore")
    return text


def _expired(start: int, compacted: int) -> dict[str, Any]:
    return {"type": "ERROR", "object": status_object(
        410, f"too old resource version: {start} ({compacted})", "Expired")}


def _started_at(pod: dict[str, Any]) -> str | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        state = status.get("state") or {}
        for value in state.values():
            if isinstance(value, dict) and value.get("startedAt"):
                return str(value["startedAt"])
    return None


def _container_id(pod: dict[str, Any], container: str) -> str:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == container and status.get("containerID"):
            return str(status["containerID"])
    return "containerd://" + uuid.uuid4().hex


__all__ = ["ApiError", "KubeEmulator", "json_patch", "merge_patch", "parse_label_selector"]
