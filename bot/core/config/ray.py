"""`regression.ray` (the run becomes a KubeRay RayJob: a Ray cluster for this run only) and
`regression.mlflow` (where the workload logs, and where the bot looks its run up)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from bot.core.config.fields import _between, _label_key, _label_value, _string
from bot.core.config.model import MlflowConfig, RayConfig, RayGroup, Resources
from bot.core.config.schema import _Node, _resources, _scalar_map, _unique_names
from bot.core.config.workloads import _tolerations
from bot.core.text import safe_url, shown

MAX_WORKER_GROUPS = 8
MAX_REPLICAS = 256
_RAY = ("version", "head", "workers")
_HEAD = ("resources", "node_selector", "tolerations")
_WORKER = ("name", "replicas", *_HEAD)
_MLFLOW = ("tracking_uri", "experiment")
_RAY_VERSION = re.compile(r"\d+\.\d+(\.\d+)?")
_GROUP_NAME = re.compile(r"[a-z]([-a-z0-9]{0,28}[a-z0-9])?")  # a Ray group name within the pod names' budget
_PLACEHOLDER = re.compile(r"\{[^}]*\}")


def ray_section(node: _Node) -> RayConfig | None:
    if not node.mapping(_RAY, required=("version", "head"),
                        hint=' like `{version: "2.40.0", head: {resources: {cpu: "2", memory: 8Gi}}}`'):
        return None
    head = _group(node.child("head"), "head", _HEAD) if "head" in node.value else None
    workers: list[RayGroup] = []
    if "workers" in node.value:
        entries = node.child("workers").items()
        if len(entries) > MAX_WORKER_GROUPS:
            node.add(f"lists {len(entries)} worker groups; at most {MAX_WORKER_GROUPS} are allowed", "workers")
        found = [_group(entry, "", _WORKER) for entry in entries[:MAX_WORKER_GROUPS]]
        _unique_names(entries, [g.name if g else None for g in found], "worker group name")
        workers = [g for g in found if g is not None]
    version = node.get("version", _ray_version, "")
    return RayConfig(version, head or RayGroup("head"), tuple(workers))


def _group(node: _Node, name: str, keys: tuple[str, ...]) -> RayGroup | None:
    example = '{name: gpu, replicas: 4, resources: {cpu: "8", memory: 32Gi, gpu: 1}}' if not name else \
        '{resources: {cpu: "2", memory: 8Gi}}'
    if not node.mapping(keys, required=("name",) if not name else (), hint=f" like `{example}`"):
        return None
    return RayGroup(
        name=name or node.get("name", _group_name, ""),
        replicas=node.get("replicas", _between(1, MAX_REPLICAS), 1),
        resources=_resources(node, Resources()),
        node_selector=_scalar_map(node, "node_selector", _label_key, _label_value),
        tolerations=_tolerations(node),
    )


def _ray_version(value: Any) -> str:
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _string(value)
    if isinstance(value, float) or not _RAY_VERSION.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a Ray version: write it quoted, like `\"2.40.0\"`")
    return text


def _group_name(value: Any) -> str:
    text = _string(value)
    if text == "head" or not _GROUP_NAME.fullmatch(text):
        raise ValueError(f"`{shown(text)}` is not a valid worker group name: at most 30 lowercase letters, digits "
                         "and `-`, starting with a letter (and not `head`), like `gpu`")
    return text


def mlflow_section(node: _Node) -> MlflowConfig | None:
    if not node.mapping(_MLFLOW, required=("tracking_uri",),
                        hint=' like `{tracking_uri: "http://mlflow.mlflow.svc:5000", experiment: "{repo}"}`'):
        return None
    return MlflowConfig(node.get("tracking_uri", _tracking_uri, ""), node.get("experiment", _experiment, "{repo}"))


def _tracking_uri(value: Any) -> str:
    text = _string(value).rstrip("/")
    url = safe_url(text)
    parts = urlsplit(url) if url is not None and url == text else None
    if parts is None or parts.username or parts.password or parts.query or parts.fragment:
        raise ValueError(f"`{shown(text)}` is not an MLflow tracking URI: an http(s) URL of the tracking server "
                         "with no credentials, query or fragment in it, like `http://mlflow.mlflow.svc:5000`")
    return text


def _experiment(value: Any) -> str:
    text = _string(value)
    unknown = [p for p in _PLACEHOLDER.findall(text) if p != "{repo}"]
    if not text.strip() or len(text) > 200 or unknown:
        raise ValueError(f"`{shown(text)}` is not an experiment name: 1 to 200 characters, where only `{{repo}}` "
                         "(the repository's full name) is replaced")
    return text
