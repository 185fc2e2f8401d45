"""The command line as a user runs it: a real `python -m bot` process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import payload

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flops.yml"


def run(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MINIO_", "FLOPS_", "KUBE"))}
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=ROOT, env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_serve_with_partial_settings_names_every_missing_one(tmp_path: Path) -> None:
    result = run("serve", env={"GITHUB_APP_ID": "12", "KUBECONFIG": str(tmp_path / "nope")})
    assert result.returncode != 0
    err = result.stderr
    for name in ("GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "MINIO_ENDPOINT", "MINIO_ACCESS_KEY",
                 "MINIO_SECRET_KEY"):
        assert name in err
    assert f"KUBECONFIG names '{tmp_path / 'nope'}', which does not exist" in err
    assert "GITHUB_APP_ID" not in err.replace("GITHUB_APP_ID=", "")


def test_serve_rejects_malformed_values(tmp_path: Path) -> None:
    result = run("serve", env={"GITHUB_APP_ID": "twelve", "GITHUB_PRIVATE_KEY_PATH": str(tmp_path / "key.pem"),
                               "GITHUB_WEBHOOK_SECRET": "s", "MINIO_ENDPOINT": "m:9000", "MINIO_ACCESS_KEY": "a",
                               "MINIO_SECRET_KEY": "b", "MINIO_SECURE": "maybe", "KUBERNETES_SERVICE_HOST": "x"})
    assert result.returncode != 0
    assert "GITHUB_APP_ID must be a positive integer, got 'twelve'" in result.stderr
    assert "MINIO_SECURE must be true or false, got 'maybe'" in result.stderr
    assert "GITHUB_PRIVATE_KEY_PATH names" in result.stderr


def test_check_config_accepts_the_documented_example() -> None:
    result = run("check-config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_check_config_names_each_problem(tmp_path: Path) -> None:
    bad = tmp_path / "flops.yml"
    bad.write_text("registry: harbor.example.com/flops\nimages:\n  - name: Server_1\n    dockerfile: /abs\n"
                   "regression:\n  image: x\n  command: python train.py\n  metrics: {}\n")
    result = run("check-config", str(bad))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("images[0].name" in line for line in lines)
    assert any("images[0].dockerfile" in line for line in lines)
    assert any("regression.command" in line for line in lines)


def test_check_config_knows_a_consent_file_by_its_name(tmp_path: Path) -> None:
    result = run("check-config", str(ROOT / "examples" / "flops-deploy.yml"))
    assert result.returncode == 0, result.stderr
    assert "ok (2 allow entries)" in result.stdout
    bad = tmp_path / "flops-deploy.yml"
    bad.write_text("version: 1\nallow:\n  - repo: acme\n    paths: []\n    images: [server]\n")
    result = run("check-config", str(bad))
    assert result.returncode == 1
    for key in ("allow[0].repo", "allow[0].paths", "allow[0].images"):
        assert f"{bad}: {key}" in result.stderr, result.stderr
    assert "registry" not in result.stderr  # not read as a flops.yml


def test_plan_push_prints_the_kaniko_jobs(tmp_path: Path) -> None:
    data = payload("push")
    data["after"] = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
    data["before"] = "0f0e0d0c0b0a09080706050403020100ffeeddcc"
    data["commits"][0]["modified"] = ["docs/index.md"]  # server's paths do not match; client has none
    event = tmp_path / "push.json"
    event.write_text(json.dumps(data))
    cfg = tmp_path / "flops.yml"
    cfg.write_text(EXAMPLE.read_text().replace("branches: [main]", "branches: [master]"))
    result = run("plan", "push", str(event), "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert [d["metadata"]["annotations"]["flops.dev/image"] for d in docs] == ["client"]
    args = docs[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--destination=harbor.example.com/flops/client:master-20190515151925-1a2b3c4" in args
    # the source comes through a presigned URL signed when the Job is created: the plan says what it fetches
    source = f"s3://flops/sources/{data['repository']['full_name']}/{data['after']}.tar.gz"
    [fetch] = docs[0]["spec"]["template"]["spec"]["initContainers"]
    assert fetch["env"] == [{"name": "FLOPS_SOURCE_URL", "value": f"a presigned GET (valid 7 days) of {source}, "
                                                                  "the commit's source the bot uploads from GitHub"}]
    assert f"# FLOPS_SOURCE_URL: when the Job is created, a presigned GET (valid 7 days) of {source}" in result.stdout


def test_setup_mode_with_a_malformed_port_exits_with_one_clear_line() -> None:
    result = run("serve", env={"PORT": "eighty"}, timeout=30)
    assert result.returncode == 2
    assert "flops-bot: PORT must be a positive integer, got 'eighty'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_malformed_log_level_is_named_with_the_other_settings() -> None:
    result = run("serve", env={"PORT": "8080", "LOG_LEVEL": "verbose"}, timeout=30)
    assert result.returncode == 2
    assert "flops-bot: LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'verbose'" in result.stderr
    assert "Traceback" not in result.stderr
