"""Issue 25 part 3, deploy/ side: recommended labels on every object, selectors as installed, Pod
Security levels on the two namespaces that the shipped pods pass (the bot's `restricted`, the Jobs'
`baseline`). (The Jobs the bot creates are checked where the flows run: tests/test_deploy_manifests.py
and tests/test_as_shipped.py, with tests/conventions.py.)"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.core.jobs.specs import KANIKO_SECURITY
from tests import conventions, pod_security
from tests.test_deploy_manifests import BASE, COMPONENT, OVERLAY, compose, one

COMPONENTS = sorted(p.parent for p in (BASE.parent / "components").glob("*/kustomization.yaml"))


def installation(*components: Path) -> list[dict[str, Any]]:
    return compose(OVERLAY, extra_components=components)


@pytest.mark.parametrize("component", [None, *COMPONENTS], ids=lambda p: p.name if p else "overlay")
def test_every_deploy_object_carries_the_recommended_labels(component: Path | None) -> None:
    docs = installation(*([component] if component else []))
    image_tag = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())["images"][0]["newTag"]
    for doc in docs:
        labels = doc["metadata"].get("labels") or {}
        what = f"{doc['kind']} {doc['metadata']['name']}"
        missing = [k for k in conventions.RECOMMENDED if f"app.kubernetes.io/{k}" not in labels]
        assert not missing, f"{what} lacks app.kubernetes.io/{missing}"
        assert labels["app.kubernetes.io/name"] == "flops-bot" and labels["app.kubernetes.io/part-of"] == "flops-bot"
        assert labels["app.kubernetes.io/version"] == conventions.version() == image_tag, what
        # Not flops-bot: the tracker lists the bot's Jobs by managed-by=flops-bot.
        assert labels["app.kubernetes.io/managed-by"] == "kustomize", what
        template = (doc.get("spec") or {}).get("template")
        if template is not None:
            assert {k: v for k, v in labels.items() if k.startswith("app.kubernetes.io/")}.items() \
                <= template["metadata"]["labels"].items(), f"{what}: its pods lack the labels"


def test_selectors_stay_as_installed() -> None:
    """Selectors are immutable on an installed Deployment: the labels must not have reached them."""
    docs = installation(COMPONENT)
    assert one(docs, "Deployment")["spec"]["selector"] == {"matchLabels": conventions.BOT_SELECTOR}
    assert one(docs, "Service")["spec"]["selector"] == conventions.BOT_SELECTOR
    assert one(docs, "ServiceMonitor")["spec"]["selector"] == {"matchLabels": conventions.BOT_SELECTOR}


def test_each_namespace_enforces_the_strictest_level_its_pods_pass() -> None:
    """The bot's namespace `restricted`; the Jobs' `baseline` (Kaniko), warning and auditing at `restricted`."""
    docs = installation()
    namespaces = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Namespace"}
    assert set(namespaces) == {conventions.BOT_NAMESPACE, conventions.JOBS_NAMESPACE}
    bot, jobs = namespaces[conventions.BOT_NAMESPACE], namespaces[conventions.JOBS_NAMESPACE]
    assert one(docs, "Deployment")["metadata"]["namespace"] == conventions.BOT_NAMESPACE
    assert one(docs, "Role", "flops-bot")["metadata"]["namespace"] == conventions.JOBS_NAMESPACE  # where the Jobs go
    assert [pod_security.level_of(bot, mode) for mode in ("enforce", "warn", "audit")] == ["restricted"] * 3
    assert pod_security.level_of(jobs) == conventions.namespace_level() == "baseline"
    assert pod_security.level_of(jobs, "warn") == pod_security.level_of(jobs, "audit") == "restricted"
    assert conventions.namespace_level(name=conventions.BOT_NAMESPACE) == "restricted"
    for namespace in (bot, jobs):
        labels = namespace["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce-version"] == "v1.30"  # the oldest Kubernetes supported


def test_the_bots_own_pod_passes_its_namespace_which_is_restricted() -> None:
    docs = installation()
    deployment = one(docs, "Deployment")
    namespace = one(docs, "Namespace", deployment["metadata"]["namespace"])
    assert pod_security.level_of(namespace) == "restricted"
    assert pod_security.violations(deployment["spec"]["template"]["spec"], "restricted") == []


def test_kaniko_is_why_the_namespace_is_not_restricted() -> None:
    """Kaniko's container, as the bot writes it, passes baseline and fails restricted: baseline is the
    strictest level it allows."""
    pod = {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
           "containers": [{"name": "kaniko", "image": "kaniko", "securityContext": KANIKO_SECURITY}]}
    assert pod_security.violations(pod, "baseline") == []
    assert pod_security.violations(pod, "restricted") == [
        "kaniko: runAsNonRoot must be true (pod or container)", "kaniko: capabilities may add only NET_BIND_SERVICE"]


LOCKED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
          "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize(("change", "level", "says"), [
    ({"hostNetwork": True}, "baseline", "host namespaces"),
    ({"hostPID": True}, "baseline", "host namespaces"),
    ({"volumes": [{"name": "root", "hostPath": {"path": "/"}}]}, "baseline", "hostPath"),
    ({"containers": [{"name": "c", "securityContext": {**LOCKED, "privileged": True}}]}, "baseline", "privileged"),
    ({"containers": [{"name": "c", "securityContext": {**LOCKED, "capabilities": {"add": ["SYS_ADMIN"]}}}]},
     "baseline", "beyond baseline"),
    ({"containers": [{"name": "c", "securityContext": LOCKED, "ports": [{"containerPort": 80, "hostPort": 80}]}]},
     "baseline", "hostPort"),
    ({"securityContext": {"seccompProfile": {"type": "Unconfined"}}}, "baseline", "Unconfined"),
    ({"containers": [{"name": "c", "securityContext": {**LOCKED, "allowPrivilegeEscalation": True}}]},
     "restricted", "allowPrivilegeEscalation"),
    ({"containers": [{"name": "c", "securityContext": {**LOCKED, "runAsNonRoot": False}}]}, "restricted",
     "runAsNonRoot"),
    ({"containers": [{"name": "c", "securityContext": {**LOCKED, "capabilities": {}}}]}, "restricted", "drop ALL"),
    ({"containers": [{"name": "c", "securityContext": {**LOCKED, "seccompProfile": {}}}]}, "restricted", "seccomp"),
    ({"volumes": [{"name": "n", "nfs": {"server": "x", "path": "/"}}]}, "restricted", "not allowed"),
])
def test_the_checker_rejects_what_pod_security_rejects(change: dict[str, Any], level: str, says: str) -> None:
    pod = {"containers": [{"name": "c", "securityContext": LOCKED}], **change}
    assert pod_security.violations({"containers": [{"name": "c", "securityContext": LOCKED}]}, "restricted") == []
    found = pod_security.violations(pod, level)
    assert any(says in line for line in found), found


def test_the_readme_says_where_each_object_of_deploy_base_lives() -> None:
    """README, 'What deploy/base holds': one row per object (or `A + B` of one namespace), in its namespace."""
    text = (BASE.parent.parent / "README.md").read_text()
    table = text[text.index("| object | namespace | what it is for |"):].split("\n\n")[0].splitlines()[2:]
    documented = set()
    for row in table:
        objects, namespace = row.split(" | ")[:2]
        for kind_name in objects.lstrip("| ").split(" + "):
            kind, name = re.fullmatch(r"(\w+) `([^`]+)`", kind_name).groups()  # type: ignore[union-attr]
            documented.add((kind, name, None if namespace == "—" else namespace.strip("`")))
    shipped = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")) for d in compose(BASE)}
    assert documented == shipped
