"""#16 finding 8: a POST that creates a check run or a comment, answered 5xx (or not at all) after
GitHub applied it, is looked up before it is retried: exactly one object results and the flow goes on
with it. On the test bed; the GitHub emulator applies the request, then answers 502 or cuts the line."""
from __future__ import annotations

import pytest

from tests.conftest import NAMESPACE, Bed, wait_for
from tests.test_builds import DIGEST, REPO, by_image, push
from tests.test_regression import GOOD, PR, comment, gate, open_pr, record_baseline, setup_repo, sticky


def build_runs(bed: Bed, sha: str) -> list[dict[str, object]]:
    return bed.github.check_runs_for(REPO, sha, "flops/build: server")


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
