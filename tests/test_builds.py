"""Push -> Kaniko Jobs -> tracked to the end -> check runs. On the test bed, over real HTTP."""
from __future__ import annotations

import io
import tarfile
import urllib.request
from typing import Any

import kubernetes.client
import kubernetes_validate
import pytest

from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, push_payload, wait_for
from tests.fencing import assert_fenced

REPO = "Codertocat/Hello-World"
DIGEST = "sha256:" + "ab" * 32
CONFIG = """\
registry: harbor.example.com/flops
branches: [master]
images:
  - name: server
    dockerfile: Dockerfile.server
    paths: ["server/**", "Dockerfile.server"]
    build_args: {PYTHON_VERSION: "3.11"}
  - name: client
    dockerfile: Dockerfile.client
    context: client
    paths: ["client/**", "Dockerfile.client"]
"""
FILES = {".github/flops.yml": CONFIG, "Dockerfile.server": "FROM python:3.11\n", "server/app.py": "print(1)\n",
         "Dockerfile.client": "FROM python:3.11\n", "client/main.py": "print(2)\n"}


def push(bed: Bed, files: dict[str, Any], *, branch: str = "master", first: bool = False) -> dict[str, Any]:
    """Commit `files` to the emulated repo and build the real push payload GitHub would send."""
    if REPO not in bed.github.repos:
        bed.github.add_repo(REPO, default_branch="master")
        bed.github.commit(REPO, branch, FILES)
    return push_payload(bed.github, REPO, files, branch=branch)


def build_jobs(bed: Bed) -> list[dict[str, Any]]:
    return bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})


def by_image(bed: Bed) -> dict[str, dict[str, Any]]:
    return {j["metadata"]["annotations"]["flops.dev/image"]: j for j in build_jobs(bed)}


async def test_push_builds_each_image_in_a_valid_kaniko_job(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(3)\n", "client/main.py": "print(4)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    jobs = by_image(bed)
    assert set(jobs) == {"server", "client"}
    for job in jobs.values():
        for version in ("1.30.0", "1.37.0"):
            kubernetes_validate.validate(job, version, strict=True)
        meta = job["metadata"]
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "flops-bot"
        assert meta["annotations"]["flops.dev/sha"] == data["after"]
        assert meta["annotations"]["flops.dev/installation-id"] == str(INSTALLATION)
        pod = job["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert_fenced(job)
        # no S3 credential at all: the source comes through the init container's presigned URL
        assert not [e for c in pod["initContainers"] + pod["containers"] for e in c.get("env", [])
                    if "valueFrom" in e or "token" in e["name"].lower() or e["name"].startswith("AWS_")]
    args = jobs["server"]["spec"]["template"]["spec"]["containers"][0]["args"]
    sha7 = data["after"][:7]
    assert f"--destination=harbor.example.com/flops/server:master-20261122093000-{sha7}" in args
    assert "--context=dir:///kaniko/buildcontext" in args
    assert "--dockerfile=/kaniko/buildcontext/Dockerfile.server" in args
    kaniko = jobs["server"]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "workspace", "mountPath": "/kaniko/buildcontext"} in kaniko["volumeMounts"]
    assert "--build-arg=PYTHON_VERSION=3.11" in args
    assert "--digest-file=/dev/termination-log" in args
    assert "--context-sub-path=client" in jobs["client"]["spec"]["template"]["spec"]["containers"][0]["args"]
    runs = bed.github.check_runs_for(REPO, data["after"])
    assert sorted((r["name"], r["status"]) for r in runs) == [
        ("flops/build: client", "in_progress"), ("flops/build: server", "in_progress")]
    [fetch] = jobs["server"]["spec"]["template"]["spec"]["initContainers"]
    with urllib.request.urlopen(fetch["env"][0]["value"]) as response:  # what the init container unpacks
        source = response.read()
    with tarfile.open(fileobj=io.BytesIO(source), mode="r:gz") as tar:
        assert {"Dockerfile.server", "server/app.py", "client/main.py"} <= set(tar.getnames())


async def test_path_filters_pick_the_images_to_build(bed: Bed) -> None:
    await bed.deliver("push", push(bed, {"client/main.py": "print(5)\n"}))
    await bed.settle()
    assert set(by_image(bed)) == {"client"}


async def test_truncated_commit_list_asks_the_compare_api_for_the_changed_files(bed: Bed) -> None:
    data = push(bed, {"client/main.py": "print(15)\n"})
    data["commits"] = [{**data["commits"][0], "modified": ["README.md"]}] * 20  # GitHub lists at most 20
    await bed.deliver("push", data)
    await bed.settle()
    assert bed.github.calls_to("GET", rf"/repos/{REPO}/compare/{data['before']}\.\.\.{data['after']}$")
    assert set(by_image(bed)) == {"client"}  # what the compare API says changed, not the payload's list


async def test_a_failed_tarball_download_is_retried(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(17)\n"})
    bed.github.fail_next("GET", rf"/repos/{REPO}/tarball/", 502)
    await bed.deliver("push", data)
    await bed.settle()
    assert [c.status for c in bed.github.calls_to("GET", rf"/repos/{REPO}/tarball/")] == [502, 302]
    assert set(by_image(bed)) == {"server"}


async def test_new_branch_builds_every_image(bed: Bed) -> None:
    data = push(bed, {"client/main.py": "print(16)\n"})
    data["before"] = "0" * 40  # a branch's first push: nothing to compare with
    await bed.deliver("push", data)
    await bed.settle()
    assert set(by_image(bed)) == {"server", "client"}


async def test_successful_build_reports_image_and_digest(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(6)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    job = by_image(bed)["server"]
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=DIGEST)
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="build report")
    assert run["conclusion"] == "success"
    assert DIGEST in run["output"]["summary"]
    assert f"harbor.example.com/flops/server:master-20261122093000-{data['after'][:7]}" in run["output"]["summary"]
    await wait_for(lambda: "flops.dev/reported" in bed.kube.get("jobs", NAMESPACE, job["metadata"]["name"])
                   ["metadata"]["annotations"], what="reported annotation")
    await bed.settle()
    async with bed.session.get(bed.url("/metrics")) as response:
        assert 'flops_jobs_finished_total{kind="build",result="success"} 1' in await response.text()
    # reported Jobs are labelled too: `kubectl get jobs -l '!flops.dev/reported'` lists running work
    assert bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/reported": "true"}) == [
        bed.kube.get("jobs", NAMESPACE, job["metadata"]["name"])]


async def test_failed_build_reports_reason_and_masked_log_tail(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(7)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    name = by_image(bed)["server"]["metadata"]["name"]
    log = "\n".join(f"step {i}" for i in range(80)) + f"\nerror: secret was {bed.settings.s3.secret_key}\n"
    bed.kube.fail_job(NAMESPACE, name, logs=log, exit_code=1)
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="failure report")
    assert run["conclusion"] == "failure"
    assert "exited with code 1" in run["output"]["summary"]
    text = run["output"]["text"]
    assert "step 79" in text and "step 5\n" not in text  # the tail, not the whole log
    assert bed.settings.s3.secret_key not in text and "***" in text


async def test_oom_killed_build_says_so(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(8)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    bed.kube.fail_job(NAMESPACE, by_image(bed)["server"]["metadata"]["name"], exit_code=137,
                      terminated_reason="OOMKilled")
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="failure report")
    assert "OOMKilled" in run["output"]["title"] and "memory" in run["output"]["summary"]


async def test_newer_push_supersedes_running_builds(bed: Bed) -> None:
    old = push(bed, {"server/app.py": "print(9)\n"})
    await bed.deliver("push", old)
    await bed.settle()
    old_job = by_image(bed)["server"]["metadata"]["name"]
    new = push(bed, {"server/app.py": "print(10)\n"})
    await bed.deliver("push", new)
    await bed.settle()
    [cancelled] = bed.github.check_runs_for(REPO, old["after"], "flops/build: server")
    assert cancelled["conclusion"] == "cancelled"
    assert new["after"][:7] in cancelled["output"]["summary"]
    assert bed.kube.get("jobs", NAMESPACE, old_job) is None
    assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in build_jobs(bed)] == [new["after"]]


async def test_rerun_button_builds_the_image_again(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(11)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    first = by_image(bed)["server"]["metadata"]["name"]
    bed.kube.fail_job(NAMESPACE, first)
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="failure report")
    rerun = payload("check_run.rerequested")
    rerun["check_run"].update(id=run["id"], name="flops/build: server", head_sha=data["after"])
    rerun["check_run"]["check_suite"]["head_branch"] = "master"
    rerun["installation"]["id"] = INSTALLATION
    rerun["repository"]["full_name"] = REPO
    await bed.deliver("check_run", rerun)
    await bed.settle()
    names = [j["metadata"]["name"] for j in build_jobs(bed)]
    assert len(names) == 2 and first in names
    runs = bed.github.check_runs_for(REPO, data["after"], "flops/build: server")
    assert sorted(r["status"] for r in runs) == ["completed", "in_progress"]


def rerequest(bed: Bed, sha: str, branch: str, run_id: int = 1) -> dict[str, Any]:
    """The check_run `rerequested` payload of a Re-run click on `flops/build: server`."""
    data = payload("check_run.rerequested")
    data["check_run"].update(id=run_id, name="flops/build: server", head_sha=sha, pull_requests=[])
    data["check_run"]["check_suite"]["head_branch"] = branch
    data["installation"]["id"] = INSTALLATION
    data["repository"].update(full_name=REPO, default_branch="master")
    return data


def pull_request_head(bed: Bed, number: int, *, fork: bool) -> str:
    """A PR whose head branch is named `master` (as a fork's often is), its commit not on ours."""
    push(bed, {"server/app.py": "print(21)\n"})
    base = bed.github.branch_sha(REPO, "master")
    sha = bed.github.commit(REPO, f"refs/pull/{number}/head", {"server/app.py": "print('pr')\n"}, parents=[base])
    bed.github.add_pull(REPO, number, sha, base_branch="master", head_ref="master",
                        head_repo="someone/Hello-World" if fork else None)
    return sha


async def test_rerun_of_a_pull_request_build_stays_a_pull_request_build(bed: Bed) -> None:
    sha = pull_request_head(bed, 7, fork=False)
    await bed.deliver("check_run", rerequest(bed, sha, "master"))
    await bed.settle()
    [job] = [j for j in build_jobs(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == sha]
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--destination=harbor.example.com/flops/server:pr-7-{sha[:7]}" in args
    assert "flops.dev/deploy-targets" not in job["metadata"]["annotations"]  # a PR build is never deployed


async def test_rerun_of_a_fork_build_needs_a_grant_for_its_head(bed: Bed) -> None:
    sha = pull_request_head(bed, 8, fork=True)
    await bed.deliver("check_run", rerequest(bed, sha, "master"))
    await bed.settle()
    assert [j for j in build_jobs(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == sha] == []


async def test_job_finishing_while_the_bot_is_down_is_reported_once_on_restart(make_bed: BedFactory, github) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    first = await make_bed()
    data = push(first, {"server/app.py": "print(12)\n"})
    await first.deliver("push", data)
    await first.settle()
    name = by_image(first)["server"]["metadata"]["name"]
    await first.server.close()  # the bot goes away
    first.kube.succeed_job(NAMESPACE, name, message=DIGEST)
    second = await make_bed()
    run = await wait_for(lambda: _completed(second, data["after"], "flops/build: server"), what="report")
    assert run["conclusion"] == "success"
    await second.settle()
    await second.server.close()  # a restart: one replica at a time holds the tracker's Lease
    third = await make_bed()  # and yet another restart: nothing is posted again
    await third.settle()
    patches = github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{run['id']}$")
    assert len(patches) == 1


async def test_a_job_deleted_by_hand_cancels_its_check_instead_of_leaving_it_running(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(18)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    name = by_image(bed)["server"]["metadata"]["name"]
    with kubernetes.client.ApiClient(bed.kube.client_configuration()) as api:  # what `kubectl delete job` does
        kubernetes.client.BatchV1Api(api).delete_namespaced_job(name, NAMESPACE)
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="check closed")
    assert run["conclusion"] == "cancelled"
    assert name in run["output"]["summary"] and "deleted" in run["output"]["summary"]


async def test_a_job_cancelled_by_the_bot_is_not_reported_again_when_deleted(bed: Bed) -> None:
    first = push(bed, {"server/app.py": "print(19)\n"})
    await bed.deliver("push", first)
    await bed.settle()
    second = push(bed, {"server/app.py": "print(20)\n"})
    await bed.deliver("push", second)  # supersedes and deletes the first
    await bed.settle()
    bed.kube.succeed_job(NAMESPACE, by_image(bed)["server"]["metadata"]["name"], message=DIGEST)
    await wait_for(lambda: _completed(bed, second["after"], "flops/build: server"), what="second build reported")
    await bed.settle()  # the watch is ordered: the first Job's deletion has been seen by now
    run = _completed(bed, first["after"], "flops/build: server")
    assert run is not None and run["conclusion"] == "cancelled" and "Superseded" in run["output"]["summary"]
    assert len(bed.github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{run['id']}$")) == 1


async def test_redelivered_push_starts_nothing_twice(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(13)\n"})
    await bed.deliver("push", data, delivery="d-1")
    await bed.settle()
    await bed.deliver("push", data, delivery="d-2")  # the same event under another delivery id (a second hook, a replay)
    await bed.settle()
    assert len(build_jobs(bed)) == 1
    assert len(bed.github.check_runs_for(REPO, data["after"], "flops/build: server")) == 1


@pytest.mark.parametrize("ref", ["refs/heads/feature", "refs/tags/v1.0"])
async def test_other_branches_and_unconfigured_tags_build_nothing(bed: Bed, ref: str) -> None:
    data = push(bed, {"server/app.py": "print(14)\n"})
    data["ref"] = ref
    await bed.deliver("push", data)
    await bed.settle()
    assert build_jobs(bed) == []


def _completed(bed: Bed, sha: str, name: str) -> dict[str, Any] | None:
    runs = [r for r in bed.github.check_runs_for(REPO, sha, name) if r["status"] == "completed"]
    return runs[0] if runs else None


async def test_metrics_count_queued_and_running_jobs_by_kind_and_time_each_run(bed: Bed) -> None:
    """flops_jobs_active{kind,state} follows the Jobs; flops_run_duration_seconds times each reported one."""
    metrics = bed.deps.metrics
    await bed.tracked()
    data = push(bed, {"server/app.py": "print(18)\n", "client/main.py": "print(18)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    assert metrics.value("flops_delivery_latency_seconds_count", event="push") == 1

    def active(state: str) -> float:
        return metrics.value("flops_jobs_active", kind="build", state=state)

    await wait_for(lambda: active("queued") == 2, what="two builds queued (no pod ready yet)")
    assert metrics.value("flops_jobs_active", kind="regression", state="queued") == 0  # the series exist at 0
    jobs = by_image(bed)
    bed.kube.start_job(NAMESPACE, jobs["server"]["metadata"]["name"])
    await wait_for(lambda: (active("queued"), active("running")) == (1, 1), what="one build running")
    bed.kube.succeed_job(NAMESPACE, jobs["server"]["metadata"]["name"], message=DIGEST)
    bed.kube.fail_job(NAMESPACE, jobs["client"]["metadata"]["name"], logs="error\n", exit_code=1)
    await wait_for(lambda: metrics.value("flops_run_duration_seconds_count", kind="build") == 2, what="both timed")
    assert (active("queued"), active("running")) == (0, 0)
    async with bed.session.get(bed.url("/metrics")) as response:
        text = await response.text()
    assert 'flops_jobs_active{kind="build",state="running"} 0.0' in text
    assert 'flops_run_duration_seconds_bucket{kind="build",le="10.0"} 2.0' in text
