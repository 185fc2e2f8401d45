"""Issue 18: regression runs on a Ray cluster of their own (KubeRay RayJob), results in MLflow.

On the test bed: `/regression` on a config with `regression.ray` creates a RayJob (`ray.io/v1`, checked
against KubeRay v1.7.0's CRD schema, tests/crds/) and no batch Job; tests/emulators/kuberay.py moves it
on as KubeRay's operator would (status, submitter Job, head Pod); each end is reported once across a
restart; `/cancel` and a new head delete it; without KubeRay the check says what to install. MLflow
is tests/emulators/mlflow.py (why not `mlflow server`: see there), found by run name."""
from __future__ import annotations

import io
import json
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes_validate
import pytest

from bot.core import config
from tests import conventions
from tests.conftest import INSTALLATION, NAMESPACE, PAYLOADS, Bed, BedFactory, wait_for
from tests.emulators import crds
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.kuberay import KubeRay
from tests.emulators.mlflow import MlflowEmulator
from tests.emulators.s3 import S3Server
from tests.fencing import assert_fenced
from tests.test_regression import (
    MAIN,
    MAINTAINER,
    PR,
    REPO,
    approve,
    comment,
    completed,
    open_pr,
    push_to_pr,
    sticky,
    synchronize,
)

COMMAND = ["python", "-m", "regression", "--seeds", "8", "--note", "it's $HOME; rm -rf /"]
CONFIG = """\
registry: harbor.example.com/flops
regression:
  image: harbor.example.com/flops/ray-runtime:2.40-py311
  command: {command}
  node_selector: {{pool: cpu}}
  env: {{LOG_LEVEL: info}}
  timeout: 20m
  metrics:
    accuracy: {{direction: higher, tolerance: 0.01}}
  ray:
    version: "2.40.0"
    head: {{resources: {{cpu: "2", memory: 8Gi}}}}
    workers:
      - {{name: gpu, replicas: 4, resources: {{cpu: "8", memory: 32Gi, gpu: 1}},
         node_selector: {{pool: gpu}}, tolerations: [{{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}}]}}
  mlflow:
    tracking_uri: {mlflow}
"""


@pytest.fixture
async def mlflow() -> AsyncIterator[MlflowEmulator]:
    server = MlflowEmulator()
    await server.start()
    yield server
    await server.stop()


def flops_yml(mlflow: MlflowEmulator, **changes: str) -> str:
    text = CONFIG.format(command=json.dumps(COMMAND), mlflow=mlflow.url)
    for old, new in changes.items():
        text = text.replace(old, new)
    return text


def setup_repo(bed: Bed, mlflow: MlflowEmulator, **changes: str) -> None:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.set_permission(REPO, MAINTAINER, "admin")
    bed.github.commit(REPO, MAIN, {".github/flops.yml": flops_yml(mlflow, **changes), "regression.py": "pass\n"})


def rayjob_for(bed: Bed, sha: str) -> dict[str, Any]:
    [found] = [r for r in bed.kube.list("rayjobs", NAMESPACE, labels={"flops.dev/kind": "regression"})
               if r["metadata"]["annotations"]["flops.dev/sha"] == sha]
    return found


def ray_pods(rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in cluster["workerGroupSpecs"]]


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def write_metrics(bed: Bed, rayjob: dict[str, Any], metrics: dict[str, Any], links: dict[str, str] | None = None) -> None:
    """What the Ray driver does: metrics.json under FLOPS_OUTPUT in FLOPS_S3_BUCKET."""
    env = env_of(ray_pods(rayjob)[0]["containers"][0])
    data = json.dumps({"metrics": metrics, "links": links or {}}).encode()
    bed.s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(data),
                               len(data), content_type="application/json")


# --- the RayJob ----------------------------------------------------------------------------------------

async def test_regression_comment_creates_a_schema_valid_rayjob_and_no_job(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print('relu')\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, head)
    crds.validate(rayjob)  # KubeRay v1.7.0's schema, strictly (unknown fields fail)
    assert bed.kube.list("jobs", NAMESPACE) == []  # no batch Job: KubeRay makes the submitter
    meta, spec = rayjob["metadata"], rayjob["spec"]
    assert len(meta["name"]) <= 47
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "flops-bot"
    assert meta["labels"]["flops.dev/kind"] == "regression" and meta["labels"]["flops.dev/pr"] == str(PR)
    assert meta["annotations"]["flops.dev/run-id"] == meta["name"] and meta["annotations"]["flops.dev/check-run-id"]
    assert meta["annotations"]["flops.dev/timeout"] == str(20 * 60)
    assert [r["metadata"]["name"] for r in bed.kube.list(
        "rayjobs", NAMESPACE, labels={"app.kubernetes.io/managed-by": "flops-bot"})] == [meta["name"]]
    assert shlex.split(spec["entrypoint"]) == COMMAND  # each argument quoted for the submitter's shell
    assert (spec["submissionMode"], spec["shutdownAfterJobFinishes"], spec["backoffLimit"]) == ("K8sJobMode", True, 0)
    assert spec["activeDeadlineSeconds"] > 20 * 60 and spec["ttlSecondsAfterFinished"] > 0
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.40.0"
    [workers] = cluster["workerGroupSpecs"]
    assert (workers["groupName"], workers["replicas"], workers["minReplicas"], workers["maxReplicas"]) == ("gpu", 4, 4, 4)
    head_pod, worker_pod = ray_pods(rayjob)
    assert head_pod["containers"][0]["resources"]["limits"] == {"cpu": "2", "memory": "8Gi"}
    assert worker_pod["containers"][0]["resources"]["limits"] == {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"}
    assert (head_pod["nodeSelector"], worker_pod["nodeSelector"]) == ({"pool": "cpu"}, {"pool": "gpu"})
    assert worker_pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    for pod in ray_pods(rayjob):
        [container], [fetch] = pod["containers"], pod["initContainers"]
        assert container["image"] == "harbor.example.com/flops/ray-runtime:2.40-py311"
        assert "command" not in container  # KubeRay starts Ray in it
        assert container["workingDir"] == "/workspace" and fetch["name"] == "fetch-source"
        assert [e["name"] for e in fetch["env"]] == ["FLOPS_SOURCE_URL"]
        env = env_of(container)
        assert env["FLOPS_RUN_ID"] == meta["name"] and env["FLOPS_SHA"] == head and env["LOG_LEVEL"] == "info"
        assert env["AWS_SECRET_ACCESS_KEY"] == {"secretKeyRef": {"name": bed.settings.s3_secret,
                                                                 "key": "AWS_SECRET_ACCESS_KEY"}}
        assert (env["MLFLOW_TRACKING_URI"], env["MLFLOW_EXPERIMENT_NAME"]) == (mlflow.url, REPO)
        assert env["MLFLOW_RUN_NAME"] == meta["name"]
        assert json.loads(env["MLFLOW_TAGS"]) == {"flops.run": meta["name"], "flops.sha": head, "flops.pr": str(PR)}
        assert pod["automountServiceAccountToken"] is False
        assert_fenced({"spec": {"template": {"spec": pod}}})
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
                                     "1.31.0", strict=True)
    submitter = spec["submitterPodTemplate"]["spec"]
    assert submitter["automountServiceAccountToken"] is False and "env" not in submitter["containers"][0]
    assert "ghs_" not in json.dumps(rayjob) and bed.settings.s3.secret_key not in json.dumps(rayjob)
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert run["status"] == "in_progress" and run["external_id"] == meta["name"]
    # deploy/'s fence opened between this run's pods only (every one carries its run label), and to KubeRay
    [policy] = bed.kube.list("networkpolicies", NAMESPACE)
    run_pods = {"matchLabels": {"flops.dev/run": meta["name"]}}
    assert policy["spec"]["podSelector"] == run_pods and policy["spec"]["egress"] == [{"to": [{"podSelector": run_pods}]}]
    assert policy["spec"]["ingress"][0] == {"from": [{"podSelector": run_pods}]}
    assert policy["spec"]["ingress"][1]["ports"] == [{"protocol": "TCP", "port": 8265}]
    assert policy["metadata"]["ownerReferences"][0]["uid"] == meta["uid"]
    for template in [spec["submitterPodTemplate"]] + [g["template"] for g in [cluster["headGroupSpec"], workers]]:
        assert template["metadata"]["labels"]["flops.dev/run"] == meta["name"]
        # recommended labels, the default container, the Jobs' namespace's Pod Security level (issue 25)
        conventions.assert_bot_job({"kind": "RayJob", "metadata": meta, "spec": {"template": template}})


def finish(kuberay: KubeRay, bed: Bed, name: str, end: str) -> None:
    if end == "SUCCEEDED":
        write_metrics(bed, kuberay.rayjob(name), {"accuracy": 0.91})
        kuberay.succeed(name, logs="seed 7 done\n")
    elif end == "FAILED":
        kuberay.fail(name, logs="seed 3\nTraceback (most recent call last):\nZeroDivisionError: division by zero\n")
    else:
        kuberay.deadline(name)


@pytest.mark.parametrize(("end", "conclusion", "title"), [("SUCCEEDED", "neutral", "No baseline yet"),
                                                          ("FAILED", "failure", "Regression Job failed"),
                                                          ("DeadlineExceeded", "timed_out", "Regression Job timed out")])
async def test_each_end_is_reported_once_across_a_restart(make_bed: BedFactory, github: GitHubEmulator,
                                                          mlflow: MlflowEmulator, end: str, conclusion: str,
                                                          title: str) -> None:
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    first = await make_bed()
    setup_repo(first, mlflow)
    head = open_pr(first, {"regression.py": "print(1)\n"})
    await comment(first, "/regression")
    name = rayjob_for(first, head)["metadata"]["name"]
    kuberay = KubeRay(first.kube)
    kuberay.run(name)
    await first.server.close()  # the bot goes away mid-run
    finish(kuberay, first, name, end)
    second = await make_bed()
    run = await wait_for(lambda: completed(second, head), what="report after restart")
    assert (run["conclusion"], run["output"]["title"]) == (conclusion, title)
    if end == "FAILED":
        assert "ray-job-submitter" in run["output"]["summary"] and "ZeroDivisionError" in run["output"]["text"]
    if end == "DeadlineExceeded":
        assert "`regression.timeout` (20m)" in run["output"]["summary"]
    await second.settle()
    assert rayjob_for(second, head)["metadata"]["annotations"]["flops.dev/reported"] == conclusion
    await second.server.close()
    third = await make_bed()  # another restart: nothing is posted again
    await third.settle()
    assert len(github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{run['id']}$")) == 1
    assert len(sticky(third)) == 1


async def test_a_cluster_that_never_got_to_submit_shows_the_heads_log(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(14)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    kuberay = KubeRay(bed.kube)
    kuberay.initialize(name)  # the head starts, the cluster never becomes ready: no submitter Job
    head_pod = kuberay.head_pod(name)
    assert head_pod is not None
    bed.kube.set_logs(NAMESPACE, head_pod["metadata"]["name"], "ray-head", "raylet: GCS unreachable\n")
    kuberay.deadline(name)
    run = await wait_for(lambda: completed(bed, head), what="the deadline report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Regression Job timed out")
    assert "GCS unreachable" in run["output"]["text"] and bed.kube.list("jobs", NAMESPACE) == []


async def test_the_bots_own_timeout_reports_timed_out_and_deletes_the_rayjob(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow, **{"timeout: 20m": "timeout: 2s"})
    head = open_pr(bed, {"regression.py": "while True: pass\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    kuberay = KubeRay(bed.kube)
    kuberay.run(name)
    [pod] = bed.kube.list("pods", NAMESPACE, labels={"job-name": name})
    bed.kube.set_logs(NAMESPACE, pod["metadata"]["name"], "ray-job-submitter", "seed 1\nseed 2\n")
    run = await wait_for(lambda: completed(bed, head), what="timeout report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Regression Job timed out")
    assert "seed 2" in run["output"]["text"]
    await wait_for(lambda: bed.kube.get("rayjobs", NAMESPACE, name) is None, what="the RayJob deleted")
    assert bed.kube.list("pods", NAMESPACE, labels={"ray.io/node-type": "head"}) == []  # the cluster went with it


async def test_cancel_deletes_the_rayjob_and_its_cluster(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(2)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    KubeRay(bed.kube).run(name)
    await comment(bed, "/cancel regression")
    assert bed.kube.get("rayjobs", NAMESPACE, name) is None
    assert bed.kube.list("pods", NAMESPACE) == [] and bed.kube.list("jobs", NAMESPACE) == []
    assert bed.kube.list("networkpolicies", NAMESPACE) == []  # owned by the RayJob
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert run["conclusion"] == "cancelled" and "/cancel" in run["output"]["summary"]
    await bed.settle()
    assert len(bed.github.calls_to("PATCH", rf"/check-runs/{run['id']}$")) == 1  # the deletion reports nothing


async def test_a_new_head_deletes_the_old_heads_rayjob(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    old = open_pr(bed, {"regression.py": "print(3)\n"})
    await approve(bed)
    name = rayjob_for(bed, old)["metadata"]["name"]
    new = push_to_pr(bed, {"regression.py": "print(4)\n"})
    await synchronize(bed, old)
    assert bed.kube.get("rayjobs", NAMESPACE, name) is None
    [cancelled] = bed.github.check_runs_for(REPO, old, "flops/regression")
    assert cancelled["conclusion"] == "cancelled" and new[:7] in cancelled["output"]["summary"]


async def test_without_kuberay_the_check_says_to_install_it_and_readyz_stays_ok(bed: Bed,
                                                                               mlflow: MlflowEmulator) -> None:
    bed.kube.missing.add("rayjobs")
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(5)\n"})
    await comment(bed, "/regression")
    run = await wait_for(lambda: completed(bed, head), what="the refusal")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "KubeRay is not installed")
    assert "`kubectl get crd rayjobs.ray.io`" in run["output"]["summary"]
    assert bed.kube.list("jobs", NAMESPACE) == []
    async with bed.session.get(bed.url("/readyz")) as response:
        assert response.status == 200


async def test_a_default_branch_push_records_a_baseline_a_ray_pr_run_is_judged_against(bed: Bed,
                                                                                      mlflow: MlflowEmulator) -> None:
    from tests.test_regression import push_payload
    setup_repo(bed, mlflow)
    before = bed.github.branch_sha(REPO, MAIN)
    base = bed.github.commit(REPO, MAIN, {"regression.py": "print('base')\n"})
    await bed.deliver("push", push_payload(bed, before, base))
    await bed.settle()
    baseline = rayjob_for(bed, base)
    assert baseline["metadata"]["annotations"]["flops.dev/baseline"] == "true"
    write_metrics(bed, baseline, {"accuracy": 0.9})
    KubeRay(bed.kube).succeed(baseline["metadata"]["name"])
    recorded = await wait_for(lambda: completed(bed, base), what="the baseline")
    assert recorded["output"]["title"] == "Baseline recorded"
    head = open_pr(bed, {"regression.py": "print('relu')\n"})
    await approve(bed)
    rayjob = rayjob_for(bed, head)
    write_metrics(bed, rayjob, {"accuracy": 0.7})
    KubeRay(bed.kube).succeed(rayjob["metadata"]["name"])
    run = await wait_for(lambda: completed(bed, head), what="the verdict")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "1 regression / 1 metric")
    await bed.settle()
    [note] = sticky(bed)
    assert "**failure**" in note["body"]


# --- MLflow ----------------------------------------------------------------------------------------------

async def test_the_mlflow_link_is_found_by_run_name(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(6)\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, head)
    name = rayjob["metadata"]["name"]
    mlflow.log_run("Codertocat/Hello-World", "someone-elses-run", {"accuracy": 0.1})
    run_id = mlflow.log_run(REPO, name, {"accuracy": 0.5}, {"flops.run": name})
    write_metrics(bed, rayjob, {"accuracy": 0.91})  # metrics.json wins over what MLflow has
    KubeRay(bed.kube).succeed(name)
    run = await wait_for(lambda: completed(bed, head), what="report")
    experiment = next(e for e in mlflow.experiments.values() if e["name"] == REPO)["experiment_id"]
    assert f"{mlflow.url}/#/experiments/{experiment}/runs/{run_id}" in run["output"]["summary"]  # details: run page
    assert "0.91" in run["output"]["summary"] and "0.5" not in run["output"]["summary"]
    searches = [path for method, path in mlflow.requests if method == "POST"]
    assert searches == ["/api/2.0/mlflow/runs/search"]


async def test_without_metrics_json_the_mlflow_metrics_are_the_gates_input(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(7)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    mlflow.log_run(REPO, name, {"accuracy": 0.93, "loss": 0.2})
    KubeRay(bed.kube).succeed(name)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert run["conclusion"] == "neutral" and "0.93" in run["output"]["summary"]
    assert f"{mlflow.url}/#/experiments/" in run["output"]["summary"]


async def test_a_second_run_of_the_same_name_sways_nothing(bed: Bed, mlflow: MlflowEmulator) -> None:
    """Another workload (any that reaches the tracking server) logs a run under this run's name, which
    is deterministic: the newest of the two was the gate's input. Two of a name are none."""
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(17)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    mlflow.log_run(REPO, name, {"accuracy": 0.5})  # the real run: worse
    mlflow.log_run(REPO, name, {"accuracy": 0.99})  # the fake, logged after it
    KubeRay(bed.kube).succeed(name)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "No metrics")
    assert "0.99" not in run["output"]["summary"] and f"{mlflow.url}/#/experiments/" not in run["output"]["summary"]


async def test_a_run_logged_before_its_job_existed_is_not_it(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(18)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    fake = mlflow.log_run(REPO, name, {"accuracy": 0.99})
    mlflow.runs[fake]["info"]["start_time"] -= 3_600_000  # logged an hour before the run started
    KubeRay(bed.kube).succeed(name)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "No metrics")


async def test_a_pr_into_another_branch_cannot_choose_where_the_bot_asks(bed: Bed, mlflow: MlflowEmulator) -> None:
    """Anyone with write access can open a PR into a branch whose flops.yml they wrote: its
    `regression.mlflow.tracking_uri` decided where the bot sent requests from inside the cluster."""
    setup_repo(bed, mlflow)
    elsewhere = MlflowEmulator()
    await elsewhere.start()
    try:
        base = bed.github.commit(REPO, "dev", {".github/flops.yml": CONFIG.format(
            command=json.dumps(COMMAND), mlflow=elsewhere.url + "/internal")}, parents=[bed.github.branch_sha(REPO, MAIN)])
        head = bed.github.commit(REPO, "feature", {"regression.py": "print(19)\n"}, parents=[base])
        bed.github.add_pull(REPO, PR, head, base_branch="dev", head_ref="feature", user="octocat")
        await comment(bed, "/regression")
        rayjob = rayjob_for(bed, head)
        env = env_of(ray_pods(rayjob)[0]["containers"][0])
        assert env["MLFLOW_TRACKING_URI"] == mlflow.url  # the default branch's server
        mlflow.log_run(REPO, rayjob["metadata"]["name"], {"accuracy": 0.93})
        KubeRay(bed.kube).succeed(rayjob["metadata"]["name"])
        run = await wait_for(lambda: completed(bed, head), what="report")
        assert f"{mlflow.url}/#/experiments/" in run["output"]["summary"]  # details: the run page
        assert elsewhere.requests == []
    finally:
        await elsewhere.stop()


async def test_mlflow_down_leaves_the_report_as_without_it(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(8)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    mlflow.down = True
    KubeRay(bed.kube).succeed(name)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "No metrics")


async def test_an_mlflow_answer_over_the_limit_is_not_read(bed: Bed, mlflow: MlflowEmulator) -> None:
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(12)\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, head)
    mlflow.log_run(REPO, rayjob["metadata"]["name"], {"accuracy": 0.5})
    mlflow.padding = 2 << 20  # 2 MB: over the 1 MB the bot reads
    write_metrics(bed, rayjob, {"accuracy": 0.9})
    KubeRay(bed.kube).succeed(rayjob["metadata"]["name"])
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert run["conclusion"] == "neutral" and mlflow.url not in run["output"]["summary"]
    assert "0.9" in run["output"]["summary"]


async def test_closing_the_pr_deletes_its_rayjob(bed: Bed, mlflow: MlflowEmulator) -> None:
    from tests.conftest import payload
    from tests.test_regression import pull_json
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(13)\n"})
    await approve(bed)
    name = rayjob_for(bed, head)["metadata"]["name"]
    bed.github.pulls[(REPO, PR)]["state"] = "closed"
    data = payload("pull_request.closed")
    pull_json(bed, data)
    await bed.deliver("pull_request", data)
    await bed.settle()
    assert bed.kube.get("rayjobs", NAMESPACE, name) is None
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert run["conclusion"] == "cancelled" and "closed" in run["output"]["summary"]


async def test_a_batch_job_run_gets_the_mlflow_env_too(bed: Bed, mlflow: MlflowEmulator) -> None:
    text = flops_yml(mlflow)
    setup_repo(bed, mlflow, **{text[text.index("  ray:"):text.index("  mlflow:")]: ""})
    head = open_pr(bed, {"regression.py": "print(9)\n"})
    await comment(bed, "/regression")
    assert bed.kube.list("rayjobs", NAMESPACE) == []
    [job] = bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "regression"})
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert env["MLFLOW_RUN_NAME"] == job["metadata"]["name"] and env["MLFLOW_EXPERIMENT_NAME"] == REPO
    assert job["metadata"]["annotations"]["flops.dev/sha"] == head


async def test_the_emulators_search_answers_as_mlflow_does(mlflow: MlflowEmulator) -> None:
    """Contract: the recorded answer of a real `mlflow server` and the emulator's have the same shape."""
    recorded = json.loads((PAYLOADS / "mlflow" / "runs-search.json").read_text())
    [real] = recorded["runs"]
    mlflow.log_run("Codertocat/Hello-World", real["info"]["run_name"], {"accuracy": 0.91}, {"flops.run": "x"})
    search = {"experiment_ids": ["1"], "filter": f"tags.`mlflow.runName` = '{real['info']['run_name']}'",
              "max_results": 1}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{mlflow.url}/api/2.0/mlflow/runs/search", json=search) as response:
            [emulated] = (await response.json())["runs"]
        async with session.post(f"{mlflow.url}/api/2.0/mlflow/runs/search",
                                json={**search, "filter": "tags.`mlflow.runName` = 'nothing'"}) as response:
            assert await response.json() == {}  # as the real server answers no match
    assert set(emulated) == set(real) and set(emulated["data"]) == set(real["data"])
    assert set(real["info"]) <= set(emulated["info"])
    assert set(emulated["data"]["metrics"][0]) == set(real["data"]["metrics"][0])


# --- the config --------------------------------------------------------------------------------------------

def test_ray_and_mlflow_config_errors_name_each_key() -> None:
    text = CONFIG.format(command=json.dumps(COMMAND), mlflow="http://user:pw@mlflow:5000").replace(
        '"2.40.0"', "2.40").replace("replicas: 4", "replicas: 0").replace("name: gpu", "name: head")
    with pytest.raises(config.ConfigError) as failed:
        config.parse(text)
    problems = {p.path: p.message for p in failed.value.problems}
    assert set(problems) == {"regression.ray.version", "regression.ray.workers[0].name",
                             "regression.ray.workers[0].replicas", "regression.mlflow.tracking_uri"}
    assert "quoted" in problems["regression.ray.version"] and "credentials" in problems["regression.mlflow.tracking_uri"]


async def test_the_role_grants_every_call_a_rayjob_run_makes(bed: Bed, mlflow: MlflowEmulator) -> None:
    """deploy/base/rbac.yaml against the requests of a RayJob's whole life: create, watch, report, cancel."""
    from tests.test_deploy_manifests import assert_role_grants, needed
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(10)\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    kuberay = KubeRay(bed.kube)
    kuberay.fail(name, logs="boom\n")
    await wait_for(lambda: completed(bed, head), what="the failure report")
    await comment(bed, "/regression")  # a fresh run, then cancelled
    await comment(bed, "/cancel regression")
    await wait_for(lambda: len(bed.kube.list("rayjobs", NAMESPACE)) == 1, what="the second run deleted")
    verbs = {(verb, resource) for verb, group, resource, _ in needed(bed.kube.requests) if group == "ray.io"}
    assert verbs == {(v, "rayjobs") for v in ("create", "get", "list", "watch", "patch", "delete")}
    assert_role_grants(bed.kube.requests)


# --- as shipped ----------------------------------------------------------------------------------------------

async def test_serve_runs_a_rayjob_regression_and_links_its_mlflow_run(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server, mlflow: MlflowEmulator) -> None:
    """`python -m bot serve` with the README's environment: `/regression` -> RayJob -> KubeRay ends it ->
    `flops/regression` judged on the MLflow run's metrics (no metrics.json), linked; `/cancel` deletes the next."""
    from tests.serving import serving
    from tests.test_as_shipped import MAINTAINER as COMMENTER
    from tests.test_as_shipped import comment_payload, deliver
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    github.add_repo(REPO, default_branch=MAIN)
    github.set_permission(REPO, COMMENTER, "write")
    github.commit(REPO, MAIN, {".github/flops.yml": flops_yml(mlflow), "regression.py": "pass\n"})
    base = github.branch_sha(REPO, MAIN)
    head = github.commit(REPO, "feature", {"regression.py": "print('ray')\n"}, parents=[base])
    github.add_pull(REPO, PR, head, base_branch=MAIN, head_ref="feature", user="octocat")
    async with serving(tmp_path, github, kube, s3) as served:
        bot = AsShipped(github, served.url)
        await deliver(bot, "issue_comment", comment_payload(bot, REPO, PR, "/regression"))
        [rayjob] = await wait_for(lambda: kube.list("rayjobs", NAMESPACE), timeout=30, what="the RayJob")
        name = rayjob["metadata"]["name"]
        await wait_for(lambda: "flops.dev/check-run-id" in (kube.get("rayjobs", NAMESPACE, name) or {}).get(
            "metadata", {}).get("annotations", {}), timeout=30, what="its check run")
        assert kube.list("jobs", NAMESPACE) == []
        run_id = mlflow.log_run(REPO, name, {"accuracy": 0.92})
        KubeRay(kube).succeed(name, logs="8 seeds done\n")
        run = await wait_for(lambda: completed(bot, head), timeout=30, what="the report")
        assert (run["conclusion"], run["output"]["title"]) == ("neutral", "No baseline yet")
        assert f"/runs/{run_id})" in run["output"]["summary"] and "0.92" in run["output"]["summary"]
        await wait_for(lambda: kube.get("rayjobs", NAMESPACE, name)["metadata"]["annotations"].get(
            "flops.dev/reported"), timeout=30, what="marked reported")
        await deliver(bot, "issue_comment", comment_payload(bot, REPO, PR, "/regression"))
        [second] = await wait_for(lambda: [r for r in kube.list("rayjobs", NAMESPACE) if r["metadata"]["name"] != name],
                                  timeout=30, what="the second RayJob")
        await wait_for(lambda: "flops.dev/check-run-id" in (kube.get("rayjobs", NAMESPACE, second["metadata"]["name"])
                                                             or {}).get("metadata", {}).get("annotations", {}),
                       timeout=30, what="its check run")
        await deliver(bot, "issue_comment", comment_payload(bot, REPO, PR, "/cancel regression"))
        await wait_for(lambda: kube.get("rayjobs", NAMESPACE, second["metadata"]["name"]) is None, timeout=30,
                       what="the cancelled RayJob deleted")


class AsShipped:
    """What tests/test_as_shipped.py's helpers (and `completed`) read of the bot process under test."""

    def __init__(self, github: GitHubEmulator, url: str) -> None:
        self.github, self.url = github, url


async def test_rayjobs_have_their_own_watch_and_a_410_relists_them(bed: Bed, mlflow: MlflowEmulator) -> None:
    await wait_for(lambda: bed.kube.open_watches == 2, what="a watch of Jobs and one of RayJobs")
    setup_repo(bed, mlflow)
    head = open_pr(bed, {"regression.py": "print(11)\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, head)
    name = rayjob["metadata"]["name"]
    before = len([r for r in bed.kube.requests if r[0] == "GET" and "/rayjobs?" in r[1] and "watch" not in r[1]])
    bed.kube.expire_watches()  # 410 Gone: the tracker lists again and watches from there
    write_metrics(bed, rayjob, {"accuracy": 0.9})
    KubeRay(bed.kube).succeed(name)
    run = await wait_for(lambda: completed(bed, head), what="report after the re-list")
    assert run["conclusion"] == "neutral"
    assert len([r for r in bed.kube.requests if r[0] == "GET" and "/rayjobs?" in r[1] and "watch" not in r[1]]) > before
    await bed.settle()
    assert len(bed.github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{run['id']}$")) == 1


async def test_without_kuberay_only_jobs_are_watched(make_bed: BedFactory, github: GitHubEmulator,
                                                     kube: KubeEmulator) -> None:
    kube.missing.add("rayjobs")
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    await make_bed()
    await wait_for(lambda: kube.open_watches == 1, what="the Jobs' watch")
    assert any("/rayjobs?" in path for _, path in kube.requests)  # looked, found no CRD, nothing to watch
