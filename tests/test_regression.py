"""Regression gating on the test bed: approval / `/regression` / merge queue -> the regression Job ->
metrics.json in the real S3 server -> verdict against the default branch's baseline -> `flops/regression`
and one sticky PR comment. The workload is simulated: the test writes metrics.json under the Job's
FLOPS_OUTPUT (read from the Job's own env) and then finishes the Job in the Kubernetes emulator."""
from __future__ import annotations

import io
import json
import tarfile
import time
import urllib.request
from typing import Any

import kubernetes_validate
import pytest

from bot.flows import regression
from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, wait_for
from tests.emulators.github import GitHubEmulator, tree_sha
from tests.fencing import assert_fenced

REPO = "Codertocat/Hello-World"
MAIN = "master"  # the recorded payloads' default branch
PR = 2
MAINTAINER = "Codertocat"
MLFLOW = "https://mlflow.example.com/#/experiments/1/runs/abc123"
CONFIG = """\
registry: harbor.example.com/flops
regression:
  image: harbor.example.com/flops/regression-runtime:py311
  command: ["python", "train.py", "--epochs", "3"]
  resources: {cpu: "2", memory: 4Gi, gpu: 1}
  node_selector: {pool: high-cpu}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  volumes: [{claim: datasets, mount_path: /data, read_only: true}]
  env: {LOG_LEVEL: info}
  timeout: 20m
  metrics:
    accuracy: {direction: higher, tolerance: 0.01}
    loss: {direction: lower, tolerance: 5%}
"""
GOOD = {"accuracy": 0.912, "loss": 0.231}


# --- the repository, its pushes and its pull request -----------------------------------------------

def setup_repo(bed: Bed) -> str:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.set_permission(REPO, MAINTAINER, "admin")
    return bed.github.commit(REPO, MAIN, {".github/flops.yml": CONFIG, "train.py": "print('train')\n"})


def push_payload(bed: Bed, before: str, sha: str, branch: str = MAIN) -> dict[str, Any]:
    data = payload("push")
    data.update(ref=f"refs/heads/{branch}", before=before, after=sha, deleted=False, created=False)
    data["installation"]["id"] = INSTALLATION
    data["repository"]["default_branch"] = MAIN
    data["head_commit"].update(id=sha, timestamp="2026-11-22T09:30:00Z")
    data["commits"] = [{**data["commits"][0], "id": sha, "added": [], "removed": [], "modified": ["train.py"]}]
    return data


async def push_to_main(bed: Bed, files: dict[str, Any]) -> str:
    before = bed.github.branch_sha(REPO, MAIN)
    sha = bed.github.commit(REPO, MAIN, files)
    await bed.deliver("push", push_payload(bed, before, sha))
    await bed.settle()
    return sha


async def record_baseline(bed: Bed, metrics: dict[str, Any], files: dict[str, Any] | None = None) -> str:
    """A default-branch push, its baseline Job, the workload's metrics: the baseline of later PRs."""
    sha = await push_to_main(bed, files or {"train.py": f"print({len(bed.github.calls)})\n"})
    job = job_for(bed, sha)
    assert job["metadata"]["annotations"]["flops.dev/baseline"] == "true"
    await finish(bed, job, metrics)
    run = await wait_for(lambda: completed(bed, sha), what="baseline report")
    assert (run["conclusion"], run["output"]["title"]) == ("success", "Baseline recorded")
    return sha


def open_pr(bed: Bed, files: dict[str, Any], *, branch: str = "feature") -> str:
    base = bed.github.branch_sha(REPO, MAIN)
    head = bed.github.commit(REPO, branch, files, parents=[base])
    bed.github.add_pull(REPO, PR, head, base_branch=MAIN, head_ref=branch, user="octocat")
    return head


def push_to_pr(bed: Bed, files: dict[str, Any], branch: str = "feature") -> str:
    return bed.github.commit(REPO, branch, files)  # the emulator moves the PR head along


def pull_json(bed: Bed, data: dict[str, Any]) -> None:
    """The recorded payload's pull_request, pointed at the emulated PR's current head and base."""
    pull = bed.github.pulls[(REPO, PR)]
    data["pull_request"].update(number=PR, state=pull["state"])
    data["pull_request"]["head"].update(sha=pull["head"]["sha"], ref=pull["head"]["ref"])
    data["pull_request"]["base"].update(sha=pull["base"]["sha"], ref=MAIN)
    data["installation"]["id"] = INSTALLATION


async def approve(bed: Bed, *, user: str = MAINTAINER, state: str = "approved") -> None:
    data = payload("pull_request_review.submitted")
    pull_json(bed, data)
    data["review"].update(state=state, commit_id=data["pull_request"]["head"]["sha"])
    data["review"]["user"]["login"] = user
    await bed.deliver("pull_request_review", data)
    await bed.settle()


async def synchronize(bed: Bed, before: str) -> None:
    data = payload("pull_request.synchronize")
    pull_json(bed, data)
    data.update(number=PR, before=before, after=data["pull_request"]["head"]["sha"])
    await bed.deliver("pull_request", data)
    await bed.settle()


async def comment(bed: Bed, body: str, *, user: str = MAINTAINER) -> None:
    data = payload("issue_comment.created")
    data["issue"].update(number=PR, pull_request={"url": f"{bed.github.url}/repos/{REPO}/pulls/{PR}"})
    data["comment"].update(body=body, id=bed.github.add_comment(REPO, PR, body, user=user)["id"])
    data["comment"]["user"]["login"] = user
    data["installation"]["id"] = INSTALLATION
    await bed.deliver("issue_comment", data)
    await bed.settle()


# --- the cluster and S3 side -------------------------------------------------------------------------

def regression_jobs(bed: Bed) -> list[dict[str, Any]]:
    return bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "regression"})


def job_for(bed: Bed, sha: str) -> dict[str, Any]:
    [job] = [j for j in regression_jobs(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == sha
             and "flops.dev/reported" not in j["metadata"]["annotations"]]
    return job


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    [container] = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def write_output(bed: Bed, job: dict[str, Any], name: str, data: bytes) -> None:
    """What the workload does: put an object under FLOPS_OUTPUT in FLOPS_S3_BUCKET."""
    env = env_of(job)
    bed.s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + name, io.BytesIO(data), len(data),
                               content_type="application/json")


async def finish(bed: Bed, job: dict[str, Any], metrics: dict[str, Any] | None,
                 links: dict[str, str] | None = None) -> None:
    if metrics is not None:
        write_output(bed, job, "metrics.json", json.dumps({"metrics": metrics, "links": links or {}}).encode())
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"])


def completed(bed: Bed, sha: str) -> dict[str, Any] | None:
    runs = [r for r in bed.github.check_runs_for(REPO, sha, "flops/regression") if r["status"] == "completed"]
    return runs[-1] if runs else None


def sticky(bed: Bed) -> list[dict[str, Any]]:
    return [c for c in bed.github.comments_on(REPO, PR) if regression.MARKER in c["body"]]


async def gate(bed: Bed, metrics: dict[str, Any] | None, links: dict[str, str] | None = None) -> dict[str, Any]:
    """Approve the open PR, let the workload write `metrics`, return the completed check run."""
    head = bed.github.pulls[(REPO, PR)]["head"]["sha"]
    await approve(bed)
    await finish(bed, job_for(bed, head), metrics, links)
    run = await wait_for(lambda: completed(bed, head), what="regression report")
    await bed.settle()  # and the sticky comment after it
    return run


# --- the Job ------------------------------------------------------------------------------------------

async def test_approval_starts_a_valid_job_for_the_exact_pr_head(bed: Bed) -> None:
    setup_repo(bed)
    loosened = CONFIG.replace("tolerance: 0.01", "tolerance: 0.5").replace("train.py", "evil.py")
    head = open_pr(bed, {"train.py": "print('relu')\n", ".github/flops.yml": loosened})
    await approve(bed)
    job = job_for(bed, head)
    for version in ("1.30.0", "1.37.0"):
        kubernetes_validate.validate(job, version, strict=True)
    meta, pod = job["metadata"], job["spec"]["template"]["spec"]
    assert meta["labels"]["flops.dev/kind"] == "regression" and meta["labels"]["flops.dev/pr"] == str(PR)
    assert meta["annotations"]["flops.dev/check-run-id"]
    # the bot stops it at the timeout (log still readable); Kubernetes' deadline is only the backstop
    assert meta["annotations"]["flops.dev/timeout"] == str(20 * 60)
    assert job["spec"]["activeDeadlineSeconds"] > 20 * 60 and job["spec"]["backoffLimit"] == 0
    [container] = pod["containers"]
    # the base branch's config ran, not the PR's loosened copy
    assert container["image"] == "harbor.example.com/flops/regression-runtime:py311"
    assert container["command"] == ["python", "train.py", "--epochs", "3"]
    assert json.loads(meta["annotations"]["flops.dev/metrics"])[0]["tolerance"] == 0.01
    assert container["workingDir"] == "/workspace"
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"pool": "high-cpu"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert {"name": "data-0", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    env = env_of(job)
    assert env["FLOPS_RUN_ID"] == meta["name"] and env["FLOPS_REPO"] == REPO and env["FLOPS_SHA"] == head
    assert env["FLOPS_S3_BUCKET"] == bed.settings.s3.runs_bucket
    assert env["FLOPS_S3_ENDPOINT"] == f"http://{bed.settings.s3.endpoint}"
    assert env["FLOPS_OUTPUT"].endswith("/") and meta["name"] in env["FLOPS_OUTPUT"]
    assert env["LOG_LEVEL"] == "info"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == {"secretKeyRef": {"name": bed.settings.s3_secret, "key": key}}
    # no git token, no registry credentials, no API token anywhere in the pod
    assert pod["automountServiceAccountToken"] is False
    assert_fenced(job)
    assert all(v.get("secret", {}).get("secretName") != bed.settings.registry_secret for v in pod.get("volumes", []))
    body = json.dumps(job)
    assert "ghs_" not in body and bed.settings.s3.secret_key not in body
    # the init container fetches exactly the PR head's source from S3, with no credentials of its own
    [fetch] = pod["initContainers"]
    assert [e["name"] for e in fetch["env"]] == ["FLOPS_SOURCE_URL"]
    with urllib.request.urlopen(fetch["env"][0]["value"]) as response:
        with tarfile.open(fileobj=io.BytesIO(response.read()), mode="r:gz") as tar:
            assert tar.extractfile("train.py").read() == b"print('relu')\n"  # type: ignore[union-attr]
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert run["status"] == "in_progress" and run["external_id"] == meta["name"]


async def test_a_second_approval_of_the_same_head_starts_nothing(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(1)\n"})
    await approve(bed)
    await approve(bed)
    assert len(regression_jobs(bed)) == 1
    assert len(bed.github.check_runs_for(REPO, head, "flops/regression")) == 1


@pytest.mark.parametrize(("user", "permission", "state"), [("stranger", "read", "approved"),
                                                           ("triager", "triage", "approved"),
                                                           (MAINTAINER, "admin", "commented"),
                                                           (MAINTAINER, "admin", "changes_requested")])
async def test_review_that_is_not_a_maintainers_approval_starts_nothing(bed: Bed, user: str, permission: str,
                                                                        state: str) -> None:
    setup_repo(bed)
    bed.github.set_permission(REPO, user, permission)
    head = open_pr(bed, {"train.py": "print(1)\n"})
    await approve(bed, user=user, state=state)
    assert regression_jobs(bed) == []
    assert bed.github.check_runs_for(REPO, head, "flops/regression") == []


# --- verdicts -----------------------------------------------------------------------------------------

async def test_metrics_within_tolerance_pass_with_the_mlflow_link(bed: Bed) -> None:
    setup_repo(bed)
    base = await record_baseline(bed, GOOD)
    open_pr(bed, {"train.py": "print('tweak')\n"})
    run = await gate(bed, {"accuracy": 0.905, "loss": 0.236}, {"MLflow run": MLFLOW, "bad": "javascript:alert(1)"})
    assert run["conclusion"] == "success"
    assert run["output"]["title"] == "0 regressions / 2 metrics"
    assert MLFLOW in run["output"]["summary"] and run["details_url"] != MLFLOW  # details: the run page (issue 20)
    summary = run["output"]["summary"]
    assert "| metric | direction | baseline | PR | delta | delta % | tolerance | verdict |" in summary
    assert "| accuracy | higher | 0.912 | 0.905 | -0.007 | -0.77% | 0.01 | ✅ ok |" in summary
    assert f"Baseline: `{base[:7]}` (the merge-base)" in summary
    assert f"[MLflow run]({MLFLOW})" in summary and "javascript:" not in summary
    assert bed.deps.metrics.value("flops_regression_verdicts_total", verdict="pass") == 1


async def test_a_drop_beyond_tolerance_fails_the_gate(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    head = open_pr(bed, {"train.py": "nn.ReLU()\n"})
    run = await gate(bed, {"accuracy": 0.61, "loss": 0.232})
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "1 regression / 2 metrics")
    assert bed.deps.metrics.value("flops_regression_verdicts_total", verdict="fail") == 1
    assert "| accuracy | higher | 0.912 | 0.61 | -0.302 | -33.11% | 0.01 | ❌ regression |" in run["output"]["summary"]
    assert run["head_sha"] == head
    # a PR run is never a baseline
    assert bed.s3.client().stat_object  # the real server answers
    assert await bed.deps.artifacts.get_json(regression.baseline_key(REPO, head)) is None


async def test_a_missing_gated_metric_fails(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    open_pr(bed, {"train.py": "print(2)\n"})
    run = await gate(bed, {"accuracy": 0.93, "loss": float("nan")})
    assert run["conclusion"] == "failure"
    assert "| loss | lower | 0.231 | — | — | — | 5% | ❌ missing |" in run["output"]["summary"]


async def test_no_metrics_json_fails_and_says_where_to_write_it(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    open_pr(bed, {"train.py": "print(3)\n"})
    run = await gate(bed, None)
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "No metrics")
    assert "metrics.json` is missing" in run["output"]["summary"] and "$FLOPS_OUTPUT" in run["output"]["summary"]


async def test_metrics_json_that_is_not_json_fails_instead_of_retrying_forever(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(4)\n"})
    await approve(bed)
    job = job_for(bed, head)
    write_output(bed, job, "metrics.json", b"accuracy=0.9\n")
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"])
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert run["conclusion"] == "failure" and "not valid JSON" in run["output"]["summary"]


async def test_without_any_baseline_the_check_is_neutral(bed: Bed) -> None:
    setup_repo(bed)
    open_pr(bed, {"train.py": "print(5)\n"})
    run = await gate(bed, GOOD)
    assert (run["conclusion"], run["output"]["title"]) == ("neutral", "No baseline yet")
    assert bed.deps.metrics.value("flops_regression_verdicts_total", verdict="no_baseline") == 1
    assert bed.deps.metrics.value("flops_regression_verdicts_total", verdict="pass") == 0
    assert "| accuracy | higher | — | 0.912 | — | — | 0.01 | 🆕 no baseline value |" in run["output"]["summary"]


async def test_without_a_baseline_a_missing_metric_still_fails(bed: Bed) -> None:
    setup_repo(bed)
    open_pr(bed, {"train.py": "print(6)\n"})
    run = await gate(bed, {"accuracy": 0.9})
    assert run["conclusion"] == "failure" and "missing" in run["output"]["title"]


async def test_a_stale_baseline_says_how_many_commits_older_it_is(bed: Bed) -> None:
    setup_repo(bed)
    base = await record_baseline(bed, GOOD)
    for i in range(3):  # default-branch commits whose baseline runs never finished
        bed.github.commit(REPO, MAIN, {"notes.md": f"{i}\n"})
    open_pr(bed, {"train.py": "print(7)\n"})
    run = await gate(bed, {"accuracy": 0.92, "loss": 0.23})
    assert run["conclusion"] == "success"
    assert f"Baseline: `{base[:7]}`, 3 commits older than the merge-base" in run["output"]["summary"]


async def test_the_nearest_baseline_wins_over_older_ones(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, {"accuracy": 0.5, "loss": 0.9})
    newer = await record_baseline(bed, GOOD)
    open_pr(bed, {"train.py": "print(8)\n"})
    run = await gate(bed, {"accuracy": 0.6, "loss": 0.8})  # better than the old one, worse than the newer
    assert run["conclusion"] == "failure"
    assert f"Baseline: `{newer[:7]}` (the merge-base)" in run["output"]["summary"]


async def test_seed_lists_widen_the_band_by_their_noise(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, {"accuracy": [0.90, 0.92, 0.94], "loss": [0.23, 0.231, 0.232]})
    open_pr(bed, {"train.py": "print(9)\n"})
    run = await gate(bed, {"accuracy": [0.89, 0.90, 0.91], "loss": [0.231, 0.232, 0.233]})
    assert run["conclusion"] == "success"  # 0.02 worse: more than 0.01, but within the seeds' noise
    assert "0.01 (+0.0129 seed noise)" in run["output"]["summary"]


# --- failures -----------------------------------------------------------------------------------------

async def test_a_failed_job_reports_the_reason_and_the_masked_log_tail(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "raise SystemExit(3)\n"})
    await approve(bed)
    log = "\n".join(f"epoch {i}" for i in range(80)) + f"\nKeyError: secret {bed.settings.s3.secret_key}\n"
    bed.kube.fail_job(NAMESPACE, job_for(bed, head)["metadata"]["name"], logs=log, exit_code=3)
    run = await wait_for(lambda: completed(bed, head), what="failure report")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Regression Job failed")
    assert "exited with code 3" in run["output"]["summary"]
    text = run["output"]["text"]
    assert "epoch 79" in text and "epoch 10\n" not in text
    assert bed.settings.s3.secret_key not in text and "***" in text
    await bed.settle()
    [note] = sticky(bed)
    assert "failure" in note["body"] and "exited with code 3" in note["body"]


async def test_a_run_past_its_timeout_is_stopped_and_reported_timed_out_with_its_log(bed: Bed) -> None:
    setup_repo(bed)
    bed.github.commit(REPO, MAIN, {".github/flops.yml": CONFIG.replace("timeout: 20m", "timeout: 2s")})
    head = open_pr(bed, {"train.py": "while True: pass\n"})
    await approve(bed)
    name = job_for(bed, head)["metadata"]["name"]
    bed.kube.start_job(NAMESPACE, name)
    [pod] = bed.kube.list("pods", NAMESPACE, labels={"job-name": name})
    bed.kube.set_logs(NAMESPACE, pod["metadata"]["name"], "regression",
                      "".join(f"epoch {i}\n" for i in range(70)))
    run = await wait_for(lambda: completed(bed, head), what="timeout report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Regression Job timed out")
    assert "`regression.timeout` (2s)" in run["output"]["summary"]
    assert "epoch 69" in run["output"]["text"] and "epoch 5\n" not in run["output"]["text"]
    await wait_for(lambda: bed.kube.get("jobs", NAMESPACE, name) is None, what="the Job stopped")
    await bed.settle()
    assert len(bed.github.calls_to("PATCH", rf"/check-runs/{run['id']}$")) == 1


async def test_kubernetes_deadline_while_the_bot_was_away_reports_timed_out(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "while True: pass\n"})
    await approve(bed)
    bed.kube.fail_job(NAMESPACE, job_for(bed, head)["metadata"]["name"], reason="DeadlineExceeded",
                      message="Job was active longer than specified deadline", exit_code=143,
                      logs="epoch 1\nepoch 2\n")
    run = await wait_for(lambda: completed(bed, head), what="timeout report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Regression Job timed out")
    assert "`regression.timeout` (20m)" in run["output"]["summary"]
    assert "epoch 2" in run["output"]["text"]


# --- staleness ----------------------------------------------------------------------------------------

async def test_a_new_push_cancels_the_run_and_queues_the_check_on_the_new_head(bed: Bed) -> None:
    setup_repo(bed)
    old = open_pr(bed, {"train.py": "print(10)\n"})
    await approve(bed)
    old_job = job_for(bed, old)["metadata"]["name"]
    new = push_to_pr(bed, {"train.py": "print(11)\n"})
    await synchronize(bed, old)
    assert bed.kube.get("jobs", NAMESPACE, old_job) is None
    [cancelled] = bed.github.check_runs_for(REPO, old, "flops/regression")
    assert cancelled["conclusion"] == "cancelled" and new[:7] in cancelled["output"]["summary"]
    [waiting] = bed.github.check_runs_for(REPO, new, "flops/regression")
    assert waiting["status"] == "queued" and waiting["output"]["title"] == regression.WAITING
    assert regression_jobs(bed) == []
    await approve(bed)  # the new head's approval runs it, on that same check run
    [running] = bed.github.check_runs_for(REPO, new, "flops/regression")
    assert running["id"] == waiting["id"] and running["status"] == "in_progress"
    assert job_for(bed, new)["metadata"]["annotations"]["flops.dev/check-run-id"] == str(waiting["id"])


async def test_a_redelivered_synchronize_queues_one_check(bed: Bed) -> None:
    setup_repo(bed)
    old = open_pr(bed, {"train.py": "print(12)\n"})
    new = push_to_pr(bed, {"train.py": "print(13)\n"})
    await synchronize(bed, old)
    await synchronize(bed, old)
    assert len(bed.github.check_runs_for(REPO, new, "flops/regression")) == 1


async def test_closing_the_pr_cancels_its_run(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(14)\n"})
    await approve(bed)
    name = job_for(bed, head)["metadata"]["name"]
    bed.github.pulls[(REPO, PR)]["state"] = "closed"
    data = payload("pull_request.closed")
    pull_json(bed, data)
    await bed.deliver("pull_request", data)
    await bed.settle()
    assert bed.kube.get("jobs", NAMESPACE, name) is None
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert run["conclusion"] == "cancelled" and "closed" in run["output"]["summary"]


@pytest.mark.parametrize("claimed_ago, cancelled", [(3600, True), (0, False)])
async def test_a_stale_report_claim_does_not_keep_a_run_from_being_cancelled(bed: Bed, claimed_ago: int,
                                                                             cancelled: bool) -> None:
    """A replica that died while reporting (say, enforcing the bot's own timeout) left its
    `flops.dev/reporting` claim: older than the lease duration it no longer stops a cancel, as it no
    longer stops the new leader's report; a live claim still does (that replica closes the check)."""
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(140)\n"})
    await approve(bed)
    job = job_for(bed, head)
    job["metadata"]["annotations"]["flops.dev/reporting"] = f"flops-bot-dead-7c9f {int(time.time()) - claimed_ago}"
    bed.kube.put_object(job)
    bed.github.pulls[(REPO, PR)]["state"] = "closed"
    data = payload("pull_request.closed")
    pull_json(bed, data)
    await bed.deliver("pull_request", data)
    await bed.settle()
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert (bed.kube.get("jobs", NAMESPACE, job["metadata"]["name"]) is None) == cancelled
    assert (run["conclusion"] == "cancelled") == cancelled


# --- the sticky comment and restarts -------------------------------------------------------------------

async def test_one_sticky_comment_is_edited_with_the_history_of_runs(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    first = open_pr(bed, {"train.py": "print(15)\n"})
    await gate(bed, {"accuracy": 0.6, "loss": 0.5})
    [note] = sticky(bed)
    assert note["user"]["type"] == "Bot" and "2 regressions / 2 metrics" in note["body"]
    second = push_to_pr(bed, {"train.py": "print(16)\n"})
    await synchronize(bed, first)
    run = await gate(bed, GOOD)
    assert run["conclusion"] == "success"
    [edited] = sticky(bed)
    assert edited["id"] == note["id"]
    body = edited["body"]
    assert f"for `{second[:7]}`: **success**" in body and "| accuracy | higher | 0.912 | 0.912 |" in body
    assert "Runs of this pull request (2)" in body
    assert f"`{first[:7]}`" in body and "2 regressions / 2 metrics" in body  # the history keeps the first run
    assert f"/{REPO}/runs/{run['id']})" in body


async def test_a_run_finishing_while_the_bot_is_down_is_reported_once(make_bed: BedFactory,
                                                                      github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    first = await make_bed()
    setup_repo(first)
    await record_baseline(first, GOOD)
    head = open_pr(first, {"train.py": "print(17)\n"})
    await approve(first)
    job = job_for(first, head)
    await first.server.close()  # the bot goes away mid-run
    await finish(first, job, {"accuracy": 0.91, "loss": 0.232}, {"MLflow run": MLFLOW})
    second = await make_bed()
    run = await wait_for(lambda: completed(second, head), what="report after restart")
    assert run["conclusion"] == "success" and MLFLOW in run["output"]["summary"]
    await second.settle()
    await second.server.close()  # a restart: one replica at a time holds the tracker's Lease
    third = await make_bed()  # another restart: nothing is posted again
    await third.settle()
    assert len(github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{run['id']}$")) == 1
    [note] = sticky(third)
    assert len(github.calls_to("POST", rf"/repos/{REPO}/issues/{PR}/comments$")) == 1
    assert "Runs of this pull request (1)" in note["body"]


# --- /regression and the merge queue --------------------------------------------------------------------

async def test_regression_comment_runs_it_and_a_second_one_while_running_starts_nothing(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    head = open_pr(bed, {"train.py": "print(18)\n"})
    await comment(bed, "/regression")
    job = job_for(bed, head)
    assert job["metadata"]["annotations"]["flops.dev/trigger"] == f"/regression by @{MAINTAINER}"
    await comment(bed, "/regression")
    assert [j["metadata"]["name"] for j in regression_jobs(bed)
            if j["metadata"]["annotations"]["flops.dev/sha"] == head] == [job["metadata"]["name"]]
    replies = [c["body"] for c in bed.github.comments_on(REPO, PR) if c["user"]["type"] == "Bot"]
    assert "started for" in replies[0] and "already running" in replies[1]
    await finish(bed, job, GOOD)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert run["conclusion"] == "success"
    await comment(bed, "/regression")  # after it finished: a fresh run of the same commit
    assert job_for(bed, head)["metadata"]["name"] != job["metadata"]["name"]


async def test_regression_comment_from_a_reader_runs_nothing(bed: Bed) -> None:
    setup_repo(bed)
    bed.github.set_permission(REPO, "stranger", "read")
    open_pr(bed, {"train.py": "print(19)\n"})
    await comment(bed, "/regression", user="stranger")
    assert regression_jobs(bed) == []


def merge_group_payload(bed: Bed, head: str, base: str) -> dict[str, Any]:
    data = payload("merge_group.checks_requested")
    commit = bed.github.repos[REPO].commits[head]
    data["merge_group"].update(head_sha=head, base_sha=base, base_ref=f"refs/heads/{MAIN}",
                               head_ref=f"refs/heads/gh-readonly-queue/{MAIN}/pr-{PR}-{bed.github.pulls[(REPO, PR)]['head']['sha']}")
    data["merge_group"]["head_commit"].update(id=head, tree_id=tree_sha(commit.tree))
    data["repository"].update(full_name=REPO, default_branch=MAIN)
    data["installation"]["id"] = INSTALLATION
    return data


async def test_merge_group_with_the_tree_of_a_passing_pr_run_reuses_it(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    base = bed.github.branch_sha(REPO, MAIN)
    head = open_pr(bed, {"train.py": "print(20)\n"})
    await gate(bed, GOOD)
    group = bed.github.commit(REPO, f"gh-readonly-queue/{MAIN}/pr-{PR}", {}, parents=[head])  # same tree
    await bed.deliver("merge_group", merge_group_payload(bed, group, base))
    await bed.settle()
    [run] = bed.github.check_runs_for(REPO, group, "flops/regression")
    assert run["conclusion"] == "success" and f"`{head[:7]}`, which has the same tree" in run["output"]["summary"]
    assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in regression_jobs(bed)
            if "flops.dev/reported" not in j["metadata"]["annotations"]] == []


async def test_merge_group_with_a_new_tree_runs_the_job_and_its_commit_still_gets_a_baseline(bed: Bed) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    base = bed.github.branch_sha(REPO, MAIN)
    head = open_pr(bed, {"train.py": "print(21)\n"})
    await gate(bed, GOOD)
    group = bed.github.commit(REPO, f"gh-readonly-queue/{MAIN}/pr-{PR}", {"other.py": "x = 1\n"}, parents=[head])
    await bed.deliver("merge_group", merge_group_payload(bed, group, base))
    await bed.settle()
    job = job_for(bed, group)
    assert "flops.dev/pr" not in job["metadata"]["labels"] and "flops.dev/baseline" not in job["metadata"]["annotations"]
    await finish(bed, job, {"accuracy": 0.913, "loss": 0.23})
    run = await wait_for(lambda: completed(bed, group), what="merge group report")
    assert run["conclusion"] == "success" and run["output"]["title"] == "0 regressions / 2 metrics"
    # the queue fast-forwards the default branch to the group's commit: that push records its baseline
    repo = bed.github.repos[REPO]
    repo.branches[MAIN] = group
    await bed.deliver("push", push_payload(bed, base, group))
    await bed.settle()
    baseline_job = job_for(bed, group)
    assert baseline_job["metadata"]["annotations"]["flops.dev/baseline"] == "true"
    await finish(bed, baseline_job, {"accuracy": 0.913, "loss": 0.23})
    await wait_for(lambda: bed.deps.artifacts.get_json(regression.baseline_key(REPO, group)), what="baseline")


async def test_default_branch_pushes_record_baselines_even_when_branches_lists_only_others(bed: Bed) -> None:
    setup_repo(bed)
    await push_to_main(bed, {".github/flops.yml": "branches: [release]\n" + CONFIG})
    sha = await record_baseline(bed, GOOD)
    assert (await bed.deps.artifacts.get_json(regression.baseline_key(REPO, sha)))["metrics"] == GOOD
    other = bed.github.commit(REPO, "feature", {"x.py": "1\n"}, parents=[sha])
    await bed.deliver("push", push_payload(bed, sha, other, branch="feature"))
    await bed.settle()
    assert [j for j in regression_jobs(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == other] == []


async def test_a_dequeued_merge_group_stops_its_run(bed: Bed) -> None:
    setup_repo(bed)
    base = bed.github.branch_sha(REPO, MAIN)
    head = open_pr(bed, {"train.py": "print(22)\n"})
    group = bed.github.commit(REPO, f"gh-readonly-queue/{MAIN}/pr-{PR}", {"other.py": "x = 2\n"}, parents=[head])
    data = merge_group_payload(bed, group, base)
    await bed.deliver("merge_group", data)
    await bed.settle()
    name = job_for(bed, group)["metadata"]["name"]
    data.update(action="destroyed", reason="dequeued")
    await bed.deliver("merge_group", data)
    await bed.settle()
    assert bed.kube.get("jobs", NAMESPACE, name) is None
    [run] = bed.github.check_runs_for(REPO, group, "flops/regression")
    assert run["conclusion"] == "cancelled" and "dequeued" in run["output"]["summary"]


async def test_opening_a_pr_queues_the_check_until_an_approval(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(23)\n"})
    data = payload("pull_request.opened")
    pull_json(bed, data)
    await bed.deliver("pull_request", data)
    await bed.settle()
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert (run["status"], run["output"]["title"]) == ("queued", regression.WAITING)
    assert regression_jobs(bed) == []


async def test_a_run_for_a_new_head_supersedes_the_old_heads_run_even_without_synchronize(bed: Bed) -> None:
    setup_repo(bed)
    old = open_pr(bed, {"train.py": "print(24)\n"})
    await approve(bed)
    old_job = job_for(bed, old)["metadata"]["name"]
    new = push_to_pr(bed, {"train.py": "print(25)\n"})  # the synchronize delivery never arrived
    await comment(bed, "/regression")
    assert bed.kube.get("jobs", NAMESPACE, old_job) is None
    [cancelled] = bed.github.check_runs_for(REPO, old, "flops/regression")
    assert cancelled["conclusion"] == "cancelled" and f"new run started for {new[:7]}" in cancelled["output"]["summary"]
    assert job_for(bed, new)["metadata"]["labels"]["flops.dev/pr"] == str(PR)


async def test_a_rerun_under_the_same_job_name_is_never_judged_by_the_old_runs_metrics(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(26)\n"})
    await approve(bed)
    first = job_for(bed, head)
    write_output(bed, first, "metrics.json", json.dumps({"metrics": GOOD}).encode())  # then it is cancelled
    await comment(bed, "/cancel regression")
    assert bed.kube.get("jobs", NAMESPACE, first["metadata"]["name"]) is None
    await approve(bed)  # the same head approved again: the same deterministic Job name and FLOPS_OUTPUT
    second = job_for(bed, head)
    assert env_of(second)["FLOPS_OUTPUT"] == env_of(first)["FLOPS_OUTPUT"]
    bed.kube.succeed_job(NAMESPACE, second["metadata"]["name"])  # this run wrote nothing
    def both_completed() -> list[dict[str, Any]] | None:
        runs = [r for r in bed.github.check_runs_for(REPO, head, "flops/regression") if r["status"] == "completed"]
        return runs if len(runs) == 2 else None

    cancelled, run = await wait_for(both_completed, what="report")
    assert cancelled["conclusion"] == "cancelled"
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "No metrics")
