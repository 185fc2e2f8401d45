"""deploy/: valid for Kubernetes 1.30 and 1.37, composable, and in step with the code it runs.

- every manifest is schema-checked with kubernetes-validate (strict); kustomization files are
  checked by composing them (a small kustomize for the subset deploy/ uses, cross-checked against
  `kubectl kustomize` where kubectl is installed);
- the Role is checked against the API calls the bot really makes: the bot's flows run on the test
  bed, every request the Kubernetes emulator receives is mapped to an RBAC (verb, resource) and
  must be granted by deploy/base/rbac.yaml;
- the Deployment sets only variables bot/platform/settings.py reads, provides every required one, probes
  real routes and outlives the drain.
"""
from __future__ import annotations

import copy
import inspect
import ipaddress
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import kubernetes_validate
import pytest
import yaml
from aiohttp import web

import bot.__main__ as entry
from bot.core import jobs
from bot.platform import settings as bot_settings
from bot.platform.kube import Kube
from bot.platform.leader import LEASE_NAME
from bot.service import app as bot_app
from bot.service.setup import create_setup_app
from tests import conventions
from tests.conftest import INSTALLATION, NAMESPACE, Bed, payload, push_payload, wait_for
from tests.conventions import BOT_NAMESPACE, JOBS_NAMESPACE
from tests.emulators.kube import KubeEmulator
from tests.samples import TWO_IMAGES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BASE = DEPLOY / "base"
OVERLAY = DEPLOY / "overlays" / "example"
COMPONENT = DEPLOY / "components" / "servicemonitor"
DASHBOARD = DEPLOY / "components" / "grafana-dashboard"
VERSIONS = ("1.30.0", "1.37.0")
# The Prometheus Operator's CRD: kubernetes-validate ships only the built-in schemas.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
# Issue 25 part 3: where each object of deploy/ lives. The bot in its namespace (Pod Security `restricted`); the
# Jobs, the Role the bot uses on them, their ServiceAccount, Secrets and network fence in theirs (`baseline`).
PLACES = {BOT_NAMESPACE: {("Deployment", "flops-bot"), ("PodDisruptionBudget", "flops-bot"),
                          ("Role", "flops-bot-leader"), ("RoleBinding", "flops-bot-leader"), ("Service", "flops-bot"), ("ServiceAccount", "flops-bot"),
                          ("ConfigMap", "flops-bot"), ("Ingress", "flops-bot"), ("NetworkPolicy", "flops-bot"),
                          ("ServiceMonitor", "flops-bot"), ("ConfigMap", "flops-bot-dashboard"),
                          ("Secret", "flops-bot-github"), ("Secret", "flops-bot-s3")},
          JOBS_NAMESPACE: {("ServiceAccount", "flops-jobs"), ("Role", "flops-bot"), ("RoleBinding", "flops-bot"),
                           ("NetworkPolicy", "flops-jobs"), ("NetworkPolicy", "flops-jobs-egress"),
                           ("Secret", "flops-s3"), ("Secret", "registry-credentials"),
                           ("Secret", "registry-credentials-pr")}}
# What issue 8 allows the bot's Role at most; the flows below show what the code needs at least.
ALLOWED = {("batch", "jobs"): {"create", "get", "list", "watch", "delete", "patch"},
           ("", "pods"): {"get", "list", "watch"}, ("", "pods/log"): {"get"},
           ("", "services"): {"create", "delete"},
           ("networking.k8s.io", "networkpolicies"): {"create", "delete"},  # issue 15: a federated run's own
           ("", "secrets"): {"get"},  # issue 16: only the Jobs' Secrets, by name (masking log tails)
           ("kueue.x-k8s.io", "workloads"): {"get", "list", "watch"},  # issue 25: read Kueue's reasons
           ("ray.io", "rayjobs"): {"create", "get", "list", "watch", "delete", "patch"},  # issue 18: RayJobs
           ("coordination.k8s.io", "leases"): {"create", "get", "update", "delete"}}  # issue 21: start claims


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    [found] = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    return found


# ---------------------------------------------------------------------------------------- kustomize

KNOWN_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "components", "images", "configMapGenerator"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


def compose(directory: Path, extra_components: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """`kustomize build` for the features deploy/ uses; anything else fails loudly."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(spec) - KNOWN_KEYS
    assert not unknown, f"{directory}: kustomization keys {sorted(unknown)} are not understood by this test's compose()"
    docs: list[dict[str, Any]] = []
    for entry_ in spec.get("resources", []):
        path = directory / entry_
        assert path.exists(), f"{directory / 'kustomization.yaml'} lists {entry_!r}, which does not exist"
        docs += compose(path) if path.is_dir() else [copy.deepcopy(d) for d in documents(path)]
    docs += [generated_config_map(directory, generator) for generator in spec.get("configMapGenerator", [])]
    for component in [directory / c for c in spec.get("components", [])] + list(extra_components):
        assert (component / "kustomization.yaml").exists(), f"component {component} has no kustomization.yaml"
        assert yaml.safe_load((component / "kustomization.yaml").read_text())["kind"] == "Component"
        docs += compose(component)
    for label_set in spec.get("labels", []):
        assert not label_set.get("includeSelectors"), "compose() never touches selectors (immutable once installed)"
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(label_set["pairs"])
            template = (doc.get("spec") or {}).get("template")
            if label_set.get("includeTemplates") and template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(label_set["pairs"])
    if namespace := spec.get("namespace"):
        for doc in docs:
            if doc["kind"] == "Namespace":
                doc["metadata"]["name"] = namespace
            elif doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = namespace
            for subject in doc.get("subjects", []):
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
    for image in spec.get("images", []):
        for doc in docs:
            for container in containers(doc):
                if container["image"].split(":")[0] == image["name"]:
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    keys = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(keys) == len(set(keys)), f"{directory}: duplicate objects {sorted(k for k in keys if keys.count(k) > 1)}"
    return docs


def generated_config_map(directory: Path, generator: dict[str, Any]) -> dict[str, Any]:
    """A `configMapGenerator` entry of files, with a stable name (kustomize's name hash is not computed here)."""
    assert set(generator) <= {"name", "namespace", "files", "options"}, \
        f"{directory}: generator keys {sorted(generator)}"
    options = generator.get("options") or {}
    assert set(options) <= {"disableNameSuffixHash", "labels", "annotations"} and options.get("disableNameSuffixHash")
    data = {}
    for entry_ in generator["files"]:
        key, _, file = entry_.rpartition("=")
        assert (directory / file).exists(), f"{directory}: the generator reads {file!r}, which does not exist"
        data[key or Path(file).name] = (directory / file).read_text()
    metadata = {"name": generator["name"], **{k: generator[k] for k in ("namespace",) if k in generator},
                **{k: dict(options[k]) for k in ("labels", "annotations") if k in options}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


def identity(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return compose(OVERLAY)


@pytest.fixture(scope="module")
def templates() -> list[dict[str, Any]]:
    return documents(OVERLAY / "secrets.example.yaml")


@pytest.fixture(scope="module")
def deployment(overlay: list[dict[str, Any]]) -> dict[str, Any]:
    return one(overlay, "Deployment", "flops-bot")


@pytest.fixture(scope="module")
def container(deployment: dict[str, Any]) -> dict[str, Any]:
    [bot] = deployment["spec"]["template"]["spec"]["containers"]
    return bot


# ---------------------------------------------------------------------------------------- schemas

@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    docs = documents(path)
    assert docs, f"{path} holds no object"
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue  # checked against the Service it scrapes, below
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_composed_overlay_is_valid_kubernetes(overlay: list[dict[str, Any]], version: str) -> None:
    for doc in overlay:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", VERSIONS)
def test_the_grafana_dashboard_component_composes_to_valid_kubernetes(version: str) -> None:
    [dashboard] = compose(DASHBOARD)
    assert dashboard["kind"] == "ConfigMap" and dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    composed = compose(OVERLAY, extra_components=(DASHBOARD,))
    assert one(composed, "ConfigMap", "flops-bot-dashboard")["metadata"]["namespace"] == BOT_NAMESPACE
    for doc in composed:
        kubernetes_validate.validate(doc, version, strict=True)


def test_every_kustomization_lists_existing_files_and_every_manifest_is_used() -> None:
    listed: set[Path] = set()
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        for entry_ in spec.get("resources", []) + spec.get("components", []):
            target = (kustomization.parent / entry_).resolve()
            assert target.exists(), f"{kustomization.relative_to(ROOT)} lists {entry_!r}, which does not exist"
            listed.add(target)
    templates_only = {OVERLAY / "secrets.example.yaml"}  # applied by hand, never by the overlay
    unused = [p.relative_to(ROOT) for p in manifest_files() if p.resolve() not in listed and p not in templates_only]
    assert not unused, f"manifests no kustomization uses: {unused}"


def test_the_overlay_composes_the_whole_installation(overlay: list[dict[str, Any]]) -> None:
    kinds = sorted({d["kind"] for d in overlay})
    assert kinds == ["ConfigMap", "Deployment", "Ingress", "Namespace", "NetworkPolicy", "PodDisruptionBudget",
                     "Role", "RoleBinding", "Service", "ServiceAccount"]
    assert sorted(d["metadata"]["name"] for d in by_kind(overlay, "Namespace")) == sorted(PLACES)
    assert not by_kind(overlay, "Secret"), "the overlay must not apply the Secret templates over real Secrets"
    assert [c["image"] for c in containers(one(overlay, "Deployment"))] == ["harbor.example.com/flops/flops-bot:0.1.0"]


@pytest.mark.parametrize("component", [None, COMPONENT, DASHBOARD], ids=["overlay", "servicemonitor", "dashboard"])
def test_every_object_names_its_namespace_the_bots_or_the_jobs(component: Path | None,
                                                                templates: list[dict[str, Any]]) -> None:
    """No kustomization-wide `namespace:` (it would put everything in one): each object says where it lives."""
    docs = compose(OVERLAY, extra_components=(component,) if component else ()) + templates
    for doc in docs:
        if doc["kind"] in CLUSTER_SCOPED:
            continue
        what, namespace = (doc["kind"], doc["metadata"]["name"]), doc["metadata"].get("namespace")
        assert namespace in PLACES, f"{what} names no namespace of deploy/base/namespace.yaml: {namespace!r}"
        assert what in PLACES[namespace], f"{what} is in {namespace}; it belongs in the other namespace"
    for kustomization in DEPLOY.rglob("kustomization.yaml"):
        assert "namespace" not in yaml.safe_load(kustomization.read_text()), kustomization.relative_to(ROOT)


def test_composition_matches_kubectl_kustomize(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: compose() is not cross-checked")
    tree = tmp_path / "deploy"
    shutil.copytree(DEPLOY, tree)
    with_monitor = tree / "overlays" / "monitored"
    with_monitor.mkdir()
    (with_monitor / "kustomization.yaml").write_text(
        "resources: [../example]\n"
        "components: [../../components/servicemonitor, ../../components/grafana-dashboard]\n")
    for directory, ours in ((tree / "overlays" / "example", compose(OVERLAY)),
                            (with_monitor, compose(with_monitor))):
        built = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60)
        assert built.returncode == 0, built.stderr
        assert identity(list(yaml.safe_load_all(built.stdout))) == identity(ours)


# ---------------------------------------------------------------------------------------- the Deployment

def known_settings() -> set[str]:
    """Every variable the bot reads: recorded from the real settings and setup code."""

    class Recording(dict[str, str]):
        seen: set[str] = set()

        def get(self, key: str, default: Any = None) -> Any:
            self.seen.add(key)
            return super().get(key, default)

    with pytest.raises(bot_settings.SettingsError):
        bot_settings.from_env(Recording())
    bot_settings.needs_setup(Recording())
    create_setup_app(Recording())
    read_directly = re.findall(r"os\.environ\.get\(\"([A-Z_]+)\"", inspect.getsource(entry))
    return Recording.seen | set(read_directly)


def pod_environment(deployment: dict[str, Any], overlay: list[dict[str, Any]],
                    templates: list[dict[str, Any]]) -> dict[str, str]:
    """The environment the kubelet would give the bot, with the Secret templates as Secrets."""
    here = deployment["metadata"]["namespace"]  # a pod reads the Secrets and ConfigMaps of its namespace only
    secrets = {s["metadata"]["name"]: s["stringData"] for s in templates if s["metadata"]["namespace"] == here}
    [bot] = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {"KUBERNETES_SERVICE_HOST": "10.0.0.1"}  # in a cluster
    for source in bot.get("envFrom", []):
        config_map = one(overlay, "ConfigMap", source["configMapRef"]["name"])
        assert config_map["metadata"]["namespace"] == here
        env.update(config_map["data"])
    for var in bot["env"]:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            field = var["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in ("metadata.namespace", "metadata.name")
            env[var["name"]] = deployment["metadata"]["namespace"] if field == "metadata.namespace" else "flops-bot-0"
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] in secrets, f"{var['name']} reads Secret {ref['name']!r}: no template in {here}"
            if ref["key"] in secrets[ref["name"]]:
                env[var["name"]] = secrets[ref["name"]][ref["key"]]
            else:
                assert ref.get("optional"), f"{var['name']}: Secret {ref['name']} template lacks key {ref['key']}"
    return env


def test_the_deployment_sets_only_variables_the_bot_reads(container: dict[str, Any],
                                                          overlay: list[dict[str, Any]]) -> None:
    known = known_settings()
    assert {"GITHUB_APP_ID", "MINIO_ENDPOINT", "FLOPS_NAMESPACE", "LOG_LEVEL"} <= known  # the recording works
    names = [var["name"] for var in container["env"]]
    assert len(names) == len(set(names))
    assert not set(names) - known, f"the Deployment sets variables the bot never reads: {set(names) - known}"
    config_keys = set(one(overlay, "ConfigMap", "flops-bot")["data"])
    assert not config_keys - known, f"the ConfigMap sets variables the bot never reads: {config_keys - known}"


def test_the_deployment_provides_every_required_setting(deployment: dict[str, Any], overlay: list[dict[str, Any]],
                                                        templates: list[dict[str, Any]]) -> None:
    env = pod_environment(deployment, overlay, templates)
    settings = bot_settings.from_env(env)  # raises, naming each missing variable
    assert not bot_settings.needs_setup(env)
    [bot] = deployment["spec"]["template"]["spec"]["containers"]
    assert settings.port == bot["ports"][0]["containerPort"]
    # FLOPS_NAMESPACE: where the Role lets the bot create Jobs, not the bot's own namespace; its default too.
    assert settings.namespace == one(overlay, "Role", "flops-bot")["metadata"]["namespace"] == JOBS_NAMESPACE
    assert bot_settings.from_env({**env, "FLOPS_NAMESPACE": ""}).namespace == JOBS_NAMESPACE
    assert deployment["metadata"]["namespace"] == BOT_NAMESPACE
    assert settings.kubeconfig is None  # in-cluster config: the ServiceAccount token
    job_accounts = [sa for sa in by_kind(overlay, "ServiceAccount") if sa["metadata"]["name"] == settings.job_service_account]
    assert job_accounts, f"FLOPS_JOB_SERVICE_ACCOUNT={settings.job_service_account} is not in deploy/base"
    assert job_accounts[0]["metadata"]["namespace"] == settings.namespace
    # The Secrets the Jobs mount (and the bot reads through the Role, to mask them) are in the Jobs' namespace.
    secret_names = {s["metadata"]["name"]: s for s in templates if s["metadata"]["namespace"] == settings.namespace}
    assert {settings.s3_secret, settings.registry_secret, settings.pr_registry_secret} <= set(secret_names)
    registry = secret_names[settings.registry_secret]
    assert registry["type"] == "kubernetes.io/dockerconfigjson"
    assert json.loads(registry["stringData"][".dockerconfigjson"])["auths"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret_names[settings.s3_secret]["stringData"])
    assert job_accounts[0]["imagePullSecrets"] == [{"name": settings.registry_secret}]


def test_the_jobs_s3_secret_is_the_jobs_user_and_its_policy_covers_the_runs_bucket_only(
        deployment: dict[str, Any], overlay: list[dict[str, Any]], templates: list[dict[str, Any]]) -> None:
    """Issue 15, finding 2: FLOPS_S3_SECRET holds the Jobs' S3 user, never the bot's keys; the MinIO
    policies under deploy/minio name the buckets the ConfigMap sets."""
    settings = bot_settings.from_env(pod_environment(deployment, overlay, templates))
    jobs_secret = one(templates, "Secret", settings.s3_secret)["stringData"]
    assert set(jobs_secret) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    [bot] = deployment["spec"]["template"]["spec"]["containers"]
    read_from = {v["valueFrom"]["secretKeyRef"]["name"] for v in bot["env"] if "secretKeyRef" in v.get("valueFrom", {})}
    assert settings.s3_secret not in read_from  # the bot's own S3 keys live in another Secret
    buckets = {name: {r.removeprefix("arn:aws:s3:::").split("/")[0] for st in policy["Statement"]
                      for r in st["Resource"]}
               for name, policy in ((p.stem, json.loads(p.read_text())) for p in (DEPLOY / "minio").glob("*.json"))}
    assert buckets == {"flops-jobs-policy": {settings.s3.runs_bucket},
                       "flops-bot-policy": {settings.s3.bucket, settings.s3.runs_bucket}}


def test_the_setup_page_env_file_names_are_the_github_secret_keys(templates: list[dict[str, Any]]) -> None:
    """`kubectl create secret generic flops-bot-github --from-env-file=.env` must fit the Deployment."""
    from bot.service.setup import env_file_text

    text = env_file_text({"id": 1, "pem": "k", "webhook_secret": "s", "html_url": "", "client_id": "Iv1.x",
                          "client_secret": "c"}, "https://api.github.com")
    names = {line.split("=", 1)[0] for line in text.splitlines() if line and not line.startswith("#")}
    assert names == set(one(templates, "Secret", "flops-bot-github")["stringData"])


def test_the_pod_is_locked_down(deployment: dict[str, Any], container: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"] and "add" not in security["capabilities"]
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    assert mounts == {"/tmp"}  # tempfile's only writable place on a read-only root


def test_the_pod_runs_as_the_dockerfile_user(deployment: dict[str, Any]) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\d+)(?::(\d+))?\s*$", dockerfile, re.M)
    assert users, "the Dockerfile must switch to a numeric non-root USER"
    uid, gid = users[-1]
    assert int(uid) != 0
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    assert context["runAsUser"] == int(uid) and context["runAsGroup"] == int(gid or uid)
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = re.search(r">=\s*(\d+\.\d+)", requires).group(1)  # type: ignore[union-attr]
    for base in bases:
        assert re.fullmatch(r"python:(\d+\.\d+)\.\d+-slim-\w+", base), f"unpinned or non-slim base image {base}"
        assert tuple(map(int, base.split(":")[1].split(".")[:2])) >= tuple(map(int, minimum.split(".")))
    for source in re.findall(r"^COPY\s+(?!--from)(.+)\s+\S+$", dockerfile, re.M):
        for name in source.split():
            assert (ROOT / name).exists(), f"the Dockerfile copies {name}, which does not exist"


def routes(app: web.Application) -> set[tuple[str, str]]:
    return {(route.method, route.resource.canonical) for route in app.router.routes() if route.resource}


def test_probes_and_service_hit_real_routes(deployment: dict[str, Any], container: dict[str, Any],
                                            overlay: list[dict[str, Any]], templates: list[dict[str, Any]]) -> None:
    settings = bot_settings.from_env(pod_environment(deployment, overlay, templates))
    served = routes(entry.build_app(settings))
    setup_served = routes(create_setup_app({}))
    port_names = {p["name"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in (container["livenessProbe"], container["readinessProbe"]):
        assert probe["httpGet"]["port"] in port_names
        assert ("GET", probe["httpGet"]["path"]) in served and ("GET", probe["httpGet"]["path"]) in setup_served
    # /readyz runs its checks with a 5 s timeout each; the probe must wait for the answer.
    assert container["readinessProbe"]["timeoutSeconds"] > 5
    service = one(overlay, "Service", "flops-bot")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
    ingress = one(overlay, "Ingress", "flops-bot")
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            backend = path["backend"]["service"]
            assert backend["name"] == "flops-bot" and backend["port"]["name"] in service_ports
            exact = path["pathType"] == "Exact"
            assert any(canonical == path["path"] or not exact and canonical.startswith(path["path"] + "/")
                       for _, canonical in served), path
    assert [p["path"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]] == \
        ["/webhook", "/runs", "/login", "/auth/callback", "/logout", "/static"]  # the webhook and the run pages, nothing else


def test_the_grace_period_outlasts_the_drain(deployment: dict[str, Any]) -> None:
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    shutdown = re.search(r"shutdown_timeout=(\d+(?:\.\d+)?)", inspect.getsource(entry.run))
    assert shutdown, "bot/__main__.py run() no longer passes shutdown_timeout: update this test"
    assert grace > bot_app.DRAIN_SECONDS + float(shutdown.group(1))


def test_the_service_monitor_scrapes_the_metrics_route(overlay: list[dict[str, Any]], deployment: dict[str, Any],
                                                       templates: list[dict[str, Any]]) -> None:
    monitored = compose(OVERLAY, extra_components=(COMPONENT,))
    monitor = one(monitored, "ServiceMonitor")
    service = one(monitored, "Service", "flops-bot")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    settings = bot_settings.from_env(pod_environment(deployment, overlay, templates))
    served = routes(entry.build_app(settings))
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert ("GET", endpoint["path"]) in served



# ---------------------------------------------------------------------------------------- the Jobs' network fence

METADATA_ENDPOINT = ipaddress.ip_address("169.254.169.254")
JOB_KINDS = (jobs.BUILD, jobs.REGRESSION, jobs.FEDERATED_SERVER, jobs.FEDERATED_CLIENT)


def selects(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector against labels ({} selects everything); deploy/ uses matchLabels only."""
    assert not (selector or {}).get("matchExpressions"), "this test reads matchLabels only"
    return bool((selector or {}).get("matchLabels", {}).items() <= labels.items())


def job_pod_labels(kind: str) -> dict[str, str]:
    return {jobs.MANAGED_BY_LABEL: jobs.MANAGED_BY, jobs.KIND: kind, jobs.RUN: "run-1", "job-name": "run-1"}


def policies_for(docs: list[dict[str, Any]], namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The NetworkPolicies that apply to a pod: those of its namespace whose podSelector selects it."""
    return [d for d in by_kind(docs, "NetworkPolicy")
            if d["metadata"]["namespace"] == namespace and selects(d["spec"]["podSelector"], labels)]


def peer_selects(peer: dict[str, Any], policy_namespace: str, namespace: str, pod_labels: dict[str, str]) -> bool:
    """Whether an egress peer (a `to` entry) selects a pod in `namespace` with `pod_labels`."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        in_namespace = selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace})
    else:
        in_namespace = namespace == policy_namespace
    return in_namespace and selects(peer.get("podSelector"), pod_labels)


def holes(policies: list[dict[str, Any]], bot_pod: dict[str, str]) -> list[str]:
    """What the policies applying to a Job pod let through beyond the fence: any ingress, an egress
    rule to everywhere (no `to`, or no `ports`), the bot's pod, the cloud metadata endpoint."""
    found = []
    for policy in policies:
        name, spec = policy["metadata"]["name"], policy["spec"]
        found += [f"{name}: ingress rule {rule}" for rule in spec.get("ingress") or []]
        for rule in spec.get("egress") or []:
            if not rule.get("to") or not rule.get("ports"):
                found.append(f"{name}: egress rule without `to` or `ports` (everywhere): {rule}")
            for peer in rule.get("to") or []:
                if peer_selects(peer, policy["metadata"]["namespace"], BOT_NAMESPACE, bot_pod):
                    found.append(f"{name}: egress to the bot's pod through {peer}")
                block = peer.get("ipBlock")
                if block and METADATA_ENDPOINT in ipaddress.ip_network(block["cidr"]) and not any(
                        METADATA_ENDPOINT in ipaddress.ip_network(e) for e in block.get("except") or []):
                    found.append(f"{name}: egress to {METADATA_ENDPOINT} through {block}")
    return found


def test_job_pods_are_fenced_no_ingress_egress_to_dns_s3_and_the_registry_only(
        overlay: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
    bot_pod = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["metadata"]["namespace"] == BOT_NAMESPACE
    assert [p["metadata"]["name"] for p in policies_for(overlay, BOT_NAMESPACE, bot_pod)] == ["flops-bot"]
    for kind in JOB_KINDS:
        policies = policies_for(overlay, JOBS_NAMESPACE, job_pod_labels(kind))
        assert {p["metadata"]["name"] for p in policies} == {"flops-jobs", "flops-jobs-egress"}, kind
        assert holes(policies, bot_pod) == []
    fence = one(overlay, "NetworkPolicy", "flops-jobs")
    assert fence["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in fence["spec"]  # deny all
    [dns] = fence["spec"]["egress"]
    assert [(p["protocol"], p["port"]) for p in dns["ports"]] == [("UDP", 53), ("TCP", 53)]
    assert peer_selects(dns["to"][0], JOBS_NAMESPACE, "kube-system", {"k8s-app": "kube-dns"})
    egress = one(overlay, "NetworkPolicy", "flops-jobs-egress")["spec"]["egress"]
    assert [[p["port"] for p in rule["ports"]] for rule in egress] == [[9000], [443]]  # S3, the registry


def test_the_fence_check_finds_each_kind_of_hole(overlay: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
    bot_pod = deployment["spec"]["template"]["metadata"]["labels"]
    policy = copy.deepcopy(one(overlay, "NetworkPolicy", "flops-jobs-egress"))
    wide = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}], "ports": [{"port": 443}]}
    every_namespace = {"namespaceSelector": {}, "podSelector": {}}
    policy["spec"]["egress"] = [{"ports": [{"port": 80}]}, wide, {"to": [every_namespace], "ports": [{"port": 8080}]}]
    policy["spec"]["ingress"] = [{"from": [{"podSelector": {}}]}]
    found = holes([policy], bot_pod)
    assert len(found) == 4 and "169.254.169.254" in found[2] and "bot's pod" in found[3], found
    wide["to"][0]["ipBlock"]["except"].append("169.254.169.254/32")
    assert len(holes([policy], bot_pod)) == 3
    # The bot lives in another namespace: a peer of the Jobs' own namespace no longer reaches it, a
    # selector of the bot's namespace does.
    policy["spec"]["egress"] = [{"to": [{"podSelector": {}}], "ports": [{"port": 8080}]}]
    assert len(holes([policy], bot_pod)) == 1  # the ingress rule only
    policy["spec"]["egress"] = [{"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": BOT_NAMESPACE}}}], "ports": [{"port": 8080}]}]
    assert "bot's pod" in holes([policy], bot_pod)[-1]


def test_the_bots_pod_accepts_connections_on_its_port_only(overlay: list[dict[str, Any]],
                                                           container: dict[str, Any]) -> None:
    """flops-system's NetworkPolicy: ingress to the bot's `http` port (Ingress, Prometheus, probes); egress open."""
    policy = one(overlay, "NetworkPolicy", "flops-bot")
    assert policy["metadata"]["namespace"] == BOT_NAMESPACE
    assert policy["spec"]["podSelector"] == {"matchLabels": conventions.BOT_SELECTOR}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert [(p["protocol"], p["port"]) for p in rule["ports"]] == [("TCP", "http")]
    assert "http" in {p["name"] for p in container["ports"]}


# ---------------------------------------------------------------------------------------- RBAC

DISCOVERY = re.compile(r"/(api|apis)(/[^/]+(/v[^/]+)?)?|/version|/healthz|/livez|/readyz")


def rbac_attributes(method: str, target: str) -> tuple[str, str, str, str | None, str | None]:
    """An API request as the API server's authorizer sees it: (verb, group, resource[/sub], namespace, name).
    Raises for a path outside the resource API (nothing the bot should call)."""
    parts = urlsplit(target)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    segments = parts.path.strip("/").split("/")
    if segments[0] == "api":
        group, rest = "", segments[2:]
    elif segments[0] == "apis":
        group, rest = segments[1], segments[3:]
    else:
        raise AssertionError(f"{method} {target}: not a resource API path")
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) >= 2 and rest[0] == "namespaces":
        namespace = rest[1]  # a Namespace object is, to the authorizer, in itself
    resource, name, sub = (rest + [None, None, None])[:3]
    assert resource, f"{method} {target}: no resource"
    watching = query.get("watch", "").lower() in ("true", "1")
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
    if method == "GET":
        verb = "get" if name else ("watch" if watching else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    assert verb, f"{method} {target}: unknown method"
    return verb, group, f"{resource}/{sub}" if sub else resource, namespace, name


def granted(role: dict[str, Any], verb: str, group: str, resource: str, name: str | None) -> bool:
    for rule in role["rules"]:
        if ((group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
                and (resource in rule.get("resources", []) or "*" in rule.get("resources", []))
                and (verb in rule["verbs"] or "*" in rule["verbs"])
                and (not rule.get("resourceNames") or name in rule["resourceNames"])):
            return True
    return False


def bot_role() -> dict[str, Any]:
    return one(compose(BASE), "Role", "flops-bot")


def leader_role() -> dict[str, Any]:
    return one(compose(BASE), "Role", "flops-bot-leader")


def needed(requests: list[tuple[str, str]]) -> set[tuple[str, str, str, str | None]]:
    """(verb, group, resource, namespace) of every resource request; discovery paths need no Role."""
    return {rbac_attributes(m, t)[:4] for m, t in requests if not DISCOVERY.fullmatch(urlsplit(t).path)}


def assert_role_grants(requests: list[tuple[str, str]]) -> None:
    roles = {r["metadata"]["namespace"]: r for r in (bot_role(), leader_role())}
    missing = []
    for method, target in requests:
        if DISCOVERY.fullmatch(urlsplit(target).path):
            continue
        verb, group, resource, namespace, name = rbac_attributes(method, target)
        role = roles.get(namespace or "", bot_role())
        if namespace != role["metadata"]["namespace"]:
            missing.append(f"{method} {target}: outside the namespace {role['metadata']['namespace']} "
                           "(a Role cannot grant it; the bot must stay in its namespace)")
        elif not granted(role, verb, group, resource, name):
            missing.append(f"{method} {target}: needs verb {verb!r} on {resource!r} (apiGroup {group!r})")
    assert not missing, "deploy/base/rbac.yaml lacks:\n" + "\n".join(sorted(set(missing)))


def test_the_mapping_from_requests_to_rbac_is_the_api_servers() -> None:
    cases = {
        ("GET", "/apis/batch/v1/namespaces/flops/jobs?labelSelector=a%3Db&watch=True"): ("watch", "batch", "jobs"),
        ("GET", "/apis/batch/v1/namespaces/flops/jobs?labelSelector=a%3Db"): ("list", "batch", "jobs"),
        ("GET", "/apis/batch/v1/namespaces/flops/jobs/b-1"): ("get", "batch", "jobs"),
        ("PATCH", "/apis/batch/v1/namespaces/flops/jobs/b-1"): ("patch", "batch", "jobs"),
        ("PUT", "/apis/batch/v1/namespaces/flops/jobs/b-1/status"): ("update", "batch", "jobs/status"),
        ("DELETE", "/apis/batch/v1/namespaces/flops/jobs/b-1?propagationPolicy=Background"):
            ("delete", "batch", "jobs"),
        ("DELETE", "/api/v1/namespaces/flops/pods"): ("deletecollection", "", "pods"),
        ("GET", "/api/v1/namespaces/flops/pods/p-1/log?container=kaniko&tailLines=50"): ("get", "", "pods/log"),
        ("POST", "/api/v1/namespaces/flops/services"): ("create", "", "services"),
        ("GET", "/api/v1/namespaces/flops"): ("get", "", "namespaces"),
    }
    for (method, target), expected in cases.items():
        assert rbac_attributes(method, target)[:3] == expected, (method, target)
    assert rbac_attributes("GET", "/api/v1/pods")[3] is None  # all namespaces: a ClusterRole's business
    with pytest.raises(AssertionError, match="lacks"):
        assert_role_grants([("GET", "/api/v1/namespaces/flops/secrets/flops-bot-github")])  # the App's own
    with pytest.raises(AssertionError, match="outside the namespace"):
        assert_role_grants([("GET", "/api/v1/pods")])


def test_the_role_grants_nothing_beyond_what_issue_8_allows() -> None:
    role = bot_role()
    assert role["kind"] == "Role"  # namespaced: never a ClusterRole
    defaults = bot_settings.from_env(
        {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "k", "GITHUB_WEBHOOK_SECRET": "s", "MINIO_ENDPOINT": "m:1",
         "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b", "KUBERNETES_SERVICE_HOST": "x"})
    for rule in role["rules"]:
        assert not rule.get("nonResourceURLs")
        if rule["resources"] == ["secrets"]:  # never all Secrets: exactly the two the Jobs receive
            assert sorted(rule["resourceNames"]) == sorted([defaults.s3_secret, defaults.registry_secret, defaults.pr_registry_secret])
            assert rule["verbs"] == ["get"]
        else:
            assert not rule.get("resourceNames")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                extra = set(rule["verbs"]) - ALLOWED.get((group, resource), set())
                assert not extra, f"the Role grants {sorted(extra)} on {group or 'core'}/{resource}"
    docs = compose(BASE)
    binding = one(docs, "RoleBinding", "flops-bot")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "flops-bot"}
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    # The Role and its binding in the Jobs' namespace; the subject is the bot's ServiceAccount in the bot's.
    assert binding["metadata"]["namespace"] == role["metadata"]["namespace"] == JOBS_NAMESPACE
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": BOT_NAMESPACE}]
    assert one(docs, "ServiceAccount", pod["serviceAccountName"])["metadata"]["namespace"] == BOT_NAMESPACE
    jobs_account = one(docs, "ServiceAccount", defaults.job_service_account)
    assert jobs_account["automountServiceAccountToken"] is False
    bound = {s["name"] for b in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
             for s in b["subjects"]}
    assert jobs_account["metadata"]["name"] not in bound, "the Jobs' ServiceAccount must have no API access"


def test_only_bot_kube_and_the_tracker_call_the_kubernetes_api() -> None:
    """So that exercising `Kube` and the tracker (below, and a RayJob run's in tests/test_regression_ray.py)
    covers every call the code makes."""
    callers = set()
    for module in sorted((ROOT / "bot").rglob("*.py")) + sorted((ROOT / "handlers").rglob("*.py")):
        text = module.read_text()
        if re.search(r"(?<!\bbot)\.(batch|core)\.\w+|BatchV1Api|CoreV1Api|kubernetes\.client\.\w+Api\b|\bapi_client\.call_api",
                     text):
            callers.add(module.relative_to(ROOT).as_posix())
    assert callers == {"bot/platform/kube.py"}  # the tracker's watches stream the list call Kube.watch_method names


async def exercise(kube: KubeEmulator, name: str, client: Kube) -> None:
    """Call one `Kube` method the way the bot does, against the emulator."""
    job = {"apiVersion": "batch/v1", "kind": "Job",
           "metadata": {"name": "rbac-probe", "labels": {"app.kubernetes.io/managed-by": "flops-bot"}},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "main", "image": "busybox:1.36"}]}}}}
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "rbac-probe"},
               "spec": {"selector": {"job-name": "rbac-probe"}, "ports": [{"port": 8080}]}}
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "rbac-probe"},
              "spec": {"podSelector": {"matchLabels": {"job-name": "rbac-probe"}}, "policyTypes": ["Ingress"]}}
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE_NAME},
             "spec": {"holderIdentity": "rbac-probe", "leaseDurationSeconds": 15}}
    calls = {
        "ping": lambda: client.ping(),
        "create_job": lambda: client.create_job(job),
        "create_service": lambda: client.create_service(service),
        "create_network_policy": lambda: client.create_network_policy(policy),
        "list_jobs": lambda: client.list_jobs("app.kubernetes.io/managed-by=flops-bot"),
        "list_jobs_page": lambda: client.list_jobs_page("app.kubernetes.io/managed-by=flops-bot", 1),
        "get_job": lambda: client.get_job("rbac-probe"),
        "annotate_job": lambda: client.annotate_job("rbac-probe", {"flops.dev/reported": "success"}),
        "job_pods": lambda: client.job_pods("rbac-probe"),
        "pods": lambda: client.pods("ray.io/node-type=head,ray.io/cluster=rbac-probe"),
        "pod_log": lambda: client.pod_log(kube.list("pods", NAMESPACE, labels={"job-name": "rbac-probe"})[0]
                                          ["metadata"]["name"], "main"),
        "whole_log": lambda: client.whole_log(kube.list("pods", NAMESPACE, labels={"job-name": "rbac-probe"})[0]
                                              ["metadata"]["name"], "main", 1024),
        "delete_service": lambda: client.delete_service("rbac-probe"),
        "delete_network_policy": lambda: client.delete_network_policy("rbac-probe"),
        "delete_job": lambda: client.delete_job("rbac-probe"),
        "secret_data": lambda: client.secret_data("flops-s3"),
        "workload_of": lambda: client.workload_of("0f1e2d3c-uid"),
        "claim_job": lambda: client.claim_job("rbac-probe", kube.get("jobs", NAMESPACE, "rbac-probe")["metadata"]
                                              ["resourceVersion"], {"flops.dev/reporting": "probe 1"}),
        "get_lease": lambda: client.get_lease(BOT_NAMESPACE, LEASE_NAME),
        "create_lease": lambda: client.create_lease(BOT_NAMESPACE, lease),
        "replace_lease": lambda: client.replace_lease(BOT_NAMESPACE, {
            **lease, "metadata": {**lease["metadata"], "resourceVersion": kube.get(
                "leases", BOT_NAMESPACE, LEASE_NAME)["metadata"]["resourceVersion"]}}),
        "delete_lease": lambda: client.delete_lease(NAMESPACE, "flops-start-probe", kube.put_object(  # a start claim
            {**lease, "metadata": {"name": "flops-start-probe", "namespace": NAMESPACE}})["metadata"]["resourceVersion"]),
    }
    assert name in calls, (f"Kube.{name} is not exercised by this test: add it to exercise() so the API call "
                           "it makes is checked against deploy/base/rbac.yaml")
    await calls[name]()


def kube_methods() -> list[str]:
    order = ["ping", "create_job", "create_service", "create_network_policy", "list_jobs", "list_jobs_page",
             "get_job", "claim_job", "annotate_job", "create_lease", "get_lease", "replace_lease", "job_pods", "pod_log", "whole_log", "delete_service", "delete_network_policy", "delete_job"]
    public = [n for n, f in inspect.getmembers(Kube, inspect.iscoroutinefunction) if not n.startswith("_")]
    return sorted(public, key=lambda n: order.index(n) if n in order else len(order))


async def test_every_kube_method_is_granted_by_the_role(kube: KubeEmulator) -> None:
    client = Kube(kube.client_configuration(), NAMESPACE)
    try:
        for name in kube_methods():
            before = len(kube.requests)
            await exercise(kube, name, client)
            if name == "create_job":
                kube.start_job(NAMESPACE, "rbac-probe")  # a Pod, for job_pods and pod_log
            made = kube.requests[before:]
            assert made, f"Kube.{name} made no API request"
            assert_role_grants(made)
    finally:
        client.close()


REPO = "Codertocat/Hello-World"
FLOWS_CONFIG = TWO_IMAGES + """\
regression:
  image: harbor.example.com/flops/regression-runtime:py311
  command: ["python", "-m", "regression"]
  metrics:
    accuracy: {direction: higher, tolerance: 0.01}
federated:
  server: {image: server, port: 8080}
  client: {image: client}
  clients: 2
  rounds: 1
"""
FLOWS_FILES = {".github/flops.yml": FLOWS_CONFIG, "Dockerfile.server": "FROM python:3.11\n",
               "Dockerfile.client": "FROM python:3.11\n"}


def comment_payload(bed: Bed, body: str, number: int) -> dict[str, Any]:
    data = payload("issue_comment.created")
    seeded = bed.github.add_comment(REPO, number, body, user=data["comment"]["user"]["login"])
    data["comment"].update(body=body, id=seeded["id"])
    data["issue"]["number"] = number
    data["issue"]["pull_request"] = {"url": f"https://api.github.com/repos/{REPO}/pulls/{number}"}
    data["installation"]["id"] = INSTALLATION
    return data


def jobs_of(bed: Bed, kind: str, **labels: str) -> list[dict[str, Any]]:
    return bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": kind, **labels})


def unfinished(job: dict[str, Any]) -> bool:
    return not (job.get("status") or {}).get("conditions")


async def test_the_role_grants_every_call_the_bots_flows_make(bed: Bed) -> None:
    """Builds, a failed build's log, superseding, /regression, /train (Service + clients), /cancel."""
    bed.github.add_repo(REPO, default_branch="master")
    bed.github.commit(REPO, "master", FLOWS_FILES)
    first = push_payload(bed.github, REPO, {"Dockerfile.server": "FROM python:3.12\n"})
    await bed.deliver("push", first)
    await bed.settle()
    second = push_payload(bed.github, REPO, {"Dockerfile.server": "FROM python:3.13\n"})  # supersedes the first builds
    await bed.deliver("push", second)
    await bed.settle()
    builds = {j["metadata"]["annotations"]["flops.dev/image"]: j["metadata"]["name"]
              for j in jobs_of(bed, "build") if j["metadata"]["annotations"]["flops.dev/sha"] == second["after"]}
    bed.kube.fail_job(NAMESPACE, builds["server"], logs="step 1\nerror: no space left on device\n", exit_code=1)
    bed.kube.succeed_job(NAMESPACE, builds["client"], message="sha256:" + "cd" * 32)
    await wait_for(lambda: len([r for r in bed.github.check_runs_for(REPO, second["after"])
                                if r["status"] == "completed"]) == 2, what="both builds reported")

    head = bed.github.commit(REPO, "feature", {"server.py": "print('leaky relu')\n"})
    bed.github.add_pull(REPO, 7, head_sha=head, base_branch="master", head_ref="feature")
    bed.github.set_permission(REPO, "Codertocat", "write")
    await bed.deliver("issue_comment", comment_payload(bed, "/train\n/regression", 7))
    await bed.settle()
    assert jobs_of(bed, "regression", **{"flops.dev/pr": "7"}), "the /regression Job was not created"
    for job in jobs_of(bed, "build", **{"flops.dev/pr": "7"}):
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message="sha256:" + "ef" * 32)
    await wait_for(lambda: jobs_of(bed, "federated-server"), what="the federated server Job")
    await wait_for(lambda: len(jobs_of(bed, "federated-client")) == 2, what="the federated clients")
    assert bed.kube.list("services", NAMESPACE)
    for service in bed.kube.list("services", NAMESPACE):
        conventions.assert_bot_service(service)
    [server] = jobs_of(bed, "federated-server")
    bed.kube.fail_job(NAMESPACE, server["metadata"]["name"], logs="round 1\nTraceback: NaN loss\n", exit_code=1)
    await wait_for(lambda: not bed.kube.list("services", NAMESPACE), what="the run's Service deleted")
    await wait_for(lambda: not any(unfinished(j) for j in jobs_of(bed, "federated-client")),
                   what="running clients stopped")
    await bed.deliver("issue_comment", comment_payload(bed, "/cancel regression", 7))
    await bed.settle()
    await wait_for(lambda: not any(unfinished(j) for j in jobs_of(bed, "regression", **{"flops.dev/pr": "7"})),
                   what="the PR's regression cancelled")
    async with bed.session.get(bed.url("/readyz")) as response:
        await response.read()

    made = needed(bed.kube.requests)
    verbs = {(verb, resource) for verb, _, resource, _ in made}
    # The flows really ran: every kind of call the bot makes is among the requests checked.
    assert {("create", "jobs"), ("list", "jobs"), ("watch", "jobs"), ("get", "jobs"), ("patch", "jobs"),
            ("delete", "jobs"), ("list", "pods"), ("get", "pods/log"), ("create", "services"),
            ("delete", "services"), ("get", "secrets")} <= verbs
    assert_role_grants(bed.kube.requests)
    # Every Job the flows started runs as deploy/base's API-less ServiceAccount, without a token.
    [jobs_account] = [sa["metadata"]["name"] for sa in by_kind(compose(BASE), "ServiceAccount")
                      if sa.get("automountServiceAccountToken") is False]
    started = bed.kube.list("jobs", NAMESPACE)
    assert len(started) >= 6
    for job in started:
        pod = job["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == jobs_account and pod["automountServiceAccountToken"] is False
        conventions.assert_bot_job(job)  # issue 25: recommended labels, default container, Pod Security


def test_two_replicas_roll_one_at_a_time_spread_across_nodes_and_survive_a_drain() -> None:
    """Issue 21: both replicas serve; a rollout or a drain always leaves one."""
    docs = compose(BASE)
    deployment = one(docs, "Deployment", "flops-bot")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}
    [term] = spec["template"]["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["podAffinityTerm"]["labelSelector"], spec["template"]["metadata"]["labels"])
    budget = one(docs, "PodDisruptionBudget", "flops-bot")
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"] == BOT_NAMESPACE
    assert budget["spec"]["minAvailable"] == 1
    assert selects(budget["spec"]["selector"], spec["template"]["metadata"]["labels"])
    env = {var["name"]: var for var in spec["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"


def test_the_leader_role_grants_the_lease_by_name_and_create_only_in_the_bots_namespace() -> None:
    """get/update on flops-bot-leader only; `create` cannot be narrowed by resourceNames (RBAC does not know
    the name of an object being created), so it is the one verb on leases of the bot's namespace."""
    role, docs = leader_role(), compose(BASE)
    assert role["metadata"]["namespace"] == BOT_NAMESPACE
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert named == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                      "resourceNames": [LEASE_NAME], "verbs": ["get", "update"]}]
    assert [r for r in role["rules"] if not r.get("resourceNames")] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}]
    assert granted(role, "get", "coordination.k8s.io", "leases", LEASE_NAME)
    assert not granted(role, "get", "coordination.k8s.io", "leases", "someone-elses")
    assert not granted(role, "delete", "coordination.k8s.io", "leases", LEASE_NAME)
    binding = one(docs, "RoleBinding", "flops-bot-leader")
    assert binding["metadata"]["namespace"] == BOT_NAMESPACE
    assert binding["roleRef"]["name"] == "flops-bot-leader"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "flops-bot", "namespace": BOT_NAMESPACE}]
    defaults = bot_settings.from_env(
        {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "k", "GITHUB_WEBHOOK_SECRET": "s", "MINIO_ENDPOINT": "m:1",
         "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b", "KUBERNETES_SERVICE_HOST": "x"})
    assert defaults.lease.namespace == BOT_NAMESPACE
    assert (defaults.lease.duration, defaults.lease.renew) == (15, 10)
