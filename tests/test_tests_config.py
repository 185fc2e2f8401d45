"""The `tests:` section of flops.yml: pure validation, every problem named by its key path."""
from __future__ import annotations

import pytest

from bot.core import config
from bot.core.config import ConfigError, Resources, TestConfig, Volume

TOP = "registry: harbor.example.com/flops\nimages: [{name: runtime, dockerfile: Dockerfile.runtime}]\n"


def parse(tests: str) -> config.RepoConfig:
    return config.parse(TOP + "tests:\n" + tests)


def problems(tests: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse(tests)
    return {p.path: p.message for p in caught.value.problems}


def test_the_documented_entry_and_its_defaults() -> None:
    cfg = parse("""\
  - name: unit
    image: harbor.example.com/flops/runtime:py311
    command: ["pytest", "-q", "--junitxml=/flops/results/junit.xml"]
    paths: ["src/**", "tests/**"]
    resources: {cpu: "2", memory: 4Gi, gpu: 0}
    node_selector: {pool: high-cpu}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
    volumes: [{claim: datasets, mount_path: /data, read_only: true}]
    env: {LOG_LEVEL: info}
    timeout: 20m
    on: [pull_request]
  - {name: smoke, image: runtime, command: [python, -m, smoke]}
""")
    unit, smoke = cfg.tests
    assert unit == TestConfig(
        name="unit", image="harbor.example.com/flops/runtime:py311",
        command=("pytest", "-q", "--junitxml=/flops/results/junit.xml"), build=False, paths=("src/**", "tests/**"),
        resources=Resources("2", "4Gi", 0), node_selector={"pool": "high-cpu"},
        tolerations=({"operator": "Exists", "key": "nvidia.com/gpu", "effect": "NoSchedule"},),
        volumes=(Volume("datasets", "/data", True),), env={"LOG_LEVEL": "info"}, timeout=1200, on=("pull_request",))
    assert smoke.build and smoke.image == "runtime"  # the name of an `images` entry: built for the commit
    assert smoke.timeout == 30 * 60 and smoke.on == ("pull_request", "push") and smoke.paths == ()
    assert cfg.test("smoke") is smoke and cfg.test("nope") is None


def test_paths_decide_with_the_image_matcher() -> None:
    [unit] = parse('  - {name: unit, image: runtime, command: [pytest], paths: ["src/**", "*.toml"]}\n').tests
    assert unit.matches(["src/a/b.py"]) and unit.matches(["pyproject.toml"])
    assert not unit.matches(["docs/index.md", "tests/x.py"])
    assert unit.matches(None)  # unknown changes: run


def test_every_problem_is_named() -> None:
    found = problems("""\
  - name: Unit
    image: "no such image"
    command: pytest -q
    on: [pull]
    timeout: soon
    env: {AWS_SECRET_ACCESS_KEY: x}
    colour: blue
  - {name: a, image: x/y, command: [a], on: []}
  - {name: a, image: x/y, command: [a], paths: ["!src/**"]}
  - {image: x/y}
""")
    assert "not a valid name" in found["tests[0].name"]
    assert "nor the name of an `images` entry (known: `runtime`)" in found["tests[0].image"]
    assert found["tests[0].command"].startswith("use a list, no shell")
    assert "`pull_request`, `push`" in found["tests[0].on[0]"]
    assert "not a duration" in found["tests[0].timeout"]
    assert "reserved" in found["tests[0].env.AWS_SECRET_ACCESS_KEY"]
    assert "unknown key" in found["tests[0].colour"]
    assert "must not be empty" in found["tests[1].on"]
    assert "duplicate test name `a`" in found["tests[2].name"]
    assert "negated" in found["tests[2].paths[0]"]
    assert found["tests[3].name"] == found["tests[3].command"] == "required"


def test_a_bare_on_key_is_not_yaml_true() -> None:
    [unit] = parse("  - name: unit\n    image: runtime\n    command: [pytest]\n    on: [push]\n").tests
    assert unit.on == ("push",)


def test_tests_must_be_a_list() -> None:
    assert problems("  unit: {image: runtime}\n") == {"tests": "must be a list, got a mapping"}
