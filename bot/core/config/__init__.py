"""`.github/flops.yml` (schema version 1): parsed and fully validated into frozen dataclasses.

Sans-I/O. `parse(text)` is the one entry point: it collects every problem, each with the key path
it concerns (`images[1].dockerfile`, `regression.metrics.loss.tolerance`), and raises one
`ConfigError`. Unknown keys are errors: a typo must never silently loosen a gate.

- `model`: the public dataclasses and `ConfigError`;
- `loading`: YAML in (size limit, syntax errors, duplicate keys, the Contents API's text);
- `schema`: the walker that collects problems by key path; `fields`: the scalar validators;
- `sections`: `images`, `deploy`, `regression`, `federated`; `paths`: the path globs.
"""
from __future__ import annotations

from bot.core.config.fields import parse_duration, parse_tolerance, yq_path
from bot.core.config.loading import MAX_BYTES, decode_content, load_yaml
from bot.core.config.model import (
    AUTO_MIN,
    CONFIG_PATH,
    QUEUE_KINDS,
    BisectConfig,
    ConfigError,
    DeployTarget,
    FederatedConfig,
    ImageConfig,
    Metric,
    MlflowConfig,
    Problem,
    RayConfig,
    RayGroup,
    RegressionConfig,
    RepoConfig,
    Resources,
    TestConfig,
    Tolerance,
    Volume,
)
from bot.core.config.paths import path_matches
from bot.core.config.schema import _Node
from bot.core.config.sections import repo_config

__all__ = ["AUTO_MIN", "BisectConfig", "CONFIG_PATH", "ConfigError", "DeployTarget", "FederatedConfig",
           "ImageConfig", "MAX_BYTES", "Metric", "MlflowConfig", "Problem", "QUEUE_KINDS", "RayConfig", "RayGroup",
           "RegressionConfig", "RepoConfig", "Resources", "TestConfig", "Tolerance", "Volume", "decode_content",
           "parse", "parse_duration", "parse_tolerance", "path_matches", "yq_path"]


def parse(text: str) -> RepoConfig:
    """Validate a whole flops.yml; raises `ConfigError` naming every problem."""
    data = load_yaml(text)
    problems: list[Problem] = []
    cfg = repo_config(_Node(data, "", problems))
    if problems:
        raise ConfigError(problems)
    return cfg
