"""The regression workload flops-bot runs: train on five seeds, evaluate, write metrics.json.

In the bot's Job this runs in /workspace (the commit's exact source) with FLOPS_S3_ENDPOINT,
FLOPS_S3_BUCKET, FLOPS_OUTPUT and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY set, and writes
`<FLOPS_OUTPUT>metrics.json` to the bucket. Without FLOPS_OUTPUT (on your laptop) it writes
./metrics.json instead. Takes about a second on one CPU core.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

import model  # next to this file: Python puts a script's folder first on sys.path
import s3

SEEDS = (0, 1, 2, 3, 4)  # several seeds: the gate widens by their noise, and more seeds tighten it
LAYERS = [2, 4, 4, 4, 4, 3]
PER_CLASS, EPOCHS, LEARNING_RATE = 100, 1200, 0.3


def train_and_evaluate(seed: int) -> tuple[float, float]:
    """(held-out accuracy, held-out loss) of one seed: data, split and initialisation all follow it."""
    rng = np.random.default_rng(seed)
    x, y = model.spirals(PER_CLASS, 3, rng)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.7 * len(y))
    net = model.MLP.create(LAYERS, rng)
    for _ in range(EPOCHS):
        net.step(x[:cut], y[:cut], LEARNING_RATE)
    return net.evaluate(x[cut:], y[cut:])


def finite(value: float) -> float | None:
    """NaN/inf become null: the bot then reports the metric missing, which fails the gate."""
    return round(value, 6) if math.isfinite(value) else None


def main() -> int:
    with np.errstate(over="ignore", invalid="ignore"):
        results = [train_and_evaluate(seed) for seed in SEEDS]
    metrics = {"accuracy": [finite(a) for a, _ in results], "loss": [finite(l) for _, l in results]}
    print(json.dumps(metrics))
    return publish({"metrics": metrics, "links": {}})  # with MLflow: {"MLflow run": "<run URL>"}, see README.md


def publish(document: dict[str, object]) -> int:
    """metrics.json to `<FLOPS_OUTPUT>` in the runs bucket, or ./metrics.json without FLOPS_OUTPUT."""
    body = json.dumps(document, allow_nan=False).encode()
    output = os.environ.get("FLOPS_OUTPUT")
    if not output:
        Path("metrics.json").write_bytes(body)
        print("FLOPS_OUTPUT is not set: wrote ./metrics.json", file=sys.stderr)
        return 0
    missing = [n for n in ("FLOPS_S3_ENDPOINT", "FLOPS_S3_BUCKET", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
               if not os.environ.get(n)]
    if missing:
        print(f"missing environment: {', '.join(missing)} (flops-bot sets them in its Job)", file=sys.stderr)
        return 2
    key = output + "metrics.json"
    s3.put_object(os.environ["FLOPS_S3_ENDPOINT"], os.environ["FLOPS_S3_BUCKET"], key, body,
                  access_key=os.environ["AWS_ACCESS_KEY_ID"], secret_key=os.environ["AWS_SECRET_ACCESS_KEY"],
                  region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")
    print(f"wrote s3://{os.environ['FLOPS_S3_BUCKET']}/{key}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
