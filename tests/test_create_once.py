"""#16 finding 8: a POST that creates a check run or a comment, answered 5xx (or not at all) after
GitHub applied it, is looked up before it is retried: exactly one object results and the flow goes on
with it. On the test bed; the GitHub emulator applies the request, then answers 502 or cuts the line."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import INSTALLATION, NAMESPACE, Bed, payload, push_payload, sign, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server
from tests.serving import serving
from tests.test_builds import DIGEST, FILES, REPO, by_image, push
from tests.test_regression import GOOD, MAINTAINER, PR, comment, gate, open_pr, record_baseline, setup_repo, sticky


def build_runs(where: Bed | GitHubEmulator, sha: str) -> list[dict[str, Any]]:
    github = where.github if isinstance(where, Bed) else where
    return github.check_runs_for(REPO, sha, "flops/build: server")


@pytest.mark.parametrize("cut", [False, True], ids=["502-after-applying", "no-answer-after-applying"])
async def test_a_check_run_created_before_a_failure_is_used_not_created_again(bed: Bed, cut: bool) -> None:
    data = push(bed, {"server/app.py": "print(80)\n"})
    bed.github.fail_after_applying("POST", rf"/repos/{REPO}/check-runs$", 502, cut=cut)
    await bed.deliver("push", data)
    await bed.settle()
    [run] = build_runs(bed, data["after"])
    assert run["status"] == "in_progress"
    assert len(bed.github.calls_to("POST", rf"/repos/{REPO}/check-runs$")) == 1  # looked, found, not re-posted
    job = by_image(bed)["server"]
    assert job["metadata"]["annotations"]["flops.dev/check-run-id"] == str(run["id"])
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=DIGEST)
    await wait_for(lambda: build_runs(bed, data["after"])[0]["status"] == "completed", what="build report")
    [done] = build_runs(bed, data["after"])
    assert (done["id"], done["conclusion"]) == (run["id"], "success")  # the update landed on the single run


async def test_a_check_run_not_created_by_a_failed_post_is_posted_again(bed: Bed) -> None:
    data = push(bed, {"server/app.py": "print(81)\n"})
    bed.github.fail_next("POST", rf"/repos/{REPO}/check-runs$", 502)
    await bed.deliver("push", data)
    await bed.settle()
    assert len(build_runs(bed, data["after"])) == 1
    assert [c.status for c in bed.github.calls_to("POST", rf"/repos/{REPO}/check-runs$")] == [502, 201]


@pytest.mark.parametrize("cut", [False, True], ids=["502-after-applying", "no-answer-after-applying"])
async def test_a_sticky_comment_posted_before_a_failure_is_not_posted_twice(bed: Bed, cut: bool) -> None:
    setup_repo(bed)
    await record_baseline(bed, GOOD)
    open_pr(bed, {"train.py": "print('pr')\n"})
    bed.github.fail_after_applying("POST", rf"/repos/{REPO}/issues/{PR}/comments$", 502, cut=cut)
    run = await gate(bed, GOOD)
    assert run["conclusion"] == "success"
    [comment] = sticky(bed)
    assert "**success**" in comment["body"]
    assert len(bed.github.calls_to("POST", rf"/repos/{REPO}/issues/{PR}/comments$")) == 1


async def test_a_command_reply_posted_before_a_failure_is_not_posted_twice(bed: Bed) -> None:
    setup_repo(bed)
    open_pr(bed, {"train.py": "print('pr')\n"})
    bed.github.fail_after_applying("POST", rf"/repos/{REPO}/issues/{PR}/comments$", 502)
    await comment(bed, "/help")
    replies = [c for c in bed.github.comments_on(REPO, PR) if c["user"]["type"] == "Bot"]
    assert len(replies) == 1 and "`/help`" in replies[0]["body"]
    assert len(bed.github.calls_to("POST", rf"/repos/{REPO}/issues/{PR}/comments$")) == 1


async def test_serve_creates_one_check_run_and_one_reply_through_502s(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    """As shipped: `python -m bot serve`, GitHub answering 502 after it created the build's check run
    and the command reply. Each exists once, and the build's result lands on its single run."""
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.add_repo(REPO, default_branch="master")
    github.commit(REPO, "master", FILES)
    github.set_permission(REPO, MAINTAINER, "write")
    async with serving(tmp_path, github, kube, s3) as served:
        data = push_payload(github, REPO, {"server/app.py": "print(90)\n"})
        github.fail_after_applying("POST", rf"/repos/{REPO}/check-runs$", 502)
        await post(served.url, "push", data)
        [job] = await wait_for(lambda: kube.list("jobs", NAMESPACE), timeout=30, what="the build Job")
        kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=DIGEST)
        await wait_for(lambda: build_runs(github, data["after"])[0]["status"] == "completed", timeout=30,
                       what="the build reported")
        [run] = build_runs(github, data["after"])
        assert run["conclusion"] == "success"
        github.add_pull(REPO, PR, data["after"], base_branch="master", head_ref="feature", user="octocat")
        event = payload("issue_comment.created")
        event["issue"].update(number=PR, pull_request={"url": f"{github.url}/repos/{REPO}/pulls/{PR}"})
        event["comment"].update(body="/help", id=github.add_comment(REPO, PR, "/help", user=MAINTAINER)["id"])
        event["comment"]["user"]["login"] = MAINTAINER
        event["installation"]["id"] = INSTALLATION
        github.fail_after_applying("POST", rf"/repos/{REPO}/issues/{PR}/comments$", 502)
        await post(served.url, "issue_comment", event)
        await wait_for(lambda: [c for c in github.comments_on(REPO, PR) if c["user"]["type"] == "Bot"], timeout=30,
                       what="the reply")
        await wait_for(lambda: github.calls_to("GET", rf"/repos/{REPO}/issues/{PR}/comments$"), timeout=30,
                       what="the look for the reply")
    assert len([c for c in github.comments_on(REPO, PR) if c["user"]["type"] == "Bot"]) == 1
    assert len(github.calls_to("POST", rf"/repos/{REPO}/issues/{PR}/comments$")) == 1
    assert len(build_runs(github, data["after"])) == 1


async def post(url: str, event: str, data: dict[str, Any]) -> None:
    body = json.dumps(data).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body)}
    async with aiohttp.ClientSession() as session, session.post(url + "/webhook", data=body,
                                                                headers=headers) as response:
        assert response.status == 202, await response.text()
