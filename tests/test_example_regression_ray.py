"""examples/regression-ray on the test bed: `/regression` on its flops.yml makes a RayJob; the RayJob's
entrypoint then runs as KubeRay's submitter would have it run on the head (`shlex.split` of
`spec.entrypoint`, the head container's env, the commit's source from the init container's URL), with a
local Ray standing in for the run's cluster (`ray.init()` starts one: `ray` is in the test extra). What
it writes to the real S3 server is what the bot gates on once KubeRay (tests/emulators/kuberay.py)
says the Ray job SUCCEEDED."""
from __future__ import annotations

import asyncio
import io
import shlex
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Any

from bot.core import config
from tests.conftest import NAMESPACE, Bed, wait_for
from tests.emulators.kuberay import KubeRay
from tests.test_regression import MAIN, MAINTAINER, REPO, comment, completed, open_pr

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "regression-ray"
FILES = ("examples/regression/train.py", "examples/regression/model.py", "examples/regression/s3.py",
         "examples/regression-ray/train_on_ray.py")


def test_the_sample_config_is_valid() -> None:
    cfg = config.parse((EXAMPLE / "flops.yml").read_text())
    assert cfg.regression is not None and cfg.regression.ray is not None and cfg.regression.mlflow is not None
    assert cfg.regression.command == ("python", "examples/regression-ray/train_on_ray.py")
    assert [w.name for w in cfg.regression.ray.workers] == ["cpu"]


def flops_yml() -> str:
    """The example's config, 2 seeds (a quick test), without MLflow (tests/test_regression_ray.py covers it)."""
    text = (EXAMPLE / "flops.yml").read_text().replace('SEEDS: "8"', 'SEEDS: "2"')
    return text[:text.index("  mlflow:")]


async def run_entrypoint(bed: Bed, rayjob: dict[str, Any], workdir: Path) -> str:
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    [fetch], [container] = head["initContainers"], head["containers"]
    with urllib.request.urlopen(fetch["env"][0]["value"]) as response:
        with tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz") as tar:
            tar.extractall(workdir, filter="data")
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    env.update(AWS_ACCESS_KEY_ID=bed.s3.access_key, AWS_SECRET_ACCESS_KEY=bed.s3.secret_key,  # the S3 Secret's
               HOME=str(workdir), RAY_USAGE_STATS_ENABLED="0")
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[0] == "python"
    process = await asyncio.create_subprocess_exec(sys.executable, *argv[1:], cwd=workdir, env=env,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 180)
    assert process.returncode == 0, err.decode()
    assert f"wrote s3://{bed.settings.s3.runs_bucket}/{env['FLOPS_OUTPUT']}metrics.json" in err.decode()
    return out.decode()


async def test_the_example_runs_its_seeds_as_ray_tasks_and_the_bot_gates_on_them(bed: Bed, tmp_path: Path) -> None:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.set_permission(REPO, MAINTAINER, "admin")
    bed.github.commit(REPO, MAIN, {".github/flops.yml": flops_yml(), **{f: (ROOT / f).read_text() for f in FILES}})
    head = open_pr(bed, {"README.md": "# spirals on Ray\n"})
    await comment(bed, "/regression")
    [rayjob] = bed.kube.list("rayjobs", NAMESPACE)
    out = await run_entrypoint(bed, rayjob, tmp_path / "workspace")
    KubeRay(bed.kube).succeed(rayjob["metadata"]["name"], logs=out)
    run = await wait_for(lambda: completed(bed, head), what="regression report")
    assert (run["conclusion"], run["output"]["title"]) == ("neutral", "No baseline yet")
    written = await bed.deps.artifacts.runs.get_json(
        next(e["value"] for e in rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
             ["env"] if e["name"] == "FLOPS_OUTPUT") + "metrics.json")
    assert len(written["metrics"]["accuracy"]) == 2 and min(written["metrics"]["accuracy"]) > 0.8
