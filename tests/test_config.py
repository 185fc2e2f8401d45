"""`.github/flops.yml` parsing and validation: pure functions, no server."""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.core import config
from bot.core.config import (
    ConfigError,
    DeployTarget,
    FederatedConfig,
    ImageConfig,
    Metric,
    Problem,
    RegressionConfig,
    RepoConfig,
    Resources,
    TestConfig,
    Tolerance,
    Volume,
    parse,
    parse_duration,
    parse_tolerance,
    path_matches,
    sections,
    yq_path,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "flops.yml"

BASE: dict[str, Any] = {
    "registry": "harbor.example.com/flops",
    "images": [{"name": "server", "dockerfile": "Dockerfile.server"},
               {"name": "client", "dockerfile": "Dockerfile.client"}],
    "deploy": [{"name": "dev", "repo": "acme/flops-config", "branch": "main", "file": "dev/cronjob.yaml",
                "image": "server"}],
    "regression": {"image": "harbor.example.com/flops/rt:py311", "command": ["python", "-m", "regression"],
                   "metrics": {"accuracy": {"direction": "higher", "tolerance": 0.01}}},
    "federated": {"server": {"image": "server"}, "client": {"image": "client"}},
}
DELETE = object()


def edited(path: str, value: Any) -> dict[str, Any]:
    """BASE with the value at dotted/indexed `path` replaced (or removed with DELETE)."""
    data = copy.deepcopy(BASE)
    keys: list[str | int] = []
    for part in path.split("."):
        name, *indexes = part.replace("]", "").split("[")
        keys += [name, *(int(i) for i in indexes)]
    parent: Any = data
    for key in keys[:-1]:
        parent = parent[key]
    if value is DELETE:
        del parent[keys[-1]]
    else:
        parent[keys[-1]] = value
    return data


def problems(data: dict[str, Any] | str) -> list[Problem]:
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    with pytest.raises(ConfigError) as info:
        parse(text)
    return info.value.problems


def paths_of(data: dict[str, Any] | str) -> list[str]:
    return [p.path for p in problems(data)]


# --------------------------------------------------------------------------- the documented example


def test_the_documented_example_parses_to_the_expected_dataclasses() -> None:
    cfg = parse(EXAMPLE.read_text())
    assert cfg == RepoConfig(
        version=1,
        registry="harbor.example.com/flops",
        pr_registry="harbor.example.com/flops-pr",
        branches=("main",),
        tags=("v*",),
        images=(
            ImageConfig(name="server", dockerfile="Dockerfile.server", context=".",
                        paths=("server/**", "Dockerfile.server"), build_args={"PYTHON_VERSION": "3.11"},
                        target=None, resources=Resources("1", "2Gi", 0), timeout=1800),
            ImageConfig(name="client", dockerfile="Dockerfile.client"),
        ),
        deploy=(DeployTarget(name="dev", repo="acme/flops-config", branch="main", file="dev/cronjob.yaml",
                             images=("server",), field=".spec.jobTemplate.spec.template.spec.containers[0].image",
                             mode="commit"),),
        regression=RegressionConfig(
            image="harbor.example.com/flops/regression-runtime:py311",
            command=("python", "-m", "regression"),
            resources=Resources("4", "16Gi", 1),
            node_selector={"pool": "high-cpu"},
            tolerations=({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},),
            volumes=(Volume("datasets", "/data", True),),
            env={"LOG_LEVEL": "info"},
            timeout=7200,
            metrics=(Metric("accuracy", "higher", Tolerance(0.01, False)),
                     Metric("loss", "lower", Tolerance(5.0, True))),
        ),
        federated=FederatedConfig(server_image="server", server_port=8080, client_image="client", clients=2,
                                  rounds=3, timeout=3600, max_clients=16, max_rounds=100, on_push=False,
                                  resources=Resources("1", "1Gi", 0)),
        tests=(TestConfig(name="unit", image="harbor.example.com/flops/runtime:py311",
                          command=("pytest", "-q", "--junitxml=/flops/results/junit.xml"),
                          paths=("server/**", "tests/**"), resources=Resources("2", "4Gi", 0), timeout=1200),),
    )
    assert cfg.image("client") == cfg.images[1]
    assert cfg.image("nope") is None
    assert cfg.images[0].reference(cfg.registry, "main-1") == "harbor.example.com/flops/server:main-1"


def test_every_key_of_the_example_is_commented() -> None:
    previous = ""
    for line in EXAMPLE.read_text().splitlines():
        if re.match(r"\s*(- )?\w+:", line):
            assert "#" in line or previous.lstrip().startswith("#"), line
        previous = line if line.strip() else previous


# --------------------------------------------------------------------------- defaults


def test_defaults_of_a_minimal_file() -> None:
    cfg = parse("registry: r.example.com/x\nimages:\n  - {name: app, dockerfile: Dockerfile}\n")
    assert cfg.version == 1
    assert cfg.branches is None
    assert cfg.tags == ()
    assert cfg.deploy == ()
    assert cfg.regression is None
    assert cfg.federated is None
    (image,) = cfg.images
    assert image == ImageConfig("app", "Dockerfile", ".", (), {}, None, Resources("1", "2Gi", 0), 1800)


def test_section_defaults() -> None:
    cfg = parse(yaml.safe_dump(BASE))
    assert cfg.deploy[0].mode == "commit"
    assert cfg.deploy[0].field is None
    assert cfg.regression is not None
    assert cfg.regression.timeout == 3600
    assert cfg.regression.resources == Resources(None, None, 0)
    assert (cfg.regression.node_selector, cfg.regression.tolerations, cfg.regression.volumes,
            cfg.regression.env) == ({}, (), (), {})
    assert cfg.federated == FederatedConfig(server_image="server", server_port=8080, client_image="client",
                                            clients=2, rounds=3, timeout=3600, max_clients=16, max_rounds=100,
                                            on_push=False, resources=Resources())


def test_partial_resources_keep_the_other_defaults() -> None:
    cfg = parse(yaml.safe_dump(edited("images[0].resources", {"memory": "4Gi"})))
    assert cfg.images[0].resources == Resources("1", "4Gi", 0)


def test_deploy_images_list_form_and_pull_request_mode() -> None:
    target = {"name": "prod", "repo": "acme/cfg", "branch": "main", "file": "prod/k.yaml",
              "images": ["server", "client"], "mode": "pull_request"}
    cfg = parse(yaml.safe_dump(edited("deploy", [target])))
    assert cfg.deploy[0].images == ("server", "client")
    assert cfg.deploy[0].mode == "pull_request"


def test_scalars_are_converted_to_strings() -> None:
    data = edited("images[0].build_args", {"N": 3, "FLAG": True, "F": 1.5})
    data["regression"]["env"] = {"DEBUG": False, "SEED": 7}
    data["regression"]["resources"] = {"cpu": 2, "memory": 1073741824}
    cfg = parse(yaml.safe_dump(data))
    assert cfg.images[0].build_args == {"N": "3", "FLAG": "true", "F": "1.5"}
    assert cfg.regression is not None
    assert cfg.regression.env == {"DEBUG": "false", "SEED": "7"}
    assert cfg.regression.resources == Resources("2", "1073741824", 0)


def test_federated_bounds_and_defaults_follow_the_maxima() -> None:
    cfg = parse(yaml.safe_dump(edited("federated.max_clients", 1)))
    assert cfg.federated is not None
    assert (cfg.federated.clients, cfg.federated.max_clients) == (1, 1)
    cfg = parse(yaml.safe_dump(edited("federated", {"server": {"image": "server", "port": 9000},
                                                    "client": {"image": "server"}, "clients": 16, "rounds": 100,
                                                    "on_push": True})))
    assert cfg.federated is not None
    assert (cfg.federated.server_port, cfg.federated.clients, cfg.federated.rounds) == (9000, 16, 100)
    assert cfg.federated.on_push is True


def test_yaml_merge_keys_are_not_duplicates() -> None:
    text = ("registry: r.example.com/x\nimages:\n  - &base {name: a, dockerfile: Dockerfile}\n"
            "  - <<: *base\n    name: b\n")
    assert [i.name for i in parse(text).images] == ["a", "b"]


# --------------------------------------------------------------------------- problems, one per case

CASES: list[tuple[str, Any, str, str]] = [
    # (path to edit, new value, expected problem path, fragment of the message)
    ("version", 2, "version", "version: 1"),
    ("version", "1", "version", "whole number"),
    ("version", True, "version", "whole number"),
    ("registry", DELETE, "registry", "required"),
    ("registry", "", "registry", "empty"),
    ("registry", "https://harbor.example.com/flops", "registry", "no scheme"),
    ("registry", "harbor.example.com/flops/", "registry", "no trailing slash"),
    ("registry", "harbor.example.com/flops:v1", "registry", "no tag"),
    ("registry", "harbor.example.com/flops@sha256:" + "a" * 64, "registry", "no tag"),
    ("registry", "harbor.example.com/Flops", "registry", "not a registry"),
    ("registry", 5, "registry", "string"),
    ("branches", "main", "branches", "list"),
    ("branches", [], "branches", "not be empty"),
    ("branches", ["main", "main"], "branches", "twice"),
    ("branches", ["refs/heads/main"], "branches[0]", "refs/heads"),
    ("branches", ["has space"], "branches[0]", "branch name"),
    ("branches", [None], "branches[0]", "empty value"),
    ("tags", "v*", "tags", "list"),
    ("tags", [3], "tags[0]", "string"),
    ("tags", ["refs/tags/v*"], "tags[0]", "without `refs/tags/`"),
    ("tags", [f"v{i}.*" for i in range(101)], "tags", "at most 100"),
    ("tags", ["v" * 257], "tags[0]", "at most 256"),
    ("tags", ["v*", "v*"], "tags", "twice"),
    ("images", {"name": "server"}, "images", "list"),
    ("images[1]", "client", "images[1]", "mapping"),
    ("images[1].dockerfile", DELETE, "images[1].dockerfile", "required"),
    ("images[1].name", DELETE, "images[1].name", "required"),
    ("images[1].name", "Client", "images[1].name", "not a valid name"),
    ("images[1].name", "a" * 41, "images[1].name", "at most 40"),
    ("images[1].name", "-client", "images[1].name", "not a valid name"),
    ("images[1].name", "server", "images[1].name", "duplicate image name `server`: already images[0]"),
    ("images[1].dockerfile", "/abs/Dockerfile", "images[1].dockerfile", "absolute"),
    ("images[1].dockerfile", "../Dockerfile", "images[1].dockerfile", "leaves the repository"),
    ("images[1].dockerfile", "a/../../Dockerfile", "images[1].dockerfile", "leaves the repository"),
    ("images[1].dockerfile", "docker/", "images[1].dockerfile", "directory"),
    ("images[1].context", "/src", "images[1].context", "absolute"),
    ("images[1].context", "..", "images[1].context", "leaves the repository"),
    ("images[1].context", None, "images[1].context", "empty value"),
    ("images[1].paths", "client/**", "images[1].paths", "list"),
    ("images[1].paths", ["!docs/**"], "images[1].paths[0]", "negated"),
    ("images[1].paths", ["ok/**", ""], "images[1].paths[1]", "empty"),
    ("images[1].paths", ["[z-a]"], "images[1].paths[0]", "not a valid glob"),
    ("images[1].paths", [f"dir{i}/**" for i in range(101)], "images[1].paths", "at most 100 are allowed"),
    ("images[1].paths", ["a*" * 128 + "b"], "images[1].paths[0]", "257 characters long; a pattern has at most 256"),
    ("images[1].paths", ["client/**", "client/**"], "images[1].paths", "`client/**` is listed twice"),
    ("images[1].build_args", ["A=1"], "images[1].build_args", "mapping"),
    ("images[1].build_args", {"1BAD": "x"}, "images[1].build_args.1BAD", "build argument name"),
    ("images[1].build_args", {"A": [1]}, "images[1].build_args.A", "string or number"),
    ("images[1].build_args", {"A": {"b": 1}}, "images[1].build_args.A", "string or number"),
    ("images[1].target", 3, "images[1].target", "string"),
    ("images[1].resources", "big", "images[1].resources", "mapping"),
    ("images[1].resources", {"cpu": "fast"}, "images[1].resources.cpu", "CPU quantity"),
    ("images[1].resources", {"cpu": 0}, "images[1].resources.cpu", "more than 0"),
    ("images[1].resources", {"cpu": "-1"}, "images[1].resources.cpu", "CPU quantity"),
    ("images[1].resources", {"memory": "16GB"}, "images[1].resources.memory", "write `16G`"),
    ("images[1].resources", {"memory": "lots"}, "images[1].resources.memory", "memory quantity"),
    ("images[1].resources", {"memory": 1.5}, "images[1].resources.memory", "memory quantity"),
    ("images[1].resources", {"gpu": -1}, "images[1].resources.gpu", "negative"),
    ("images[1].resources", {"gpu": 1.5}, "images[1].resources.gpu", "whole number"),
    ("images[1].resources", {"gpus": 1}, "images[1].resources.gpus", "did you mean `gpu`?"),
    ("images[1].timeout", "forever", "images[1].timeout", "not a duration"),
    ("images[1].timeout", 0, "images[1].timeout", "longer than 0"),
    ("images[1].dockerfle", "x", "images[1].dockerfle", "did you mean `dockerfile`?"),
    ("deploy", {"name": "dev"}, "deploy", "list"),
    ("deploy[0].name", "Dev!", "deploy[0].name", "not a valid name"),
    ("deploy[0].repo", "flops-config", "deploy[0].repo", "owner/name"),
    ("deploy[0].repo", "acme/a/b", "deploy[0].repo", "owner/name"),
    ("deploy[0].branch", DELETE, "deploy[0].branch", "required"),
    ("deploy[0].branch", "a..b", "deploy[0].branch", "branch name"),
    ("deploy[0].file", DELETE, "deploy[0].file", "required"),
    ("deploy[0].file", "/etc/passwd", "deploy[0].file", "absolute"),
    ("deploy[0].file", "../x.yaml", "deploy[0].file", "leaves the repository"),
    ("deploy[0].image", "web", "deploy[0].image", "`web` is not an entry of `images` (known: `client`, `server`)"),
    ("deploy[0].image", DELETE, "deploy[0].image", "required"),
    ("deploy[0].images", ["server"], "deploy[0].image", "exactly one of"),
    ("deploy[0].field", "spec.image", "deploy[0].field", "starts with `.`"),
    ("deploy[0].field", ".spec..image", "deploy[0].field", "empty key"),
    ("deploy[0].field", ".spec[x]", "deploy[0].field", "unexpected"),
    ("deploy[0].mode", "push", "deploy[0].mode", "`commit` or `pull_request`"),
    ("deploy[0].branches", "main", "deploy[0].branches", "did you mean `branch`?"),
    ("regression", "on", "regression", "mapping"),
    ("regression", None, "regression", "mapping"),
    ("regression.image", DELETE, "regression.image", "required"),
    ("regression.image", "Not A Ref", "regression.image", "not an image reference"),
    ("regression.image", "https://r.example.com/x:1", "regression.image", "no scheme"),
    ("regression.image", "server", "regression.image", "full image reference"),
    ("regression.command", "python -m regression", "regression.command", "use a list, no shell"),
    ("regression.command", [], "regression.command", "non-empty list"),
    ("regression.command", ["python", 3], "regression.command[1]", "string"),
    ("regression.command", ["python", "a\x00b"], "regression.command[1]", "NUL"),
    ("regression.command", ["", "x"], "regression.command[0]", "program"),
    ("regression.command", DELETE, "regression.command", "required"),
    ("regression.resources", {"gpu": True}, "regression.resources.gpu", "whole number"),
    ("regression.node_selector", {"pool": "a b"}, "regression.node_selector.pool", "label value"),
    ("regression.node_selector", {"bad key!": "x"}, "regression.node_selector.bad key!", "label key"),
    ("regression.tolerations", {"key": "x"}, "regression.tolerations", "list"),
    ("regression.tolerations", [{"key": "x", "operator": "Maybe"}], "regression.tolerations[0].operator",
     "`Exists`, `Equal`"),
    ("regression.tolerations", [{"key": "x", "effect": "Never"}], "regression.tolerations[0].effect",
     "`NoSchedule`"),
    ("regression.tolerations", [{"key": "x", "operator": "Exists", "value": "y"}],
     "regression.tolerations[0].value", "operator: Exists"),
    ("regression.tolerations", [{"operator": "Equal", "value": "y"}], "regression.tolerations[0].key", "required"),
    ("regression.tolerations", [{"key": "x", "effect": "NoSchedule", "tolerationSeconds": 5}],
     "regression.tolerations[0].tolerationSeconds", "NoExecute"),
    ("regression.tolerations", [{"key": "x", "efect": "NoSchedule"}], "regression.tolerations[0].efect",
     "did you mean `effect`?"),
    ("regression.volumes", [{"claim": "data"}], "regression.volumes[0].mount_path", "required"),
    ("regression.volumes", [{"claim": "Data_1", "mount_path": "/d"}], "regression.volumes[0].claim",
     "PersistentVolumeClaim"),
    ("regression.volumes", [{"claim": "d", "mount_path": "data"}], "regression.volumes[0].mount_path", "absolute"),
    ("regression.volumes", [{"claim": "d", "mount_path": "/workspace"}], "regression.volumes[0].mount_path",
     "taken"),
    ("regression.volumes", [{"claim": "d", "mount_path": "/d", "read_only": "yes"}],
     "regression.volumes[0].read_only", "`true` or `false`"),
    ("regression.volumes", [{"claim": "d", "mount_path": "/d"}, {"claim": "e", "mount_path": "/d/"}],
     "regression.volumes[1].mount_path", "mounted twice"),
    ("regression.env", {"FLOPS_RUN_ID": "x"}, "regression.env.FLOPS_RUN_ID", "reserved"),
    ("regression.env", {"AWS_SECRET_ACCESS_KEY": "x"}, "regression.env.AWS_SECRET_ACCESS_KEY", "reserved"),
    ("regression.env", {"aws_region": "x"}, "regression.env.aws_region", "reserved"),
    ("regression.env", {"MY-VAR": "x"}, "regression.env.MY-VAR", "environment variable name"),
    ("regression.env", {"A": "x\x00"}, "regression.env.A", "NUL"),
    ("regression.env", {"A": None}, "regression.env.A", "empty value"),
    ("regression.timeout", "2 hours", "regression.timeout", "not a duration"),
    ("regression.metrics", ["accuracy"], "regression.metrics", "mapping"),
    ("regression.metrics.accuracy", {"direction": "up"}, "regression.metrics.accuracy.direction",
     "`higher` or `lower`"),
    ("regression.metrics.accuracy", {"tolerance": 1}, "regression.metrics.accuracy.direction", "required"),
    ("regression.metrics.accuracy", {"direction": "higher", "tolerance": -0.1},
     "regression.metrics.accuracy.tolerance", "negative"),
    ("regression.metrics.accuracy", {"direction": "higher", "tolerance": "five%"},
     "regression.metrics.accuracy.tolerance", "not a tolerance"),
    ("regression.metrics.accuracy", {"direction": "higher", "tolerence": 1},
     "regression.metrics.accuracy.tolerence", "did you mean `tolerance`?"),
    ("regression.metrics.accuracy", "higher", "regression.metrics.accuracy", "mapping"),
    ("regression.metrics", {"acc uracy": {"direction": "higher"}}, "regression.metrics.acc uracy", "metric name"),
    ("regression.metric", {}, "regression.metric", "did you mean `metrics`?"),
    ("federated.server", DELETE, "federated.server", "required"),
    ("federated.client", DELETE, "federated.client", "required"),
    ("federated.server", "server", "federated.server", "mapping"),
    ("federated.server.image", "nope", "federated.server.image", "not an entry of `images`"),
    ("federated.client.image", "nope", "federated.client.image", "not an entry of `images`"),
    ("federated.server.port", 0, "federated.server.port", "between 1 and 65535"),
    ("federated.server.port", 70000, "federated.server.port", "between 1 and 65535"),
    ("federated.server.port", "8080", "federated.server.port", "whole number"),
    ("federated.clients", 17, "federated.clients", "between 1 and max_clients (16)"),
    ("federated.clients", 0, "federated.clients", "between 1"),
    ("federated.rounds", 101, "federated.rounds", "max_rounds (100)"),
    ("federated.max_clients", 0, "federated.max_clients", "between 1"),
    ("federated.max_rounds", 10**9, "federated.max_rounds", "between 1"),
    ("federated.on_push", "yes", "federated.on_push", "`true` or `false`"),
    ("federated.timeout", -5, "federated.timeout", "longer than 0"),
    ("federated.resources", {"cpu": "1", "mem": "1Gi"}, "federated.resources.mem", "did you mean `memory`?"),
    ("federated.client.port", 1, "federated.client.port", "unknown key"),
    ("regresion", {}, "regresion", "did you mean `regression`?"),
    ("zzz", 1, "zzz", "expected one of"),
]


@pytest.mark.parametrize(("path", "value", "where", "fragment"), CASES,
                         ids=[f"{c[0]}={c[1]!r}"[:60] for c in CASES])
def test_each_problem_names_its_key(path: str, value: Any, where: str, fragment: str) -> None:
    found = problems(edited(path, value))
    assert [p.path for p in found] == [where], found
    assert fragment in found[0].message, found[0].message


def test_all_problems_are_collected() -> None:
    data = edited("images[0].dockerfile", "/abs")
    data["images"][1]["name"] = "Bad_Name"
    data["deploy"][0]["mode"] = "push"
    data["regression"]["command"] = "python train.py"
    data["regression"]["metrics"]["loss"] = {"direction": "down", "tolerance": "-5%"}
    data["federated"]["clients"] = 99
    data["registy"] = "x"
    assert sorted(paths_of(data)) == sorted([
        "images[0].dockerfile", "images[1].name", "deploy[0].mode", "regression.command",
        "regression.metrics.loss.direction", "regression.metrics.loss.tolerance", "federated.clients", "registy",
    ])


def test_an_invalid_image_name_is_not_reported_again_where_it_is_referenced() -> None:
    data = edited("images[0].name", "Server")
    data["deploy"][0]["image"] = "Server"
    data["federated"]["server"]["image"] = "Server"
    assert paths_of(data) == ["images[0].name"]


def test_str_of_config_error_is_one_line_per_problem() -> None:
    error = ConfigError([Problem("images[1].dockerfile", "required"), Problem("", "whole file")])
    assert str(error) == "`images[1].dockerfile`: required\nwhole file"
    data = edited("images[1].dockerfile", DELETE)
    data["deploy"][0]["mode"] = "x"
    with pytest.raises(ConfigError) as info:
        parse(yaml.safe_dump(data))
    assert str(info.value).splitlines()[0] == "`images[1].dockerfile`: required"
    assert len(str(info.value).splitlines()) == 2


def test_unknown_key_suggests_the_closest_and_otherwise_lists_the_keys() -> None:
    (typo,) = problems(edited("images[0].buildargs", {"A": "1"}))
    assert typo == Problem("images[0].buildargs", "unknown key; did you mean `build_args`?")
    (case,) = problems(edited("images[0].Dockerfile", "x"))
    assert case.message == "unknown key; did you mean `dockerfile`?"
    (far,) = problems(edited("regression.metrics.accuracy.zzz", 1))
    assert far.message == "unknown key; expected one of `auto_k`, `auto_window`, `direction`, `tolerance`"


# --------------------------------------------------------------------------- whole-file problems


@pytest.mark.parametrize(("text", "fragment"), [
    ("registry: [unclosed\n", "YAML syntax error at line"),
    ("a: b: c\n", "line 1, column"),
    ("", "empty"),
    ("# only a comment\n", "empty"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("just text\n", "top level must be a mapping"),
    ("registry: a\nregistry: b\n", "line 2, column 1: duplicate key `registry`"),
    ("registry: r\nimages:\n  - {name: a, name: b, dockerfile: D}\n", "duplicate key `name`"),
    ("registry: r\nx: 2024-13-45\n", "cannot be read"),
    ("registry: !!python/object:os.system x\n", "YAML syntax error"),
    ("[" * 5000, "YAML"),
    ("a: 1\n" + "#" * (300 * 1024), "KiB"),
])
def test_whole_file_problems_have_an_empty_path(text: str, fragment: str) -> None:
    (problem,) = problems(text)
    assert problem.path == ""
    assert fragment in problem.message, problem.message


# --------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("1h30m15s", 5415), ("1h15s", 3615),
    (45, 45), ("45", 45), (" 10m ", 600), ("720h", 2592000),
])
def test_durations(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "not a duration"), ("1d", "not a duration"), ("1.5h", "not a duration"), ("30m1h", "not a duration"),
    ("h", "not a duration"), ("-5", "not a duration"), ("30 m", "not a duration"), ("0s", "longer than 0"),
    (0, "longer than 0"), (-1, "longer than 0"), ("721h", "at most 720h"), (True, "got `true`"),
    (1.5, "got the number 1.5"),
])
def test_invalid_durations(text: Any, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(("value", "expected"), [
    ("5%", Tolerance(5.0, True)), (" 2.5 % ", Tolerance(2.5, True)), (0.01, Tolerance(0.01, False)),
    (0, Tolerance(0.0, False)), ("0.5", Tolerance(0.5, False)), (3, Tolerance(3.0, False)),
    ("5.0%", Tolerance(5.0, True)),
])
def test_tolerances(value: Any, expected: Tolerance) -> None:
    assert parse_tolerance(value) == expected


@pytest.mark.parametrize("value", [-0.01, "-5%", "five", "%", float("nan"), float("inf"), True, None, [1]])
def test_invalid_tolerances(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_tolerance(value)


@pytest.mark.parametrize(("text", "segments"), [
    (".spec.jobTemplate.spec.template.spec.containers[0].image",
     ("spec", "jobTemplate", "spec", "template", "spec", "containers", 0, "image")),
    ('.metadata.labels."app.kubernetes.io/name"', ("metadata", "labels", "app.kubernetes.io/name")),
    ('."a\\"b".c', ('a"b', "c")),
    (".images[1].newTag", ("images", 1, "newTag")),
    (".a.[2]", ("a", 2)),
    (".[0].image", (0, "image")),
    (".a[0][1]", ("a", 0, 1)),
    (".my-key_2", ("my-key_2",)),
    (".a[-1]", ("a", -1)),  # the last item, as yq counts (issue 23: one grammar with bot.core.manifests)
])
def test_yq_paths(text: str, segments: tuple[str | int, ...]) -> None:
    assert yq_path(text) == segments


@pytest.mark.parametrize("text", ["", ".", "spec.a", ".a..b", ".a[", ".a[x]", '."open', ".a b", ".a.",
                                  ".a]"])
def test_invalid_yq_paths(text: str) -> None:
    with pytest.raises(ValueError):
        yq_path(text)


@pytest.mark.parametrize(("cpu", "ok"), [("500m", True), ("4", True), (2, True), (0.5, True), ("0.5", True),
                                         ("1.5m", True), ("0", False), ("1Gi", False), ("", False), ("m", False)])
def test_cpu_quantities(cpu: Any, ok: bool) -> None:
    text = yaml.safe_dump(edited("images[0].resources", {"cpu": cpu}))
    if ok:
        assert parse(text).images[0].resources.cpu == str(cpu)
    else:
        assert paths_of(text) == ["images[0].resources.cpu"]


@pytest.mark.parametrize(("memory", "ok"), [("16Gi", True), ("512Mi", True), ("1G", True), (1024, True),
                                            ("1e9", True), ("1.5Gi", True), ("0", False), ("16GB", False),
                                            ("16gi", False), ("Gi", False), (True, False), (-1, False)])
def test_memory_quantities(memory: Any, ok: bool) -> None:
    text = yaml.safe_dump(edited("images[0].resources", {"memory": memory}))
    if ok:
        assert parse(text).images[0].resources.memory == str(memory)
    else:
        assert paths_of(text) == ["images[0].resources.memory"]


@pytest.mark.parametrize("registry", ["harbor.example.com/flops", "localhost:5000", "localhost:5000/a/b",
                                      "ghcr.io/acme", "r.example.com"])
def test_valid_registries(registry: str) -> None:
    assert parse(yaml.safe_dump(edited("registry", registry))).registry == registry


@pytest.mark.parametrize("image", ["python:3.11", "r.example.com:5000/a/b:tag", "ubuntu",
                                   "r.example.com/a@sha256:" + "0" * 64])
def test_valid_regression_images(image: str) -> None:
    cfg = parse(yaml.safe_dump(edited("regression.image", image)))
    assert cfg.regression is not None and cfg.regression.image == image


# --------------------------------------------------------------------------- path matching

MATCHES = [
    ("server/**", "server/a/b.py", True),
    ("server/**", "server/app.py", True),
    ("server/**", "serverless/app.py", False),
    ("server/**", "lib/server/app.py", False),
    ("Dockerfile.server", "Dockerfile.server", True),
    ("Dockerfile.server", "sub/Dockerfile.server", True),
    ("Dockerfile.server", "Dockerfile.client", False),
    ("*.py", "setup.py", True),
    ("*.py", "a/b/c.py", True),
    ("*.py", "a/b/c.pyc", False),
    ("src/*.py", "src/a.py", True),
    ("src/*.py", "src/sub/a.py", False),
    ("src/*.py", "lib/src/a.py", False),
    ("/setup.py", "setup.py", True),
    ("/setup.py", "sub/setup.py", False),
    ("**/test_*.py", "test_x.py", True),
    ("**/test_*.py", "a/b/test_x.py", True),
    ("a/**/b.txt", "a/b.txt", True),
    ("a/**/b.txt", "a/x/y/b.txt", True),
    ("a/**/b.txt", "x/a/b.txt", False),
    ("server", "server/app.py", True),
    ("server", "lib/server/app.py", True),
    ("server/", "server/app.py", True),
    ("server/", "lib/server/app.py", True),
    ("lib/server", "lib/server/app.py", True),
    ("lib/server", "x/lib/server/app.py", False),
    ("file?.txt", "file1.txt", True),
    ("file?.txt", "file10.txt", False),
    ("[ab].txt", "b.txt", True),
    ("[!ab].txt", "b.txt", False),
    ("[!ab].txt", "c.txt", True),
    ("./server/**", "server/x", True),
    ("docs/*", "docs/a/b.md", True),  # matches the directory docs/a, so everything below it
    ("a.b", "axb", False),
    ("*a*b", "xab", True),
    ("a**b", "axyb", True),
    ("a*b*c", "abc", True),
    ("a*b*c", "acb", False),
    ("*.py", ".py", True),
    ("**", "anything/at/all", True),
    ("a/**", "a", False),
    ("a/**", "a/b", True),
    ("*.py", "caf\u00e9/\u00fcber.py", True),
    ("?.py", "\u00e9.py", True),
    ("*.py", "a\ud800.py", True),  # a lone surrogate, as a JSON payload may carry one
    ("?.py", "\udfff.py", True),
]

# The attack patterns of issue #16 (finding 4): each would backtrack for hours as one regex. They
# match, and fail to match, as the globs say; test_globs in benchmarks/bench_globs.py times them.
ATTACKS = [
    ("a*a*a*a*a*a*a*a*b", "a" * 255, False),
    ("a*a*a*a*a*a*a*a*b", "a" * 254 + "b", True),
    ("a*a*a*a*a*a*a*a*b", "x/" + "a" * 40 + "b/y.py", True),
    ("*" * 40 + "b", "a" * 255, False),
    ("?*" * 60 + "b", "a" * 119 + "b", True),
    ("?*" * 60 + "b", "a" * 59 + "b", False),
    ("[a]*" * 60 + "[!a]", "a" * 255, False),
    ("**/a*/**/a*/**/a*/**/a*/**/b", "/".join(["a"] * 120), False),
    ("**/a*/**/a*/**/a*/**/a*/**/b", "/".join(["a"] * 120 + ["b"]), True),
    ("**/" * 60 + "b", "/".join(["a"] * 120), False),
    ("**/" * 60 + "b", "/".join(["a"] * 120) + "/b/c", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), ATTACKS)
def test_hostile_globs_answer_right(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


def test_a_hostile_pattern_against_a_hostile_push_decides_which_image_builds() -> None:
    server = ImageConfig("server", "Dockerfile.server", paths=("a*a*a*a*a*a*a*a*b",))
    assert not server.matches(["a" * 255 + f"/{i}.py" for i in range(3000)])
    assert server.matches(["a" * 255 + f"/{i}.py" for i in range(3000)] + ["src/" + "a" * 8 + "b"])


def test_duplicates_in_a_long_list_are_each_named_once() -> None:
    branches = [f"r{i}" for i in range(15_000)] + ["r7", "r7", "r14999"]
    found = problems(edited("registry", BASE["registry"]) | {"branches": branches})
    assert [(p.path, p.message) for p in found] == [
        ("branches", "`r7` is listed twice"), ("branches", "`r7` is listed twice"),
        ("branches", "`r14999` is listed twice")]


def test_flops_yml_is_read_by_libyaml_when_pyyaml_has_it() -> None:
    assert yaml.__with_libyaml__  # the PyYAML wheels ship it; without it the pure loader is used
    assert config.loading._Loader is yaml.CSafeLoader


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCHES)
def test_path_matching(pattern: str, path: str, expected: bool) -> None:
    assert path_matches(pattern, path) is expected


def test_image_matches_changed_paths() -> None:
    server = ImageConfig("server", "Dockerfile.server", paths=("server/**", "Dockerfile.server"))
    assert server.matches(["docs/x.md", "server/api/v1.py"])
    assert server.matches(["Dockerfile.server"])
    assert not server.matches(["docs/x.md", "client/a.py"])
    assert not server.matches([])
    assert server.matches(None)
    everything = ImageConfig("client", "Dockerfile.client")
    assert everything.matches([]) and everything.matches(["anything"]) and everything.matches(None)


# --------------------------------------------------------------------------- never anything but ConfigError

_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20),
                     st.sampled_from(["server", "client", "30m", "5%", "1Gi", "500m", "main", "Dockerfile",
                                      "higher", "Exists", ".a[0]", "acme/x", "/data"]))
_KEYS = st.one_of(st.sampled_from(list(sections._TOP + sections._IMAGE + sections._DEPLOY + sections._REGRESSION
                                       + sections._FEDERATED + ("cpu", "memory", "gpu", "port", "claim",
                                                              "mount_path", "direction", "tolerance",
                                                              "accuracy", "key", "operator", "effect"))),
                  st.text(max_size=8))
_VALUES = st.recursive(_SCALARS, lambda children: st.one_of(st.lists(children, max_size=4),
                                                            st.dictionaries(_KEYS, children, max_size=6)),
                       max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _VALUES, max_size=8))
def test_parse_of_arbitrary_yaml_mappings_raises_only_config_error(data: dict[str, Any]) -> None:
    try:
        text = yaml.safe_dump(data)
    except yaml.YAMLError:
        return
    try:
        parse(text)
    except ConfigError as error:
        assert error.problems
        assert all(isinstance(p.path, str) and p.message for p in error.problems)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:-[]{}\"'#&*!|>%@`., \n\t0129") + ["\x00", "é", "\ud800"]),
               max_size=60))
def test_parse_of_arbitrary_text_raises_only_config_error(text: str) -> None:
    try:
        parse(text)
    except ConfigError as error:
        assert error.problems


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted({p for p, _, _, _ in CASES})), _VALUES)
def test_any_value_at_any_documented_key_raises_only_config_error(path: str, value: Any) -> None:
    try:
        text = yaml.safe_dump(edited(path, value))
    except (yaml.YAMLError, KeyError, IndexError, TypeError):
        return
    try:
        parse(text)
    except ConfigError:
        pass


def test_a_field_cannot_hold_several_images() -> None:
    text = """\
registry: harbor.example.com/flops
images:
  - {name: server, dockerfile: Dockerfile.server}
  - {name: client, dockerfile: Dockerfile.client}
deploy:
  - name: dev
    repo: acme/flops-config
    branch: main
    file: dev/all.yaml
    images: [server, client]
    field: .spec.template.spec.containers[0].image
"""
    with pytest.raises(config.ConfigError) as error:
        config.parse(text)
    [problem] = error.value.problems
    assert problem.path == "deploy[0].field" and "one `field` holds one image" in problem.message


def test_a_pattern_with_a_lone_surrogate_is_a_config_error_with_either_yaml_loader() -> None:
    text = 'registry: r.io/x\nimages: [{name: s, dockerfile: D, paths: ["a\\ud800"]}]\n'
    for loader in (yaml.CSafeLoader, yaml.SafeLoader):  # libyaml refuses the escape; the pure loader reads it
        config.loading._Loader = loader
        try:
            found = problems(text)
        finally:
            config.loading._Loader = yaml.CSafeLoader
        assert len(found) == 1 and ("Unicode" in found[0].message), found
