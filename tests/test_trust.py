"""Grants follow reviews (#15 finding 4), on the test bed: dismissing an approval withdraws its trust
grant and stops what ran on its strength; a merge group runs only when every pull request in it may
run under the `/regression` rule."""
from __future__ import annotations

from typing import Any

from tests.conftest import NAMESPACE, Bed, payload
from tests.test_regression import (
    MAIN,
    MAINTAINER,
    PR,
    REPO,
    comment,
    completed,
    pull_json,
    regression_jobs,
    setup_repo,
)

FORK = "mallory/Hello-World"
SECOND = "octo-admin"


def open_pr(bed: Bed, *, fork: bool, number: int = PR, branch: str = "feature", text: str = "print(1)\n") -> str:
    base = bed.github.branch_sha(REPO, MAIN)
    head = bed.github.commit(REPO, branch, {"train.py": text}, parents=[base])
    bed.github.add_pull(REPO, number, head, base_branch=MAIN, head_ref=branch, head_repo=FORK if fork else None,
                        user="mallory" if fork else "octocat")
    return head


def review_payload(bed: Bed, action: str, *, user: str, review_id: int, fork: bool) -> dict[str, Any]:
    data = payload("pull_request_review.submitted")
    pull_json(bed, data)
    data["action"] = action
    if fork:
        data["pull_request"]["head"]["repo"]["full_name"] = FORK
    data["review"].update(id=review_id, commit_id=data["pull_request"]["head"]["sha"],
                          state="approved" if action == "submitted" else "dismissed")
    data["review"]["user"]["login"] = user
    return data


async def review(bed: Bed, action: str, *, user: str = MAINTAINER, review_id: int = 1, fork: bool = True) -> None:
    await bed.deliver("pull_request_review", review_payload(bed, action, user=user, review_id=review_id, fork=fork))
    await bed.settle()


def running(bed: Bed) -> list[dict[str, Any]]:
    return [j for j in regression_jobs(bed) if "flops.dev/reported" not in j["metadata"]["annotations"]]


async def test_a_dismissed_approval_of_a_fork_stops_its_run_and_runs_nothing_after(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, fork=True)
    await review(bed, "submitted")
    [job] = running(bed)
    assert job["metadata"]["annotations"]["flops.dev/sha"] == head
    await review(bed, "dismissed")
    assert bed.kube.get("jobs", NAMESPACE, job["metadata"]["name"]) is None
    run = completed(bed, head)
    assert run is not None and run["conclusion"] == "cancelled"
    assert f"@{MAINTAINER}'s approval of {head[:7]} was dismissed" in run["output"]["summary"]
    assert not await bed.deps.artifacts.exists(f"trust/{REPO}/pr-{PR}/{head}.json")
    await comment(bed, "/regression")  # the grant is gone: the fork rule refuses again
    assert running(bed) == []
    assert "comes from a fork" in bed.github.comments_on(REPO, PR)[-1]["body"]


async def test_dismissing_one_of_two_approvals_keeps_the_run(bed: Bed) -> None:
    setup_repo(bed)
    bed.github.set_permission(REPO, SECOND, "admin")
    open_pr(bed, fork=True)
    await review(bed, "submitted", review_id=1)
    await review(bed, "submitted", user=SECOND, review_id=2)
    await review(bed, "dismissed", review_id=1)
    [job] = running(bed)
    assert bed.kube.get("jobs", NAMESPACE, job["metadata"]["name"]) is not None
    await review(bed, "dismissed", user=SECOND, review_id=2)
    assert running(bed) == []


async def test_a_dismissed_approval_of_a_same_repo_pr_stops_the_run_it_started(bed: Bed) -> None:
    setup_repo(bed)
    head = open_pr(bed, fork=False)
    await review(bed, "submitted", fork=False)
    assert len(running(bed)) == 1
    await review(bed, "dismissed", fork=False)
    assert running(bed) == []
    run = completed(bed, head)
    assert run is not None and run["conclusion"] == "cancelled" and "/regression" in run["output"]["summary"]


async def test_a_dismissed_review_that_granted_nothing_stops_nothing(bed: Bed) -> None:
    setup_repo(bed)
    open_pr(bed, fork=True)
    await comment(bed, "/ok-to-test")
    await comment(bed, "/regression")
    assert len(running(bed)) == 1
    await review(bed, "dismissed", review_id=7)  # e.g. a dismissed "changes requested"
    assert len(running(bed)) == 1

