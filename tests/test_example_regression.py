"""examples/regression on the test bed: the real workload runs as a process, the way its Job would
(the commit's source as fetched by the init container, the Job's own env, S3 credentials as the
Secret gives them), against the real S3 server; the bot's verdict on what it wrote is checked.

The story of the seed pipeline: swapping LeakyReLU for ReLU passes every unit test and silently
ruins the model; the regression gate catches it, a harmless change passes."""
from __future__ import annotations

import asyncio
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bot.core import config
from tests.conftest import NAMESPACE, Bed, wait_for
from tests.test_regression import (
    MAIN,
    MAINTAINER,
    REPO,
    approve,
    completed,
    env_of,
    job_for,
    open_pr,
    push_payload,
    push_to_pr,
    sticky,
    synchronize,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "regression"
FILES = ("train.py", "model.py", "s3.py")
LEAKY = ("return np.where(z > 0, z, LEAKY_SLOPE * z)", "return np.where(z > 0, 1.0, LEAKY_SLOPE)")
RELU = ("return np.maximum(z, 0.0)", "return np.where(z > 0, 1.0, 0.0)")


def example_files() -> dict[str, str]:
    files = {f"examples/regression/{name}": (EXAMPLE / name).read_text() for name in FILES}
    files[".github/flops.yml"] = (EXAMPLE / "flops.yml").read_text()
    return files


def with_relu() -> dict[str, str]:
    """The pull request nobody would suspect: two lines of model.py."""
    text = (EXAMPLE / "model.py").read_text()
    for old, new in zip(LEAKY, RELU):
        assert old in text
        text = text.replace(old, new)
    return {"examples/regression/model.py": text}


async def run_workload(bed: Bed, job: dict[str, Any], workdir: Path) -> str:
    """Do what the Job's pod does: unpack the source from the init container's URL, run the
    container's command there with the container's env, then let the Job complete."""
    pod = job["spec"]["template"]["spec"]
    [fetch] = pod["initContainers"]
    with urllib.request.urlopen(fetch["env"][0]["value"]) as response:
        with tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz") as tar:
            tar.extractall(workdir, filter="data")
    env = {k: v for k, v in env_of(job).items() if isinstance(v, str)}
    for key, value in (("AWS_ACCESS_KEY_ID", bed.s3.access_key), ("AWS_SECRET_ACCESS_KEY", bed.s3.secret_key)):
        assert env_of(job)[key]["secretKeyRef"]["key"] == key  # what the S3 Secret provides
        env[key] = value
    [container] = pod["containers"]
    assert container["command"][0] == "python"
    process = await asyncio.create_subprocess_exec(sys.executable, *container["command"][1:], cwd=workdir,
                                                   env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    assert f"wrote s3://{bed.settings.s3.runs_bucket}/{env['FLOPS_OUTPUT']}metrics.json" in err.decode()
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], logs=out.decode() + err.decode())
    return out.decode()


async def gated(bed: Bed, sha: str, workdir: Path) -> dict[str, Any]:
    await run_workload(bed, job_for(bed, sha), workdir)
    run = await wait_for(lambda: completed(bed, sha), timeout=20, what="regression report")
    await bed.settle()
    return run


def job_for_any(bed: Bed, sha: str) -> dict[str, Any]:
    [job] = [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "regression"})
             if j["metadata"]["annotations"]["flops.dev/sha"] == sha]
    return job


def test_the_sample_config_is_valid() -> None:
    cfg = config.parse((EXAMPLE / "flops.yml").read_text())
    assert cfg.regression is not None
    assert cfg.regression.command == ("python", "examples/regression/train.py")
    assert {m.name for m in cfg.regression.metrics} == {"accuracy", "loss"}


async def test_the_example_writes_metrics_the_bot_gates_on(bed: Bed, tmp_path: Path) -> None:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.set_permission(REPO, MAINTAINER, "admin")
    first = bed.github.commit(REPO, MAIN, example_files())
    base = bed.github.commit(REPO, MAIN, {"README.md": "# model\n"})
    await bed.deliver("push", push_payload(bed, first, base))  # the default branch's run: the baseline
    await bed.settle()
    baseline = await gated(bed, base, tmp_path / "baseline")
    assert (baseline["conclusion"], baseline["output"]["title"]) == ("success", "Baseline recorded")
    written = await bed.deps.artifacts.runs.get_json(env_of(job_for_any(bed, base))["FLOPS_OUTPUT"] + "metrics.json")
    assert len(written["metrics"]["accuracy"]) == 5 and min(written["metrics"]["accuracy"]) > 0.8

    harmless = open_pr(bed, {"README.md": "# model\n\nLeakyReLU MLP on spirals.\n"})
    await approve(bed)
    ok = await gated(bed, harmless, tmp_path / "harmless")
    assert (ok["conclusion"], ok["output"]["title"]) == ("success", "0 regressions / 2 metrics")
    assert f"Baseline: `{base[:7]}` (the merge-base)" in ok["output"]["summary"]

    relu = push_to_pr(bed, with_relu())
    await synchronize(bed, harmless)
    await approve(bed)
    bad = await gated(bed, relu, tmp_path / "relu")
    assert (bad["conclusion"], bad["output"]["title"]) == ("failure", "2 regressions / 2 metrics")
    rows = {line.split(" | ")[0].strip("| "): line for line in bad["output"]["summary"].splitlines()
            if line.startswith(("| accuracy", "| loss"))}
    assert rows["accuracy"].endswith("❌ regression |") and rows["loss"].endswith("❌ regression |")
    [note] = sticky(bed)
    assert "Runs of this pull request (2)" in note["body"] and "**failure**" in note["body"]


@pytest.mark.parametrize("variant", ["leaky", "relu"])
async def test_the_example_runs_locally_without_the_bot(tmp_path: Path, variant: str) -> None:
    """On a laptop (no FLOPS_OUTPUT) it writes ./metrics.json; ReLU visibly collapses some seeds."""
    for name in FILES:
        (tmp_path / name).write_text((EXAMPLE / name).read_text())
    if variant == "relu":
        (tmp_path / "model.py").write_text(with_relu()["examples/regression/model.py"])
    process = await asyncio.create_subprocess_exec(sys.executable, "train.py", cwd=tmp_path, env={},
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    accuracy = json.loads((tmp_path / "metrics.json").read_text())["metrics"]["accuracy"]
    assert len(accuracy) == 5
    chance = 1 / 3
    collapsed = [a for a in accuracy if a < chance + 0.05]
    assert (collapsed == []) if variant == "leaky" else (len(collapsed) >= 1)
