"""Kueue on the test bed (issue #25 part 1): Jobs under `queue:` are created suspended with the
queue label, their checks are `queued` with the LocalQueue's name (and Kueue's reason), admission
moves them on, a preempted Job is requeued and reported once at the end, a federated run never
fully admitted is cancelled whole after its `federated.admission_timeout`; MultiKueue Jobs that ran
elsewhere say where. Kueue itself is `tests/emulators/kueue.py`, acting on the Kubernetes emulator."""
from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests import test_federated as fl
from tests import test_regression as rg
from tests import test_tests_stage as ts
from tests.conftest import NAMESPACE, Bed, push_payload, wait_for
from tests.emulators.kueue import QUEUE_LABEL, Kueue
from tests.samples import TWO_IMAGES

REASON = "couldn't assign flavors to pod set main: insufficient unused quota for nvidia.com/gpu in flavor a100"
SHOWN = "couldn't assign flavors to pod set main: insufficient unused quota for nvidia\\.com/gpu"  # escaped


def queued_config(queue: str) -> str:
    return rg.CONFIG + f"queue: {queue}\n"


def regression_check(bed: Bed, sha: str) -> dict[str, Any]:
    return bed.github.check_runs_for(rg.REPO, sha, "flops/regression")[-1]


def check_patches(bed: Bed, check_id: str) -> int:
    return len(bed.github.calls_to("PATCH", rf"/check-runs/{check_id}$"))


async def approved_under_queue(bed: Bed, queue: str = "{regression: gpu, build: cpu}") -> tuple[str, dict[str, Any]]:
    bed.github.add_repo(rg.REPO, default_branch=rg.MAIN)
    bed.github.set_permission(rg.REPO, rg.MAINTAINER, "admin")
    bed.github.commit(rg.REPO, rg.MAIN, {".github/flops.yml": queued_config(queue), "train.py": "print(1)\n"})
    head = rg.open_pr(bed, {"train.py": "print('relu')\n"})
    await rg.approve(bed)
    return head, rg.job_for(bed, head)


async def test_a_regression_under_queue_waits_suspended_then_runs_when_admitted(bed: Bed) -> None:
    head, job = await approved_under_queue(bed)
    name = job["metadata"]["name"]
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    kubernetes_validate.validate(job, "1.31.0", strict=True)
    check = regression_check(bed, head)
    assert check["status"] == "queued" and "LocalQueue `gpu`" in check["output"]["title"]
    assert "waiting for Kueue admission" in check["output"]["summary"]
    with pytest.raises(ValueError, match="suspended"):
        bed.kube.start_job(NAMESPACE, name)  # a suspended Job starts no Pods
    assert bed.kube.list("pods", NAMESPACE, labels={"job-name": name}) == []

    kueue = Kueue(bed.kube)
    kueue.pending(name, REASON)  # Kueue's own reason shows on the check (the Workload is read, read-only)
    await wait_for(lambda: SHOWN in regression_check(bed, head)["output"]["summary"], what="Kueue's reason")
    assert regression_check(bed, head)["status"] == "queued"

    kueue.admit(name)
    await wait_for(lambda: regression_check(bed, head)["status"] == "in_progress", what="admission")
    admitted = regression_check(bed, head)["output"]
    assert admitted["title"] == "Regression test running"
    assert admitted["summary"].startswith("Admitted by Kueue from LocalQueue `gpu`; its timeout counts from now.")
    assert "runs `python train.py --epochs 3`" in admitted["summary"]  # what the check says of the run, kept
    bed.kube.start_job(NAMESPACE, name)
    await rg.finish(bed, bed.kube.get("jobs", NAMESPACE, name), rg.GOOD)
    run = await wait_for(lambda: rg.completed(bed, head), what="the report")
    assert run["conclusion"] in ("neutral", "success")  # no baseline yet: compared with nothing


async def test_without_permission_on_workloads_the_check_still_says_it_waits(bed: Bed) -> None:
    bed.kube.fail_next("GET", r"/workloads", 403, times=1000)
    head, job = await approved_under_queue(bed, "gpu")
    Kueue(bed.kube).pending(job["metadata"]["name"], REASON)
    await bed.settle()
    check = regression_check(bed, head)
    assert check["status"] == "queued" and "waiting for Kueue admission" in check["output"]["summary"]
    assert SHOWN not in check["output"]["summary"]
    assert not bed.kube.errors


async def test_a_preempted_job_is_requeued_not_failed_and_reported_once_at_the_end(bed: Bed) -> None:
    head, job = await approved_under_queue(bed)
    name, kueue = job["metadata"]["name"], Kueue(bed.kube)
    check_id = regression_check(bed, head)["id"]
    kueue.admit(name)
    bed.kube.start_job(NAMESPACE, name)
    await wait_for(lambda: regression_check(bed, head)["status"] == "in_progress", what="admission")

    kueue.evict(name)  # Kueue preempts it: suspended again, its Pod deleted, the Job not failed
    await wait_for(lambda: regression_check(bed, head)["status"] == "queued", what="requeued")
    check = regression_check(bed, head)
    assert "Preempted, requeued" in check["output"]["title"] and "not a failure" in check["output"]["summary"]
    assert bed.kube.list("pods", NAMESPACE, labels={"job-name": name}) == []
    await bed.settle()
    assert rg.completed(bed, head) is None

    kueue.admit(name)
    await wait_for(lambda: "again after its preemption" in regression_check(bed, head)["output"]["summary"],
                   what="readmission")
    await bed.settle()
    before = check_patches(bed, check_id)
    bed.kube.start_job(NAMESPACE, name)
    await rg.finish(bed, bed.kube.get("jobs", NAMESPACE, name), rg.GOOD)
    await wait_for(lambda: rg.completed(bed, head), what="the report")
    await bed.settle()
    assert check_patches(bed, check_id) == before + 1  # one report, at the end
    assert len(bed.github.check_runs_for(rg.REPO, head, "flops/regression")) == 1


async def test_a_build_under_queue_is_queued_with_its_queue_and_admission_moves_it_on(bed: Bed) -> None:
    repo = rg.REPO
    bed.github.add_repo(repo, default_branch="master")
    bed.github.commit(repo, "master", {".github/flops.yml": TWO_IMAGES + "queue: {build: cpu}\n",
                                       "Dockerfile.server": "FROM x\n", "Dockerfile.client": "FROM y\n"})
    data = push_payload(bed.github, repo, {"Dockerfile.server": "FROM z\n"})
    await bed.deliver("push", data)
    await bed.settle()
    builds = bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
    assert len(builds) == 2
    for job in builds:
        assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "cpu"
    server = next(j for j in builds if j["metadata"]["annotations"]["flops.dev/image"] == "server")
    check = bed.github.check_runs_for(repo, data["after"], "flops/build: server")[-1]
    assert check["status"] == "queued" and "LocalQueue `cpu`" in check["output"]["title"]
    Kueue(bed.kube).admit(server["metadata"]["name"])
    await wait_for(lambda: bed.github.check_runs_for(repo, data["after"], "flops/build: server")[-1]["status"]
                   == "in_progress", what="admitted build")
    bed.kube.succeed_job(NAMESPACE, server["metadata"]["name"], message="sha256:" + "a" * 64)
    await wait_for(lambda: bed.github.check_runs_for(repo, data["after"], "flops/build: server")[-1]
                   .get("conclusion") == "success", what="build report")


async def test_a_test_job_under_queue_waits_in_its_queue_and_runs_when_admitted(bed: Bed, tmp_path: Any) -> None:
    """`queue: {tests: cpu}` (the default branch's) queues the PR's test Jobs too: created suspended in
    LocalQueue `cpu`, the check `queued` until Kueue admits the Job, then reported as usual."""
    ts.setup_repo(bed)
    bed.github.commit(ts.REPO, ts.MAIN, {".github/flops.yml": ts.CONFIG + "queue: {tests: cpu, regression: gpu}\n"})
    head = await ts.open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = ts.jobs_of(bed, head)
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "cpu"
    kubernetes_validate.validate(job, "1.31.0", strict=True)
    queued = ts.check(bed, head)
    assert queued is not None and queued["status"] == "queued"
    assert "LocalQueue `cpu`" in queued["output"]["title"] and "runs `pytest -q" in queued["output"]["summary"]
    Kueue(bed.kube).admit(job["metadata"]["name"])
    await wait_for(lambda: (ts.check(bed, head) or {}).get("status") == "in_progress", what="admission")
    assert ts.check(bed, head)["output"]["title"] == "Tests running"  # type: ignore[index]
    bed.kube.start_job(NAMESPACE, job["metadata"]["name"])
    await ts.run_pod(bed, bed.kube.get("jobs", NAMESPACE, job["metadata"]["name"]), tmp_path,
                     {"junit.xml": ts.PYTEST}, exit_code=1)
    done = await wait_for(lambda: ts.completed(bed, head), what="the test report")
    assert done["conclusion"] == "failure" and done["id"] == queued["id"]  # one check, from queued to the end


async def test_no_queue_and_no_default_is_todays_behaviour(bed: Bed) -> None:
    bed.github.add_repo(rg.REPO, default_branch=rg.MAIN)
    bed.github.set_permission(rg.REPO, rg.MAINTAINER, "admin")
    bed.github.commit(rg.REPO, rg.MAIN, {".github/flops.yml": rg.CONFIG, "train.py": "print(1)\n"})
    head = rg.open_pr(bed, {"train.py": "print(2)\n"})
    await rg.approve(bed)
    job = rg.job_for(bed, head)
    assert job["spec"]["suspend"] is False and QUEUE_LABEL not in job["metadata"]["labels"]
    assert regression_check(bed, head)["status"] == "in_progress"


async def test_flops_default_queue_applies_and_a_pr_cannot_pick_its_queue(make_bed: Any, github: Any) -> None:
    github.add_installation(77, "Codertocat", [rg.REPO])
    bed = await make_bed(FLOPS_DEFAULT_QUEUE="team-default")
    bed.github.add_repo(rg.REPO, default_branch=rg.MAIN)
    bed.github.set_permission(rg.REPO, rg.MAINTAINER, "admin")
    bed.github.commit(rg.REPO, rg.MAIN, {".github/flops.yml": rg.CONFIG, "train.py": "print(1)\n"})
    head = rg.open_pr(bed, {".github/flops.yml": rg.CONFIG + "queue: premium\n"})
    await rg.approve(bed)
    job = rg.job_for(bed, head)
    assert job["metadata"]["labels"][QUEUE_LABEL] == "team-default"  # the PR's `queue: premium` is not trusted
    assert "LocalQueue `team-default`" in regression_check(bed, head)["output"]["title"]


async def test_multikueue_job_that_ran_elsewhere_says_where_and_omits_the_log(bed: Bed) -> None:
    head, job = await approved_under_queue(bed)
    name, kueue = job["metadata"]["name"], Kueue(bed.kube)
    kueue.admit(name, cluster="worker-eu-1")
    await wait_for(lambda: "worker-eu-1" in regression_check(bed, head)["output"]["summary"], what="placement")
    kueue.finish_elsewhere(name, succeeded=False, cluster="worker-eu-1")
    run = await wait_for(lambda: rg.completed(bed, head), what="the report")
    assert run["conclusion"] == "failure"
    assert "worker cluster `worker-eu-1`" in run["output"]["text"] and "kubectl --context" in run["output"]["text"]
    assert "Ran in worker cluster `worker-eu-1`" in run["output"]["summary"]
    assert not bed.kube.errors


async def test_multikueue_success_comes_through_s3_and_says_where_it_ran(bed: Bed) -> None:
    head, job = await approved_under_queue(bed)
    name, kueue = job["metadata"]["name"], Kueue(bed.kube)
    kueue.admit(name, cluster="worker-us-2")
    await wait_for(lambda: "worker-us-2" in regression_check(bed, head)["output"]["summary"], what="placement")
    await bed.settle()
    rg.write_output(bed, job, "metrics.json", b'{"metrics": {"accuracy": 0.93, "loss": 0.2}}')
    kueue.finish_elsewhere(name, succeeded=True, cluster="worker-us-2")
    run = await wait_for(lambda: rg.completed(bed, head), what="the report")
    assert run["conclusion"] == "neutral" and "0.93" in run["output"]["summary"]  # no baseline: not compared
    assert "Ran in worker cluster `worker-us-2` (Kueue MultiKueue)" in run["output"]["summary"]


# --- federated ---------------------------------------------------------------------------------------

def federated_config(admission: str = "2s") -> str:
    return fl.config().replace("  resources: {cpu: \"1\", memory: 1Gi}\n",
                               f"  resources: {{cpu: \"1\", memory: 1Gi}}\n  admission_timeout: {admission}\n") \
        + "queue: {federated: gpu}\n"


def federated_check(bed: Bed, sha: str) -> dict[str, Any]:
    return bed.github.check_runs_for(fl.REPO, sha, "flops/federated")[-1]


async def test_federated_clients_start_after_the_server_is_admitted(bed: Bed) -> None:
    server = await fl.start_run(bed, "/train rounds=2 clients=2", cfg=federated_config("1h"))
    run = server["metadata"]["name"]
    sha = server["metadata"]["annotations"]["flops.dev/sha"]
    assert server["spec"]["suspend"] is True and server["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    assert fl.run_objects(bed, run)[0] == []  # no client before the server is admitted
    assert federated_check(bed, sha)["status"] == "queued"
    Kueue(bed.kube).admit(run)
    clients = await wait_for(lambda: fl.run_objects(bed, run)[0] if len(fl.run_objects(bed, run)[0]) == 2 else None,
                             what="the clients")
    for client in clients:
        assert client["spec"]["suspend"] is True and client["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    await wait_for(lambda: federated_check(bed, sha)["status"] == "in_progress", what="admission")


async def test_a_federated_run_never_fully_admitted_is_cancelled_whole(bed: Bed) -> None:
    server = await fl.start_run(bed, "/train rounds=2 clients=2", cfg=federated_config("2s"))
    run = server["metadata"]["name"]
    sha = server["metadata"]["annotations"]["flops.dev/sha"]
    kueue = Kueue(bed.kube)
    kueue.admit(run)
    await wait_for(lambda: len(fl.run_objects(bed, run)[0]) == 2, what="the clients")
    kueue.admit(fl.run_objects(bed, run)[0][0]["metadata"]["name"])  # client 0 admitted, client 1 never
    check = await wait_for(lambda: federated_check(bed, sha) if federated_check(bed, sha)["status"] == "completed"
                           else None, timeout=15, what="the run cancelled after its admission timeout")
    assert check["conclusion"] == "cancelled"
    summary = check["output"]["summary"]
    assert "admission timeout of 2s" in summary and f"client 1 (`{run}-c1`) of 2 waited" in summary
    await wait_for(lambda: bed.kube.get("jobs", NAMESPACE, run) is None, what="the server deleted")
    await wait_for(lambda: fl.run_objects(bed, run) == ([], []), what="clients and Service gone with it")


async def test_a_federated_server_never_admitted_is_cancelled_saying_so(bed: Bed) -> None:
    server = await fl.start_run(bed, "/train rounds=2 clients=2", cfg=federated_config("2s"))
    sha = server["metadata"]["annotations"]["flops.dev/sha"]
    check = await wait_for(lambda: federated_check(bed, sha) if federated_check(bed, sha)["status"] == "completed"
                           else None, timeout=15, what="the run cancelled after its admission timeout")
    assert check["conclusion"] == "cancelled"
    assert "the server (Job" in check["output"]["summary"] and "no client was started" in check["output"]["summary"]


async def test_the_timeout_counts_from_admission_not_from_creation(bed: Bed) -> None:
    head, job = await approved_under_queue(bed)  # regression.timeout: 20m
    name = job["metadata"]["name"]
    waited = bed.kube.get("jobs", NAMESPACE, name)
    waited["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # it waited in the queue for months
    bed.kube.put_object(waited)
    Kueue(bed.kube).admit(name)
    await wait_for(lambda: regression_check(bed, head)["status"] == "in_progress", what="admission")
    await bed.settle()
    assert regression_check(bed, head)["status"] == "in_progress"  # not timed out: it has just started
    assert bed.kube.get("jobs", NAMESPACE, name) is not None


async def test_a_restart_while_queued_posts_nothing_again_and_still_follows_kueue(make_bed: Any, github: Any) -> None:
    github.add_installation(77, "Codertocat", [rg.REPO])
    first = await make_bed()
    head, job = await approved_under_queue(first)
    name = job["metadata"]["name"]
    Kueue(first.kube).pending(name, REASON)
    await wait_for(lambda: SHOWN in regression_check(first, head)["output"]["summary"], what="Kueue's reason")
    await first.settle()
    check_id = regression_check(first, head)["id"]
    before = check_patches(first, check_id)
    await first.server.close()  # the bot goes away while the Job waits
    second = await make_bed()
    await second.settle()
    assert check_patches(second, check_id) == before  # the state is on the Job: nothing posted twice
    Kueue(second.kube).admit(name)
    await wait_for(lambda: regression_check(second, head)["status"] == "in_progress", what="admission after restart")
