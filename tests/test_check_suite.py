"""check_suite `rerequested` ("Re-run all checks" / "Re-run failed checks"): the recorded payload,
re-pointed at the emulated repository. The suite's failed build checks are re-run, or all of them
when none failed, each under the same rules as its own Re-run button."""
from __future__ import annotations

from typing import Any

from tests.conftest import INSTALLATION, NAMESPACE, Bed, payload, wait_for
from tests.test_builds import REPO, _completed, build_jobs, by_image, pull_request_head, push


def rerun_suite(sha: str, branch: str | None, pulls: tuple[int, ...] = ()) -> dict[str, Any]:
    data = payload("check_suite.rerequested")
    data["check_suite"].update(head_sha=sha, head_branch=branch, pull_requests=[{"number": n} for n in pulls])
    data["installation"]["id"] = INSTALLATION
    data["repository"].update(full_name=REPO, default_branch="master")
    return data


def jobs_at(bed: Bed, sha: str) -> list[dict[str, Any]]:
    return [j for j in build_jobs(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == sha]


async def test_rerun_failed_checks_rebuilds_only_the_failed_image(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(1)\n", "client/main.py": "print(2)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    jobs = by_image(bed)
    bed.kube.fail_job(NAMESPACE, jobs["server"]["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, jobs["client"]["metadata"]["name"], message="sha256:" + "ab" * 32)
    for image in ("server", "client"):
        await wait_for(lambda: _completed(bed, data["after"], f"flops/build: {image}"), what=f"{image} report")

    await bed.deliver("check_suite", rerun_suite(data["after"], "master"))
    await bed.settle()
    images = sorted(j["metadata"]["annotations"]["flops.dev/image"] for j in jobs_at(bed, data["after"]))
    assert images == ["client", "server", "server"]  # the failed server again; the built client not
    [again] = [r for r in bed.github.check_runs_for(REPO, data["after"], "flops/build: server")
               if r["status"] != "completed"]
    assert again["status"] == "in_progress"


async def test_rerun_all_checks_of_a_green_suite_rebuilds_every_image(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(3)\n", "client/main.py": "print(4)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    for job in by_image(bed).values():
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message="sha256:" + "cd" * 32)
    for image in ("server", "client"):
        await wait_for(lambda: _completed(bed, data["after"], f"flops/build: {image}"), what=f"{image} report")

    await bed.deliver("check_suite", rerun_suite(data["after"], "master"))
    await bed.settle()
    assert len(jobs_at(bed, data["after"])) == 4


async def test_a_fork_suite_without_a_grant_runs_nothing(bed: Bed) -> None:
    sha = pull_request_head(bed, 9, fork=True)
    bed.github.add_check_run(REPO, sha, "flops/build: server", conclusion="failure")
    await bed.deliver("check_suite", rerun_suite(sha, "master", (9,)))
    await bed.settle()
    assert jobs_at(bed, sha) == []


async def test_another_apps_check_of_the_same_name_is_not_ours_to_rerun(bed: Bed) -> None:
    sha = pull_request_head(bed, 10, fork=False)
    bed.github.add_check_run(REPO, sha, "flops/build: server", conclusion="failure", app_id=999)
    await bed.deliver("check_suite", rerun_suite(sha, "master", (10,)))
    await bed.settle()
    assert jobs_at(bed, sha) == []


async def test_a_suite_with_more_than_a_page_of_check_runs_still_reruns_the_failed_build(bed: Bed) -> None:
    """GitHub lists check runs 100 to a page, newest first: a monorepo whose other CI posted 120
    checks after the build failed has the bot's runs on page 2, and they are still found."""
    data = push(bed, {"server/app.py": "print(5)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    bed.kube.fail_job(NAMESPACE, by_image(bed)["server"]["metadata"]["name"])
    await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="the failed build report")
    for n in range(120):
        bed.github.add_check_run(REPO, data["after"], f"lint-{n}", conclusion="success", app_id=999)

    await bed.deliver("check_suite", rerun_suite(data["after"], "master"))
    await bed.settle()
    assert len(jobs_at(bed, data["after"])) == 2  # the failed server build, once more
