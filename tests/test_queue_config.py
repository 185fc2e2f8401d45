"""`queue:` and `federated.admission_timeout` in flops.yml, and FLOPS_DEFAULT_QUEUE (issue #25, Kueue)."""
from __future__ import annotations

from typing import Any

import pytest
import yaml

from bot.core.config import QUEUE_KINDS, ConfigError, parse
from bot.platform import settings

BASE: dict[str, Any] = {"registry": "harbor.example.com/flops",
                        "images": [{"name": "server", "dockerfile": "Dockerfile"}],
                        "federated": {"server": {"image": "server"}, "client": {"image": "server"}}}


def parsed(**top: Any) -> Any:
    return parse(yaml.safe_dump({**BASE, **top}))


def problems(**top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parsed(**top)
    return [str(p) for p in info.value.problems]


def test_no_queue_means_no_kueue() -> None:
    cfg = parsed()
    assert cfg.queue == {}
    assert all(cfg.queue_for(kind) is None for kind in QUEUE_KINDS)
    assert cfg.queue_for("build", "team-cpu") == "team-cpu"  # FLOPS_DEFAULT_QUEUE


def test_one_queue_for_every_kind() -> None:
    cfg = parsed(queue="gpu")
    assert {kind: cfg.queue_for(kind, "other") for kind in QUEUE_KINDS} == dict.fromkeys(QUEUE_KINDS, "gpu")


def test_a_queue_per_kind_and_the_default_for_the_others() -> None:
    cfg = parsed(queue={"build": "cpu", "regression": "gpu"})
    assert cfg.queue_for("build") == "cpu"
    assert cfg.queue_for("regression", "fallback") == "gpu"
    assert cfg.queue_for("federated") is None
    assert cfg.queue_for("federated", "fallback") == "fallback"


@pytest.mark.parametrize("value, fragment", [
    ("GPU", "`queue`: `GPU` is not a LocalQueue name"),
    ("-gpu", "is not a LocalQueue name"),
    ("a" * 64, "at most 63"),
    (None, "`queue`: empty value"),
    (3, "or one LocalQueue name for every kind, got the number 3"),
    (["gpu"], "`queue`: must be a mapping of kinds to LocalQueues like `{build: cpu, regression: gpu}`"),
    ({"training": "gpu"}, "`queue.training`: unknown key"),
    ({"build": "Not Valid"}, "`queue.build`: `Not Valid` is not a LocalQueue name"),
])
def test_invalid_queues_say_what_to_write(value: Any, fragment: str) -> None:
    found = problems(queue=value)
    assert any(fragment in p for p in found), found


def test_admission_timeout_defaults_to_30_minutes_and_takes_durations() -> None:
    assert parsed().federated.admission_timeout == 30 * 60
    fed = {**BASE["federated"], "admission_timeout": "2s"}
    assert parsed(federated=fed).federated.admission_timeout == 2
    fed["admission_timeout"] = "1h30m"
    assert parsed(federated=fed).federated.admission_timeout == 5400
    fed["admission_timeout"] = "soon"
    assert any("`federated.admission_timeout`: `soon` is not a duration" in p for p in problems(federated=fed))


ENV = {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "x", "GITHUB_WEBHOOK_SECRET": "s", "MINIO_ENDPOINT": "m:9000",
       "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b", "KUBECONFIG": __file__}


def test_flops_default_queue_setting() -> None:
    assert settings.from_env(ENV).default_queue is None
    assert settings.from_env({**ENV, "FLOPS_DEFAULT_QUEUE": "team-a"}).default_queue == "team-a"
    with pytest.raises(settings.SettingsError) as info:
        settings.from_env({**ENV, "FLOPS_DEFAULT_QUEUE": "Team A"})
    assert "FLOPS_DEFAULT_QUEUE: `Team A` is not a LocalQueue name" in str(info.value)


def test_a_branch_commit_cannot_pick_its_queue() -> None:
    """Builds of other branches run with the default branch's config shaped by the commit's build keys
    (`RepoConfig.shaped_by`): the commit's `queue` is not one of them."""
    trusted, pushed = parsed(queue={"build": "cpu"}), parsed(queue="premium-gpu")
    assert trusted.shaped_by(pushed).queue_for("build") == "cpu"
