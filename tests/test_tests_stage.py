"""The `tests:` stage on the test bed (#17): pull requests, pushes and commands -> test Jobs in the
Kubernetes emulator -> JUnit results uploaded by the Job's own sidecar to the real S3 server ->
`flops/test: <name>` with its title, table and annotations.

The pod is simulated faithfully where it matters: the test writes what the command would leave in
`$FLOPS_RESULTS`, then runs the sidecar's exact program (from the Job spec, with its presigned POST
policy) as a process and sends it SIGTERM as the kubelet does once the test container exited;
then the emulator finishes the Job with the command's exit code and log."""
from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes_validate

from bot.core import jobs
from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, wait_for
from tests.emulators.github import GitHubEmulator, tree_sha
from tests.fencing import assert_fenced
from tests.test_junit import PYTEST
from tests.test_regression import MAIN, MAINTAINER, PR, REPO, comment, pull_json, push_payload, synchronize

IMAGE = "harbor.example.com/flops/runtime:py311"
CONFIG = f"""\
registry: harbor.example.com/flops
tests:
  - name: unit
    image: {IMAGE}
    command: ["pytest", "-q", "--junitxml=/flops/results/junit.xml"]
    paths: ["src/**", "tests/**"]
    resources: {{cpu: "2", memory: 4Gi}}
    timeout: 20m
  - name: lint
    image: {IMAGE}
    command: ["ruff", "check", "."]
    on: [pull_request]
"""
FORK = "mallory/Hello-World"


def setup_repo(bed: Bed) -> str:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.set_permission(REPO, MAINTAINER, "admin")
    return bed.github.commit(REPO, MAIN, {".github/flops.yml": CONFIG, "src/model.py": "x = 1\n",
                                          "tests/test_train.py": "def test(): pass\n"})


async def open_pr(bed: Bed, files: dict[str, Any], *, fork: bool = False, action: str = "opened") -> str:
    base = bed.github.branch_sha(REPO, MAIN)
    head = bed.github.commit(REPO, "feature", files, parents=[base])
    bed.github.add_pull(REPO, PR, head, base_branch=MAIN, head_ref="feature", head_repo=FORK if fork else None,
                        user="mallory" if fork else "octocat")
    data = payload("pull_request.opened")
    pull_json(bed, data)
    data.update(action=action, number=PR)
    if fork:
        data["pull_request"]["head"]["repo"]["full_name"] = FORK
    await bed.deliver("pull_request", data)
    await bed.settle()
    return head


def jobs_of(bed: Bed, sha: str, test: str = "unit", *, unreported: bool = True) -> list[dict[str, Any]]:
    return [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "test"})
            if j["metadata"]["annotations"]["flops.dev/sha"] == sha
            and j["metadata"]["annotations"]["flops.dev/test"] == test
            and not (unreported and "flops.dev/reported" in j["metadata"]["annotations"])]


def check(bed: Bed, sha: str, test: str = "unit") -> dict[str, Any] | None:
    runs = bed.github.check_runs_for(REPO, sha, f"flops/test: {test}")
    return runs[-1] if runs else None


def completed(bed: Bed, sha: str, test: str = "unit") -> dict[str, Any] | None:
    run = check(bed, sha, test)
    return run if run and run["status"] == "completed" else None


def pod(job: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = job["spec"]["template"]["spec"]
    return spec


async def run_pod(bed: Bed, job: dict[str, Any], tmp: Path, results: dict[str, bytes], *, exit_code: int = 0,
                  log: str = "") -> None:
    """The test container left `results` in $FLOPS_RESULTS and exited `exit_code`: the sidecar
    uploads them on SIGTERM, then the Job finishes."""
    [sidecar] = [c for c in pod(job)["initContainers"] if c["name"] == "upload-results"]
    folder = tmp / job["metadata"]["name"]
    for name, data in results.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    folder.mkdir(exist_ok=True)
    env = {e["name"]: e["value"] for e in sidecar["env"]}
    env["FLOPS_RESULTS"] = str(folder)
    assert sidecar["command"][:2] == ["python", "-c"]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", sidecar["command"][2], env={**env, "PATH": os.environ["PATH"]},
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    assert b"waiting" in await asyncio.wait_for(proc.stdout.readline(), 20)
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, (out, err)
    name = job["metadata"]["name"]
    if exit_code == 0:
        bed.kube.succeed_job(NAMESPACE, name, logs={"test": log} if log else "")
    else:
        bed.kube.fail_job(NAMESPACE, name, exit_code=exit_code, container="test", logs={"test": log} if log else "")
    await bed.settle()


async def push_to_main(bed: Bed, files: dict[str, Any]) -> str:
    before = bed.github.branch_sha(REPO, MAIN)
    sha = bed.github.commit(REPO, MAIN, files)
    data = push_payload(bed, before, sha)
    data["commits"][0]["modified"] = sorted(files)
    await bed.deliver("push", data)
    await bed.settle()
    return sha


# --- the Job ---------------------------------------------------------------------------------------

async def test_a_same_repository_pr_runs_its_tests_at_once_in_a_fenced_credential_free_job(bed: Bed) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    [lint] = jobs_of(bed, head, "lint")
    for version in ("1.30.0", "1.37.0"):
        kubernetes_validate.validate(job, version, strict=True)
    assert_fenced(job)
    meta, spec = job["metadata"], pod(job)
    assert meta["labels"]["flops.dev/kind"] == "test" and meta["labels"]["flops.dev/pr"] == str(PR)
    assert meta["annotations"]["flops.dev/check-name"] == "flops/test: unit"
    assert meta["annotations"]["flops.dev/timeout"] == str(20 * 60)
    [container] = spec["containers"]
    assert container["image"] == IMAGE and container["workingDir"] == "/workspace"
    assert container["command"] == ["pytest", "-q", "--junitxml=/flops/results/junit.xml"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FLOPS_RESULTS"] == "/flops/results" and env["FLOPS_OUTPUT"].endswith("/")
    # the test container (pull-request code) holds no credential at all, not even the bucket's
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert bed.settings.s3.secret_key not in json.dumps(job) and "ghs_" not in json.dumps(job)
    fetch, sidecar = spec["initContainers"]
    assert fetch["name"] == "fetch-source" and sidecar["restartPolicy"] == "Always"
    assert {"name": "results", "mountPath": "/flops/results"} in container["volumeMounts"]
    run = check(bed, head)
    assert run is not None and run["status"] == "in_progress" and run["external_id"] == meta["name"]
    assert check(bed, head, "lint")["status"] == "in_progress" and lint  # type: ignore[index]


async def test_the_sidecar_can_write_only_its_own_results_prefix(bed: Bed) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    [sidecar] = [c for c in pod(job)["initContainers"] if c["name"] == "upload-results"]
    post = json.loads({e["name"]: e["value"] for e in sidecar["env"]}["FLOPS_RESULTS_POST"])
    prefix = post["prefix"]
    assert prefix == job["metadata"]["annotations"]["flops.dev/output"] + "results/"

    def send(key: str) -> int:
        boundary = "b0undary"
        fields = {**post["fields"], "key": key}
        body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                        for k, v in fields.items())
        body += f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n\r\nhi\r\n' \
                f'--{boundary}--\r\n'.encode()
        request = urllib.request.Request(post["url"], data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    assert send(prefix + "junit.xml") in (200, 201, 204)
    assert send("baselines/" + REPO + "/x.json") == 403  # nothing outside its own results/
    assert post["url"].endswith("/" + bed.settings.s3.runs_bucket)  # and never the bot's own bucket
    keys = [o.object_name for o in bed.s3.client().list_objects(bed.settings.s3.runs_bucket, recursive=True)]
    assert prefix + "junit.xml" in keys and not any(k.startswith("baselines/") for k in keys)


# --- the report --------------------------------------------------------------------------------------

async def test_two_failures_give_title_table_annotations_and_the_also_failing_on_main_mark(bed: Bed,
                                                                                         tmp_path: Path) -> None:
    setup_repo(bed)
    main = await push_to_main(bed, {"src/model.py": "x = 3\n"})
    [main_job] = jobs_of(bed, main)
    assert not jobs_of(bed, main, "lint")  # `on: [pull_request]` only
    converges_fails = (b'<testsuites><testsuite time="60"><testcase classname="tests.test_features" name="test_nan"/>'
                       b'<testcase classname="tests.test_train" name="test_converges" time="11">'
                       b'<failure message="assert 0.9 &lt; 0.5">tests/test_train.py:8: assert</failure></testcase>'
                       b'</testsuite></testsuites>')
    await run_pod(bed, main_job, tmp_path, {"junit.xml": converges_fails}, exit_code=1)
    main_run = await wait_for(lambda: completed(bed, main), what="main's report")
    assert main_run["conclusion"] == "failure", main_run["output"]
    assert main_run["output"]["title"].startswith("1 failed"), main_run["output"]

    head = await open_pr(bed, {"src/model.py": "x = float('nan')\n"})
    [job] = jobs_of(bed, head)
    await run_pod(bed, job, tmp_path, {"junit.xml": PYTEST}, exit_code=1, log="2 failed\n")
    run = await wait_for(lambda: completed(bed, head), what="the PR's report")
    assert run["conclusion"] == "failure"
    assert run["output"]["title"] == "2 failed, 2 passed, 1 skipped in 3m12s"
    summary = run["output"]["summary"]
    nan_row = next(line for line in summary.splitlines() if "test\\_nan" in line)
    converges_row = next(line for line in summary.splitlines() if "test\\_converges" in line)
    assert "AssertionError: loss is nan" in nan_row and "also failing" not in nan_row
    assert "*(also failing on master)*" in converges_row and "12s" in converges_row
    notes = bed.github.annotations[run["id"]]
    assert [(n["path"], n["start_line"], n["annotation_level"]) for n in notes] == [
        ("tests/test_features.py", 17, "failure"), ("tests/test_train.py", 8, "failure")]
    assert run["output"]["summary"] == summary and not run["output"]["text"]  # no log tail: JUnit says it all


async def test_exit_1_without_junit_fails_with_its_log_tail(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "import missing\n"})
    [job] = jobs_of(bed, head)
    log = "".join(f"collecting {i}\n" for i in range(80)) + "ImportError: No module named 'missing'\n"
    await run_pod(bed, job, tmp_path, {}, exit_code=1, log=log)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Failed (no JUnit file)")
    assert "exited with code 1" in run["output"]["summary"] and "--junitxml=/flops/results/junit.xml" in \
        run["output"]["summary"]
    assert "ImportError: No module named 'missing'" in run["output"]["text"]
    assert "collecting 79" in run["output"]["text"] and "collecting 5\n" not in run["output"]["text"]


async def test_exit_0_with_a_clean_junit_file_passes(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"tests/test_train.py": "def test(): assert True\n"})
    [job] = jobs_of(bed, head, "lint")
    clean = b'<testsuite time="4.2"><testcase classname="lint" name="ruff" time="4.2"/></testsuite>'
    await run_pod(bed, job, tmp_path, {"reports/lint.xml": clean})
    run = await wait_for(lambda: completed(bed, head, "lint"), what="report")
    assert (run["conclusion"], run["output"]["title"]) == ("success", "1 passed in 4.2s")


# --- when tests run -----------------------------------------------------------------------------------

async def test_a_new_head_cancels_the_old_heads_tests(bed: Bed) -> None:
    setup_repo(bed)
    old = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [old_job] = jobs_of(bed, old)
    new = bed.github.commit(REPO, "feature", {"src/model.py": "x = 4\n"})
    await synchronize(bed, old)
    assert bed.kube.get("jobs", NAMESPACE, old_job["metadata"]["name"]) is None
    run = completed(bed, old)
    assert run is not None and run["conclusion"] == "cancelled" and new[:7] in run["output"]["summary"]
    assert len(jobs_of(bed, new)) == 1 and check(bed, new)["status"] == "in_progress"  # type: ignore[index]


async def test_a_late_synchronize_of_an_old_head_starts_no_test_for_it(bed: Bed) -> None:
    """Two replicas: the newer head's event was processed first; the older one arrives after it."""
    setup_repo(bed)
    old = await open_pr(bed, {"src/model.py": "x = 2\n"})
    new = bed.github.commit(REPO, "feature", {"src/model.py": "x = 4\n"})
    await synchronize(bed, old)
    [new_job] = jobs_of(bed, new)
    late = payload("pull_request.synchronize")
    pull_json(bed, late)
    late["pull_request"]["head"]["sha"] = old  # the event as GitHub sent it when `old` was the head
    late.update(number=PR, after=old)
    await bed.deliver("pull_request", late)
    await bed.settle()
    assert jobs_of(bed, old) == [] and [j["metadata"]["name"] for j in jobs_of(bed, new)] == [
        new_job["metadata"]["name"]]


async def test_paths_skip_a_test_whose_files_did_not_change(bed: Bed) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"docs/index.md": "# docs\n"})
    assert not jobs_of(bed, head)
    run = completed(bed, head)
    assert run is not None and run["conclusion"] == "skipped"
    assert "`src/**`" in run["output"]["summary"] and "`tests/**`" in run["output"]["summary"]
    assert jobs_of(bed, head, "lint")  # no `paths`: always
    await comment(bed, "/test unit")  # asked for by name: whatever the paths say
    assert len(jobs_of(bed, head)) == 1
    await comment(bed, "/cancel test")
    assert not jobs_of(bed, head) and not jobs_of(bed, head, "lint")
    assert completed(bed, head)["conclusion"] == "cancelled"  # type: ignore[index]


async def test_a_fork_runs_its_tests_only_after_a_grant_for_that_sha(bed: Bed) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"}, fork=True)
    assert not jobs_of(bed, head) and not jobs_of(bed, head, "lint")
    waiting = check(bed, head)
    assert waiting is not None and waiting["status"] == "queued" and "fork" in waiting["output"]["summary"]
    await comment(bed, "/test", user="mallory")  # no write permission: refused
    assert not jobs_of(bed, head)
    await comment(bed, "/ok-to-test")
    [job] = jobs_of(bed, head)
    assert check(bed, head)["id"] == waiting["id"]  # the queued check now in progress, not a second one
    assert check(bed, head)["status"] == "in_progress"  # type: ignore[index]
    assert job["metadata"]["annotations"]["flops.dev/sha"] == head


async def test_retest_runs_a_failed_test_again(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    await run_pod(bed, job, tmp_path, {}, exit_code=2, log="boom\n")
    await wait_for(lambda: completed(bed, head), what="report")
    await comment(bed, "/retest")
    [again] = jobs_of(bed, head)
    assert again["metadata"]["name"] != job["metadata"]["name"]
    assert check(bed, head)["status"] == "in_progress"  # type: ignore[index]



# --- a test in an image the commit builds --------------------------------------------------------------

IMAGE_CONFIG = """\
registry: harbor.example.com/flops
pr_registry: harbor.example.com/flops-pr
images:
  - {name: runtime, dockerfile: Dockerfile.runtime}
tests:
  - {name: unit, image: runtime, command: ["pytest", "-q"]}
"""


async def test_a_test_in_an_images_entry_waits_for_the_heads_build_then_runs_in_it(bed: Bed) -> None:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.commit(REPO, MAIN, {".github/flops.yml": IMAGE_CONFIG, "Dockerfile.runtime": "FROM python:3.11\n"})
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    assert not jobs_of(bed, head)
    waiting = check(bed, head)
    assert waiting is not None and (waiting["status"], waiting["output"]["title"]) == (
        "queued", "Waiting for image `runtime`")
    [build] = [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
               if j["metadata"]["annotations"]["flops.dev/sha"] == head]
    destination = build["metadata"]["annotations"]["flops.dev/destination"]
    assert destination == f"harbor.example.com/flops-pr/runtime:pr-{PR}-{head[:7]}"
    digest = "sha256:" + "ab" * 32
    bed.kube.succeed_job(NAMESPACE, build["metadata"]["name"], message=digest)
    [job] = await wait_for(lambda: jobs_of(bed, head), what="the test Job after the build")
    assert pod(job)["containers"][0]["image"] == f"{destination}@{digest}"
    assert check(bed, head)["id"] == waiting["id"] and check(bed, head)["status"] == "in_progress"  # type: ignore[index]


async def test_a_test_in_an_images_entry_needs_pr_registry_on_a_pull_request(bed: Bed) -> None:
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.commit(REPO, MAIN, {".github/flops.yml": IMAGE_CONFIG.replace("pr_registry: harbor.example.com/flops-pr\n",
                                                                              ""), "Dockerfile.runtime": "FROM x\n"})
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    run = completed(bed, head)
    assert run is not None and run["conclusion"] == "failure" and "`pr_registry`" in run["output"]["summary"]
    assert not jobs_of(bed, head) and not bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})


# --- timeouts, Re-run, merge queue -------------------------------------------------------------------

async def test_a_test_past_its_timeout_is_timed_out_with_the_results_it_wrote(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    partial = b'<testsuite time="1200"><testcase classname="t" name="fast" time="1"/></testsuite>'
    await run_pod(bed, job, tmp_path, {"junit.xml": partial}, exit_code=137)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert run["conclusion"] == "failure"  # killed (137) but not by the deadline: a plain failure
    again = await open_pr(bed, {"src/model.py": "x = 5\n"}, action="synchronize")
    [slow] = jobs_of(bed, again)
    bed.kube.fail_job(NAMESPACE, slow["metadata"]["name"], reason="DeadlineExceeded", container="test",
                      message="Job was active longer than specified deadline", exit_code=143)
    run = await wait_for(lambda: completed(bed, again), what="timed-out report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Timed out after 20m")


async def test_the_re_run_button_runs_that_test_of_that_commit_again(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    await run_pod(bed, job, tmp_path, {"junit.xml": PYTEST}, exit_code=1)
    run = await wait_for(lambda: completed(bed, head), what="report")
    data = payload("check_run.rerequested")
    data["check_run"].update(id=run["id"], name="flops/test: unit", head_sha=head, pull_requests=[{"number": PR}])
    data["check_run"]["check_suite"]["head_branch"] = "feature"
    data["installation"]["id"] = INSTALLATION
    data["repository"].update(full_name=REPO, default_branch=MAIN)
    await bed.deliver("check_run", data)
    await bed.settle()
    [again] = jobs_of(bed, head)
    assert again["metadata"]["name"] != job["metadata"]["name"] and not jobs_of(bed, head, "lint")[1:]
    assert check(bed, head)["status"] == "in_progress"  # type: ignore[index]


async def test_a_merge_group_runs_its_tests_once_every_pr_in_it_may_run(bed: Bed) -> None:
    setup_repo(bed)
    base = bed.github.branch_sha(REPO, MAIN)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    group = bed.github.commit(REPO, f"gh-readonly-queue/{MAIN}/pr-{PR}-{head}", {"merged": "1\n"},
                              parents=[base, head], message=f"Merge pull request #{PR}")
    data = payload("merge_group.checks_requested")
    data["merge_group"].update(head_sha=group, base_sha=base, base_ref=f"refs/heads/{MAIN}",
                               head_ref=f"refs/heads/gh-readonly-queue/{MAIN}/pr-{PR}-{head}")
    data["merge_group"]["head_commit"].update(id=group, tree_id=tree_sha(bed.github.repos[REPO].commits[group].tree))
    data["repository"].update(full_name=REPO, default_branch=MAIN)
    data["installation"]["id"] = INSTALLATION
    await bed.deliver("merge_group", data)
    await bed.settle()
    [job] = jobs_of(bed, group)
    assert "flops.dev/pr" not in job["metadata"]["annotations"]
    assert job["metadata"]["annotations"]["flops.dev/default-branch"] == MAIN
    assert check(bed, group)["status"] == "in_progress" and jobs_of(bed, group, "lint")  # type: ignore[index]


async def test_an_approval_of_a_fork_head_runs_its_tests(bed: Bed) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"}, fork=True)
    assert not jobs_of(bed, head)
    data = payload("pull_request_review.submitted")
    pull_json(bed, data)
    data["pull_request"]["head"]["repo"]["full_name"] = FORK
    data["review"].update(state="approved", commit_id=head)
    data["review"]["user"]["login"] = MAINTAINER
    await bed.deliver("pull_request_review", data)
    await bed.settle()
    assert len(jobs_of(bed, head)) == 1 and len(jobs_of(bed, head, "lint")) == 1


async def test_a_test_waiting_for_its_image_starts_after_a_restart(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed()
    bed.github.add_repo(REPO, default_branch=MAIN)
    bed.github.commit(REPO, MAIN, {".github/flops.yml": IMAGE_CONFIG, "Dockerfile.runtime": "FROM python:3.11\n"})
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [build] = bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
    await bed.server.close()  # the bot goes away while the build runs; what the test waits for is in S3
    bed.kube.succeed_job(NAMESPACE, build["metadata"]["name"], message="sha256:" + "cd" * 32)
    restarted = await make_bed()
    [job] = await wait_for(lambda: jobs_of(restarted, head), what="the test Job after the restart")
    assert pod(job)["containers"][0]["image"].endswith("@sha256:" + "cd" * 32)


async def test_re_run_failed_checks_on_the_suite_runs_the_failed_test_again(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    await run_pod(bed, job, tmp_path, {"junit.xml": PYTEST}, exit_code=1)
    await wait_for(lambda: completed(bed, head), what="report")
    data = payload("check_suite.rerequested")
    data["check_suite"].update(head_sha=head, head_branch="feature", pull_requests=[{"number": PR}])
    data["installation"]["id"] = INSTALLATION
    data["repository"].update(full_name=REPO, default_branch=MAIN)
    await bed.deliver("check_suite", data)
    await bed.settle()
    [again] = jobs_of(bed, head)
    assert again["metadata"]["name"] != job["metadata"]["name"]
    assert len(jobs_of(bed, head, "lint", unreported=False)) == 1  # still running, not failed: not re-run


async def test_the_sidecar_uploads_regular_files_only_never_what_a_symlink_points_at(bed: Bed, tmp_path: Path) -> None:
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head, "lint")
    secret = tmp_path / "outside.txt"
    secret.write_text("the sidecar's own files\n")
    folder = tmp_path / job["metadata"]["name"]
    folder.mkdir()
    (folder / "leak.xml").symlink_to(secret)
    (folder / "linked-dir").symlink_to(tmp_path, target_is_directory=True)
    clean = b'<testsuite><testcase classname="lint" name="ruff" time="1"/></testsuite>'
    await run_pod(bed, job, tmp_path, {"nested/deeper/lint.xml": clean})
    prefix = job["metadata"]["annotations"]["flops.dev/output"] + "results/"
    keys = sorted(o.object_name for o in bed.s3.client().list_objects(bed.settings.s3.runs_bucket, prefix=prefix,
                                                                          recursive=True))
    assert keys == [prefix + "nested/deeper/lint.xml"]
    run = await wait_for(lambda: completed(bed, head, "lint"), what="report")
    assert run["conclusion"] == "success"


async def test_the_sidecar_uploads_at_most_upload_files_files_however_many_empty_ones_the_test_writes(
        bed: Bed, tmp_path: Path) -> None:
    """An attacker's test writes thousands of empty files (they cost no bytes of the 50 MiB limit):
    the sidecar holding the upload policy sends at most UPLOAD_FILES of them."""
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head, "lint")
    flood = {f"flood/{i:04}.txt": b"" for i in range(jobs.UPLOAD_FILES + 40)}
    await run_pod(bed, job, tmp_path, flood)
    prefix = job["metadata"]["annotations"]["flops.dev/output"] + "results/"
    keys = list(bed.s3.client().list_objects(bed.settings.s3.runs_bucket, prefix=prefix, recursive=True))
    assert len(keys) == jobs.UPLOAD_FILES
    run = await wait_for(lambda: completed(bed, head, "lint"), what="report")
    assert run["conclusion"] == "success" and "truncated" not in run["output"]["summary"]


async def test_more_keys_than_the_bot_lists_under_results_are_reported_as_truncated(bed: Bed, tmp_path: Path) -> None:
    """A workload holding the Jobs' S3 keys (a regression run of the same repository) floods a test
    run's results prefix: the bot lists UPLOAD_FILES keys, reads the JUnit file among them and says
    on the check that the listing was truncated."""
    setup_repo(bed)
    head = await open_pr(bed, {"src/model.py": "x = 2\n"})
    [job] = jobs_of(bed, head)
    prefix = job["metadata"]["annotations"]["flops.dev/output"] + "results/"
    client, bucket = bed.s3.client(), bed.settings.s3.runs_bucket

    def put(key: str) -> None:
        client.put_object(bucket, key, io.BytesIO(b""), 0)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, [f"{prefix}zz/{i:04}.txt" for i in range(jobs.UPLOAD_FILES + 5)]))
    await run_pod(bed, job, tmp_path, {"junit.xml": PYTEST}, exit_code=1)
    run = await wait_for(lambda: completed(bed, head), what="report")
    assert run["conclusion"] == "failure"
    assert run["output"]["title"] == "2 failed, 2 passed, 1 skipped in 3m12s"  # junit.xml sorts before zz/
    assert f"**Results truncated:** the run wrote more than {jobs.UPLOAD_FILES} files" in run["output"]["summary"]
