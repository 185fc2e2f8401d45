"""The Kubernetes conventions every object the bot creates keeps (issue 25 part 3), as one check the
flow tests call on what the Kubernetes emulator received."""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from tests import pod_security

ROOT = Path(__file__).resolve().parent.parent
RECOMMENDED = ("name", "instance", "version", "component", "part-of", "managed-by")
# The bot's own Service: a Job's pod it selected would receive webhooks.
BOT_SELECTOR = {"app.kubernetes.io/name": "flops-bot"}
# deploy/base/namespace.yaml: the bot's namespace (Pod Security `restricted`) and its Jobs' (FLOPS_NAMESPACE).
BOT_NAMESPACE = "flops-system"
JOBS_NAMESPACE = "flops"


def version() -> str:
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def namespace_level(mode: str = "enforce", name: str = JOBS_NAMESPACE) -> str:
    """The Pod Security level deploy/base gives a namespace: by default the one the bot starts its Jobs in."""
    [namespace] = [d for d in yaml.safe_load_all((ROOT / "deploy/base/namespace.yaml").read_text())
                   if d and d["metadata"]["name"] == name]
    return pod_security.level_of(namespace, mode)


def assert_recommended_labels(obj: dict[str, Any], *, component: str, instance: str) -> None:
    labels = obj["metadata"].get("labels") or {}
    what = f"{obj['kind']} {obj['metadata']['name']}"
    missing = [key for key in RECOMMENDED if f"app.kubernetes.io/{key}" not in labels]
    assert not missing, f"{what} lacks app.kubernetes.io/{missing}"
    assert labels["app.kubernetes.io/component"] == component, what
    assert labels["app.kubernetes.io/instance"] == instance, what
    assert labels["app.kubernetes.io/version"] == version(), what
    assert labels["app.kubernetes.io/part-of"] == "flops-bot" and labels["app.kubernetes.io/managed-by"] == "flops-bot"
    assert labels["app.kubernetes.io/name"] == f"flops-{component}", what


def assert_bot_job(job: dict[str, Any]) -> None:
    """Labels on the Job and its pods (the tracker's too), the default container, the Jobs' namespace and
    its Pod Security level."""
    kind = job["metadata"]["labels"]["flops.dev/kind"]
    name = job["metadata"]["name"]
    assert job["metadata"]["namespace"] == JOBS_NAMESPACE, f"{name} is not in the Jobs' namespace {JOBS_NAMESPACE}"
    assert job["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "flops-bot"  # the tracker's selector
    assert job["metadata"]["labels"]["flops.dev/run"]
    template = job["spec"]["template"]
    for obj in (job, {"kind": "Pod template of", **template, "metadata": {"name": name, **template["metadata"]}}):
        assert_recommended_labels(obj, component=kind, instance=name)
    assert not BOT_SELECTOR.items() <= template["metadata"]["labels"].items(), f"the bot's Service selects {name}"
    pod = template["spec"]
    default = template["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"]
    assert default in [c["name"] for c in pod["containers"]], f"{name}: default container {default} is not a container"
    assert default not in [c["name"] for c in pod.get("initContainers") or []]
    level = namespace_level()
    assert pod_security.violations(pod, level) == [], f"{name} would be rejected by Pod Security {level}"


def assert_bot_service(service: dict[str, Any]) -> None:
    kind = service["metadata"]["labels"]["flops.dev/kind"]
    assert_recommended_labels(service, component=kind, instance=service["metadata"]["name"])
