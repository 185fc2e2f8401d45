"""examples/regression spread over a Ray cluster: one Ray task per seed, metrics.json as before.

As a RayJob (`regression.ray` in .github/flops.yml) KubeRay starts a Ray cluster for this run only and
runs this script as the entrypoint on the head: `ray.init()` joins that cluster, and each seed trains
on whichever node has a CPU free. Every node has the commit's source in /workspace (the bot's init
container runs on the head and on every worker), so the tasks import the same `model.py` through
PYTHONPATH, and every node has the run's FLOPS_* and S3 variables. On your laptop, `ray.init()` starts
a local Ray instead: `pip install ray numpy` and run it.

With `regression.mlflow` (and `pip install mlflow` in the image) the run is also logged to MLflow under
MLFLOW_RUN_NAME, the name flops-bot finds it by; without metrics.json the bot would gate on those.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ray

SINGLE = Path(__file__).resolve().parent.parent / "regression"  # the one-process example, reused as is
sys.path.insert(0, str(SINGLE))

import train as single  # noqa: E402 (examples/regression/train.py)

SEEDS = tuple(range(int(os.environ.get("SEEDS", "8"))))


@ray.remote(num_cpus=1)
def seed_run(seed: int) -> tuple[float, float]:
    """One seed's (accuracy, loss), on any node of the cluster."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):
        return single.train_and_evaluate(seed)


def log_to_mlflow(metrics: dict[str, list[float | None]]) -> dict[str, str]:
    """The mean of each metric logged to MLflow when the bot gave a tracking server; the run's link."""
    if not os.environ.get("MLFLOW_TRACKING_URI"):
        return {}
    try:
        import mlflow
    except ImportError:
        print("MLFLOW_TRACKING_URI is set but mlflow is not installed: not logged", file=sys.stderr)
        return {}
    tags = json.loads(os.environ.get("MLFLOW_TAGS") or "{}")
    with mlflow.start_run(run_name=os.environ.get("MLFLOW_RUN_NAME"), tags=tags) as run:
        for name, values in metrics.items():
            known = [v for v in values if v is not None]
            if known:
                mlflow.log_metric(name, sum(known) / len(known))
    experiment = run.info.experiment_id
    return {"MLflow run": f"{os.environ['MLFLOW_TRACKING_URI'].rstrip('/')}/#/experiments/{experiment}/runs/"
                          f"{run.info.run_id}"}


def main() -> int:
    # In a RayJob this joins the run's cluster (KubeRay sets RAY_ADDRESS); elsewhere it starts a local Ray.
    ray.init(runtime_env={"env_vars": {"PYTHONPATH": str(SINGLE)}})
    results = ray.get([seed_run.remote(seed) for seed in SEEDS])
    ray.shutdown()
    metrics = {"accuracy": [single.finite(a) for a, _ in results], "loss": [single.finite(l) for _, l in results]}
    print(json.dumps(metrics))
    return single.publish({"metrics": metrics, "links": log_to_mlflow(metrics)})


if __name__ == "__main__":
    sys.exit(main())
