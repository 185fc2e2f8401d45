"""The sections of flops.yml (`images`, `deploy`, `regression`, `federated`), each walked into its
dataclass; references between them (an image name in `deploy`) are checked here."""
from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from bot.core.config.fields import (
    _METRIC,
    _between,
    _bool,
    _branch,
    _build_arg_name,
    _direction,
    _env_name,
    _file_path,
    _github_repo,
    _image_reference,
    _kind,
    _label_key,
    _label_value,
    _mode,
    _name,
    _non_empty,
    _path_pattern,
    _queue_name,
    _registry,
    _relative_path,
    _string,
    _tag_pattern,
    _version,
    _within_max,
    _yq_field,
    parse_duration,
    parse_tolerance,
)
from bot.core.config.model import (
    AUTO_MIN,
    QUEUE_KINDS,
    BisectConfig,
    DeployTarget,
    FederatedConfig,
    ImageConfig,
    Metric,
    RegressionConfig,
    RepoConfig,
    Resources,
    Tolerance,
)
from bot.core.config.paths import MAX_PATTERNS
from bot.core.config.ray import mlflow_section, ray_section
from bot.core.config.schema import _Node, _resources, _scalar_map, _string_list, _unique_names
from bot.core.config.workloads import _command, _tolerations, _volumes, tests_section
from bot.core.text import shown

MAX_CLIENTS_LIMIT = 1000
MAX_ROUNDS_LIMIT = 100_000

_TOP = ("version", "registry", "pr_registry", "branches", "tags", "images", "deploy", "regression", "federated",
        "queue", "tests")
_IMAGE = ("name", "dockerfile", "context", "paths", "inputs", "build_args", "target", "resources", "timeout")
_DEPLOY = ("name", "repo", "branch", "file", "image", "images", "field", "mode")
_REGRESSION = ("image", "command", "resources", "node_selector", "tolerations", "volumes", "env", "timeout",
               "metrics", "ray", "mlflow", "bisect")
_METRIC_KEYS = ("direction", "tolerance", "auto_k", "auto_window")
_BISECT = ("auto", "parallel", "max_commits")
MAX_PARALLEL, MAX_COMMITS = 16, 1000
_FEDERATED = ("server", "client", "clients", "rounds", "timeout", "max_clients", "max_rounds", "on_push",
              "resources", "admission_timeout")


def repo_config(top: _Node) -> RepoConfig:
    top.mapping(_TOP, required=("registry",))
    version = top.get("version", _version, 1)
    registry = top.get("registry", _registry, "")
    pr_registry = top.get("pr_registry", _registry, "") or None
    branches = _string_list(top, "branches", _branch, non_empty=True) if "branches" in top.value else None
    tags = _string_list(top, "tags", _tag_pattern, max_items=MAX_PATTERNS)
    before = len(top.problems)
    images = _images(top.child("images")) if "images" in top.value else ()
    # With a broken `images`, references to it cannot be judged: report the cause only.
    names = {image.name for image in images} if len(top.problems) == before else None
    deploy = _deploy_targets(top.child("deploy"), names) if "deploy" in top.value else ()
    regression = _regression(top.child("regression"), names) if "regression" in top.value else None
    federated = _federated(top.child("federated"), names) if "federated" in top.value else None
    queue = _queue(top.child("queue")) if "queue" in top.value else {}
    tests = tests_section(top.child("tests"), names) if "tests" in top.value else ()
    return RepoConfig(version, registry, branches, tags, images, deploy, regression, federated, pr_registry,
                      queue=queue, tests=tests)


def _queue(node: _Node) -> dict[str, str]:
    """`queue: gpu` (every kind) or `queue: {build: cpu, regression: gpu}` (kinds not named: not queued,
    or FLOPS_DEFAULT_QUEUE): Kueue LocalQueue names in the Jobs' namespace."""
    if isinstance(node.value, str) or node.value is None:
        name = node.convert(_queue_name, "")
        return dict.fromkeys(QUEUE_KINDS, name) if name else {}
    if not node.mapping(QUEUE_KINDS, hint=" of kinds to LocalQueues like `{build: cpu, regression: gpu}`, or one "
                                          "LocalQueue name for every kind"):
        return {}
    return {kind: name for kind in QUEUE_KINDS if (name := node.get(kind, _queue_name, ""))}


def _images(node: _Node) -> tuple[ImageConfig, ...]:
    entries = node.items()
    images = [_image(entry) for entry in entries]
    _unique_names(entries, [image.name if image else None for image in images], "image name")
    return tuple(image for image in images if image is not None)


def _image(node: _Node) -> ImageConfig | None:
    if not node.mapping(_IMAGE, required=("name", "dockerfile"), hint=" like `{name: server, dockerfile: Dockerfile}`"):
        return None
    raw_name = node.value.get("name")
    return ImageConfig(
        name=node.get("name", _name, raw_name if isinstance(raw_name, str) else ""),
        dockerfile=node.get("dockerfile", _file_path, ""),
        context=node.get("context", _relative_path, "."),
        paths=_string_list(node, "paths", _path_pattern, max_items=MAX_PATTERNS),
        inputs=_string_list(node, "inputs", _path_pattern, max_items=MAX_PATTERNS),
        build_args=_scalar_map(node, "build_args", _build_arg_name),
        target=node.get("target", _string, "") or None,
        resources=_resources(node, Resources("1", "2Gi", 0)),
        timeout=node.get("timeout", parse_duration, 30 * 60),
    )


def _deploy_targets(node: _Node, images: Collection[str] | None) -> tuple[DeployTarget, ...]:
    entries = node.items()
    targets = [_deploy_target(entry, images) for entry in entries]
    _unique_names(entries, [t.name if t else None for t in targets], "deploy target")
    return tuple(target for target in targets if target is not None)


def _deploy_target(node: _Node, images: Collection[str] | None) -> DeployTarget | None:
    if not node.mapping(_DEPLOY, required=("name", "repo", "branch", "file"), hint=" like `{name: dev, repo: ...}`"):
        return None
    raw_name = node.value.get("name")
    target = DeployTarget(
        name=node.get("name", _name, raw_name if isinstance(raw_name, str) else ""),
        repo=node.get("repo", _github_repo, ""),
        branch=node.get("branch", _branch, ""),
        file=node.get("file", _file_path, ""),
        images=_deploy_images(node, images),
        field=node.get("field", _yq_field, None),
        mode=node.get("mode", _mode, "commit"),
    )
    if target.field is not None and len(target.images) > 1:
        node.add("one `field` holds one image: drop `field` (each container of each image is found by its "
                 "repository) or make one target per image", "field")
    return target


def _deploy_images(node: _Node, images: Collection[str] | None) -> tuple[str, ...]:
    has_one, has_many = "image" in node.value, "images" in node.value
    if has_one == has_many:
        node.add("give exactly one of `image: <name>` and `images: [<name>, ...]`" if has_one else
                 "required: the image this target deploys (or `images: [...]` for several)", "image")
        return ()
    if has_one:
        child = node.child("image")
        name = child.convert(_image_ref_of(images), "")
        return (name,) if name else ()
    names = _string_list(node, "images", _image_ref_of(images), non_empty=True)
    return names


def _image_ref_of(images: Collection[str] | None) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        name = _non_empty(value)
        if images is not None and name not in images:
            known = ", ".join(f"`{n}`" for n in sorted(images)) or "none are defined"
            raise ValueError(f"`{shown(name)}` is not an entry of `images` (known: {known})")
        return name
    return check


def _regression(node: _Node, images: Collection[str] | None) -> RegressionConfig:
    node.mapping(_REGRESSION, required=("image", "command"))
    image = node.get("image", _image_reference, "")
    if image in (images or ()):
        node.add(f"a full image reference (like `registry.example.com/team/runtime:tag`), not the name of "
                 f"`images` entry `{image}`", "image")
    return RegressionConfig(
        image=image,
        command=_command(node),
        resources=_resources(node, Resources()),
        node_selector=_scalar_map(node, "node_selector", _label_key, _label_value),
        tolerations=_tolerations(node),
        volumes=_volumes(node),
        env=_scalar_map(node, "env", _env_name),
        timeout=node.get("timeout", parse_duration, 3600),
        metrics=_metrics(node),
        ray=ray_section(node.child("ray")) if _has(node, "ray") else None,
        mlflow=mlflow_section(node.child("mlflow")) if _has(node, "mlflow") else None,
        bisect=_bisect(node),
    )


def _bisect(node: _Node) -> BisectConfig:
    if not _has(node, "bisect"):
        return BisectConfig()
    child = node.child("bisect")
    if not child.mapping(_BISECT, hint=" like `{auto: true, parallel: 4, max_commits: 256}`"):
        return BisectConfig()
    return BisectConfig(auto=child.get("auto", _bool, False), parallel=child.get("parallel", _between(1, MAX_PARALLEL), 4),
                        max_commits=child.get("max_commits", _between(2, MAX_COMMITS), 256))


def _sigmas(value: Any) -> float:
    """`auto_k`: a number of standard deviations, above 0 and at most 10."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
        raise ValueError(f"must be a number of standard deviations above 0 and at most 10, like `3`, "
                         f"got {_kind(value)}")
    return float(value)


def _has(node: _Node, key: str) -> bool:
    return isinstance(node.value, dict) and key in node.value


def _metrics(node: _Node) -> tuple[Metric, ...]:
    if not isinstance(node.value, dict) or "metrics" not in node.value:
        return ()
    child = node.child("metrics")
    if not isinstance(child.value, dict):
        child.add(f"must be a mapping of metric names, like `{{accuracy: {{direction: higher, tolerance: 0.01}}}}`, "
                  f"got {_kind(child.value)}")
        return ()
    metrics: list[Metric] = []
    for name in child.value:
        if not isinstance(name, str) or not _METRIC.fullmatch(name):
            child.add("a metric name is letters, digits, `_`, `.` and `-`", shown(str(name)))
            continue
        entry = child.child(name)
        if not entry.mapping(_METRIC_KEYS, required=("direction",),
                             hint=" like `{direction: higher, tolerance: 0.01}`"):
            continue
        metrics.append(Metric(name, entry.get("direction", _direction, "higher"),
                              entry.get("tolerance", parse_tolerance, Tolerance(0.0)),
                              auto_k=entry.get("auto_k", _sigmas, 3.0),
                              auto_window=entry.get("auto_window", _between(AUTO_MIN, 100), 20)))
    return tuple(metrics)


def _federated(node: _Node, images: Collection[str] | None) -> FederatedConfig:
    node.mapping(_FEDERATED, required=("server", "client"))
    server_image, port, client_image = "", 8080, ""
    if isinstance(node.value, dict) and "server" in node.value:
        server = node.child("server")
        if server.mapping(("image", "port"), required=("image",), hint=" like `{image: server, port: 8080}`"):
            server_image = server.get("image", _image_ref_of(images), "")
            port = server.get("port", _between(1, 65535), 8080)
    if isinstance(node.value, dict) and "client" in node.value:
        client = node.child("client")
        if client.mapping(("image",), required=("image",), hint=" like `{image: client}`"):
            client_image = client.get("image", _image_ref_of(images), "")
    max_clients = node.get("max_clients", _between(1, MAX_CLIENTS_LIMIT), 16)
    max_rounds = node.get("max_rounds", _between(1, MAX_ROUNDS_LIMIT), 100)
    return FederatedConfig(
        server_image=server_image,
        server_port=port,
        client_image=client_image,
        clients=node.get("clients", _within_max(max_clients, "max_clients"), min(2, max_clients)),
        rounds=node.get("rounds", _within_max(max_rounds, "max_rounds"), min(3, max_rounds)),
        timeout=node.get("timeout", parse_duration, 3600),
        max_clients=max_clients,
        max_rounds=max_rounds,
        on_push=node.get("on_push", _bool, False),
        resources=_resources(node, Resources()),
        admission_timeout=node.get("admission_timeout", parse_duration, 30 * 60),
    )