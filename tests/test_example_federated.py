"""examples/federated: the real FedAvg server and 3 clients as local processes, with the environment
the bot's Jobs get, writing to the test S3 server; then the bot's report over what they wrote."""
from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import markdown
from tests.conftest import NAMESPACE, Bed
from tests.emulators.s3 import S3Server, free_port
from tests.test_federated import REPO, env_of, head_of, report_of, run_objects, start_run, table

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "federated"
DEADLINE = 60  # seconds for a whole run; it takes about one


def job_env(job: dict[str, Any], s3: S3Server, port: int) -> dict[str, str]:
    """A Job's environment for a local process: the Secret's keys filled in, and the server at
    127.0.0.1 (the Service's DNS name exists only inside the cluster)."""
    secret = {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    env = {name: value if isinstance(value, str) else secret[value["secretKeyRef"]["key"]]
           for name, value in env_of(job).items()}
    return {**env, "FL_SERVER_ADDRESS": f"127.0.0.1:{port}", "FL_PORT": str(port)}


def spawn(script: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, str(EXAMPLE / script)], env={"PATH": "/usr/bin:/bin", **env},
                            cwd=log.parent, stdout=log.open("wb"), stderr=subprocess.STDOUT)


async def finish(processes: dict[str, subprocess.Popen[bytes]], logs: Path) -> dict[str, int]:
    codes = {}
    for name, process in processes.items():
        try:
            codes[name] = await asyncio.to_thread(process.wait, DEADLINE)
        except subprocess.TimeoutExpired:
            for other in processes.values():
                other.kill()
            raise AssertionError(f"{name} did not finish in {DEADLINE}s:\n" + (logs / f"{name}.log").read_text())
    return codes


def read(s3: S3Server, bucket: str, key: str) -> bytes:
    response = s3.client().get_object(bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


async def test_fedavg_example_learns_and_the_bot_reports_what_it_wrote(bed: Bed, tmp_path: Path) -> None:
    server = await start_run(bed, "/train rounds=4 clients=3")
    run = server["metadata"]["name"]
    clients, _ = run_objects(bed, run)
    port = free_port()
    processes = {"server": spawn("server.py", job_env(server, bed.s3, port), tmp_path / "server.log")}
    for job in clients:
        name = f"client-{env_of(job)['FL_CLIENT_ID']}"
        processes[name] = spawn("client.py", job_env(job, bed.s3, port), tmp_path / f"{name}.log")
    codes = await finish(processes, tmp_path)
    logs = {name: (tmp_path / f"{name}.log").read_text() for name in processes}
    assert codes == dict.fromkeys(processes, 0), logs

    bucket, prefix = bed.settings.s3.runs_bucket, env_of(server)["FLOPS_OUTPUT"]
    written = json.loads(read(bed.s3, bucket, prefix + "metrics.json"))
    rounds = written["rounds"]
    assert [r["round"] for r in rounds] == [1, 2, 3, 4]
    accuracy = [r["metrics"]["accuracy"] for r in rounds]
    loss = [r["metrics"]["loss"] for r in rounds]
    assert all(later < earlier for earlier, later in zip(loss, loss[1:])), loss
    assert accuracy[-1] >= accuracy[0] + 0.1 and accuracy == sorted(accuracy), accuracy
    assert all(r["metrics"]["clients"] == 3 for r in rounds)
    weights = np.load(io.BytesIO(read(bed.s3, bucket, prefix + "model/weights.npy")))
    assert weights.shape == (9,) and np.all(np.isfinite(weights))

    for job in clients:
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], logs=logs[f"client-{env_of(job)['FL_CLIENT_ID']}"])
    bed.kube.succeed_job(NAMESPACE, run, logs=logs["server"])
    check = await report_of(bed, head_of(bed))
    assert check["conclusion"] == "success"
    summary = check["output"]["summary"]
    header = summary.split("### Rounds\n\n", 1)[1].splitlines()[0]
    names = [c.strip() for c in header.strip("|").split("|")][1:]
    rows = table(summary, "Rounds")
    assert [int(r[0]) for r in rows] == [r["round"] for r in rounds]
    for row, expected in zip(rows, rounds):
        assert {n: float(v) for n, v in zip(names, row[1:])} == pytest.approx(expected["metrics"], rel=1e-3)
    final = dict(re.findall(r"\*\*(\w+)\*\* ([0-9.]+)", summary.split("### Final metrics", 1)[1].split("###")[0]))
    assert {k: float(v) for k, v in final.items()} == pytest.approx(written["metrics"], rel=1e-3)
    links = {label: url for label, url in markdown.links(summary).items() if "/model/" in url}
    assert set(links) == {"weights.npy", "model.json"}
    for name, url in links.items():
        async with bed.session.get(url) as response:
            assert await response.read() == read(bed.s3, bucket, prefix + "model/" + name)
    assert {r[2] for r in table(summary, "Clients")} == {"succeeded"}
    assert check["output"]["title"].startswith(f"4 rounds, 3 clients · accuracy {accuracy[-1]:.4g}")


async def test_fedavg_server_averages_the_clients_that_reported_when_one_never_comes(s3: S3Server,
                                                                                     tmp_path: Path) -> None:
    bucket = "fl-" + uuid.uuid4().hex[:12]
    s3.client().make_bucket(bucket)
    port = free_port()
    common = {"FL_SERVER_ADDRESS": f"127.0.0.1:{port}", "FL_ROUNDS": "2", "FL_NUM_CLIENTS": "3",
              "FL_ROUND_TIMEOUT": "1", "FLOPS_OUTPUT": f"runs/{REPO}/lost/", "FLOPS_S3_BUCKET": bucket,
              "FLOPS_S3_ENDPOINT": f"http://{s3.endpoint}", "AWS_ACCESS_KEY_ID": s3.access_key,
              "AWS_SECRET_ACCESS_KEY": s3.secret_key}
    processes = {"server": spawn("server.py", {**common, "FL_PORT": str(port)}, tmp_path / "server.log")}
    for client in (0, 1):  # client 2 is lost: its node died before it started
        processes[f"client-{client}"] = spawn("client.py", {**common, "FL_CLIENT_ID": str(client)},
                                              tmp_path / f"client-{client}.log")
    codes = await finish(processes, tmp_path)
    server_log = (tmp_path / "server.log").read_text()
    assert codes == dict.fromkeys(processes, 0), server_log
    assert "round 1: clients [2] did not report within 1s" in server_log
    written = json.loads(read(s3, bucket, f"runs/{REPO}/lost/metrics.json"))
    assert [r["metrics"]["clients"] for r in written["rounds"]] == [2, 2]
    counted = sum(int(re.search(r": (\d+) samples", (tmp_path / f"client-{c}.log").read_text()).group(1))
                  for c in (0, 1))
    assert [r["metrics"]["samples"] for r in written["rounds"]] == [counted] * 2  # weighted by who reported
