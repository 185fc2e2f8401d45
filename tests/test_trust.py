"""Grants follow reviews (#15 finding 4), on the test bed: dismissing an approval withdraws its trust
grant and stops what ran on its strength; a merge group runs only when every pull request in it may
run under the `/regression` rule."""
from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.flows import merge_queue, pulls
from tests.conftest import INSTALLATION, NAMESPACE, Bed, payload
from tests.emulators.github import tree_sha
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
    assert await bed.deps.artifacts.list_keys(f"trust/{REPO}/pr-{PR}/{head}") == []
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



def fork_pr(head: str) -> pulls.PullRef:
    return pulls.PullRef(REPO, PR, head, "feature", MAIN, "0" * 40, True, "mallory", INSTALLATION)


async def test_a_grant_and_a_revocation_at_once_neither_loses_the_other(bed: Bed) -> None:
    """Two replicas: one processes the dismissal of @octo-admin's approval while the other processes
    a maintainer's `/ok-to-test` of the same head. Both read before either writes; with one shared
    list per sha the later write won, resurrecting the dismissed approval or dropping the new grant."""
    pr = fork_pr("a" * 40)
    await pulls.grant(bed.deps, pr, SECOND, "approval", review=7)
    left, _ = await asyncio.gather(pulls.revoke(bed.deps, pr, SECOND, 7),
                                   pulls.grant(bed.deps, pr, MAINTAINER, "/ok-to-test"))
    assert left is True and await pulls.may_run(bed.deps, pr)  # the /ok-to-test stands
    assert await pulls.revoke(bed.deps, pr, SECOND, 7) is None  # the dismissed approval stays gone
    assert await pulls.may_run(bed.deps, pr)


async def test_a_grant_written_as_one_list_is_honoured_and_split_when_one_voucher_goes(bed: Bed) -> None:
    pr = fork_pr("b" * 40)
    await bed.deps.artifacts.put_json(pulls.trust_key(pr), {"by": SECOND, "how": "approval", "sha": pr.head_sha,
                                                            "vouchers": [
        {"by": SECOND, "how": "approval", "review": 7}, {"by": MAINTAINER, "how": "/ok-to-test", "review": None}]})
    assert await pulls.may_run(bed.deps, pr)
    assert await pulls.revoke(bed.deps, pr, SECOND, 7) is True
    assert not await bed.deps.artifacts.exists(pulls.trust_key(pr))
    assert await bed.deps.artifacts.list_keys(f"trust/{REPO}/pr-{PR}/{pr.head_sha}") == [
        pulls.voucher_key(pr, MAINTAINER, "/ok-to-test", None)]
    assert await pulls.may_run(bed.deps, fork_pr("c" * 40)) is False  # another sha: nothing


# --- the merge queue -----------------------------------------------------------------------------------

def enqueue(bed: Bed, number: int, head: str, ahead: str) -> str:
    """What GitHub's merge queue does: a merge commit of PR `number`'s head on top of `ahead` (the base
    or the entry queued before it), kept under `gh-readonly-queue/<base>/pr-<n>-<head>`."""
    return bed.github.commit(REPO, f"gh-readonly-queue/{MAIN}/pr-{number}-{head}", {f"merged-{number}": "1\n"},
                             parents=[ahead, head], message=f"Merge pull request #{number}")


def group_payload(bed: Bed, number: int, head: str, group: str, base: str) -> dict[str, Any]:
    data = payload("merge_group.checks_requested")
    data["merge_group"].update(head_sha=group, base_sha=base, base_ref=f"refs/heads/{MAIN}",
                               head_ref=f"refs/heads/gh-readonly-queue/{MAIN}/pr-{number}-{head}")
    data["merge_group"]["head_commit"].update(id=group, tree_id=tree_sha(bed.github.repos[REPO].commits[group].tree))
    data["repository"].update(full_name=REPO, default_branch=MAIN)
    data["installation"]["id"] = INSTALLATION
    return data


async def queue_fork_then_own_pr(bed: Bed) -> tuple[str, str]:
    """The fork PR #2 queued first, the same-repository PR #3 behind it; the group of #3 is delivered.
    Returns (the fork's head, the group's head)."""
    base = bed.github.branch_sha(REPO, MAIN)
    fork_head = bed.github.pulls[(REPO, PR)]["head"]["sha"]
    own_head = open_pr(bed, fork=False, number=3, branch="own", text="print(3)\n")
    group = enqueue(bed, 3, own_head, enqueue(bed, PR, fork_head, base))
    await bed.deliver("merge_group", group_payload(bed, 3, own_head, group, base))
    await bed.settle()
    return fork_head, group


async def test_a_merge_group_holding_an_unapproved_fork_pr_runs_nothing_and_names_it(bed: Bed) -> None:
    setup_repo(bed)
    open_pr(bed, fork=True)
    fork_head, group = await queue_fork_then_own_pr(bed)
    assert regression_jobs(bed) == [] and bed.kube.list("jobs", NAMESPACE) == []
    [run] = bed.github.check_runs_for(REPO, group, "flops/regression")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", f"Not run: #{PR} lacks approval")
    assert f"#{PR} ({fork_head[:7]})" in run["output"]["summary"] and "#3" not in run["output"]["summary"]


async def test_a_merge_group_whose_prs_are_all_trusted_runs_and_ignores_other_groups_refs(bed: Bed) -> None:
    setup_repo(bed)
    open_pr(bed, fork=True)
    await review(bed, "submitted")  # the maintainer's approval grants the fork's head
    base = bed.github.branch_sha(REPO, MAIN)
    stale = bed.github.commit(REPO, "elsewhere", {"evil.py": "1\n"}, parents=[base])
    enqueue(bed, 5, stale, base)  # a group that left the queue: not an ancestor of the one delivered
    _, group = await queue_fork_then_own_pr(bed)
    [job] = [j for j in running(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == group]
    assert job["metadata"]["annotations"]["flops.dev/trigger"] == "merge queue"
    [run] = bed.github.check_runs_for(REPO, group, "flops/regression")
    assert run["status"] == "in_progress"


async def test_a_merge_group_that_cannot_be_traced_runs_nothing(bed: Bed) -> None:
    setup_repo(bed)
    base = bed.github.branch_sha(REPO, MAIN)
    head = open_pr(bed, fork=False)
    group = enqueue(bed, PR, head, base)
    data = group_payload(bed, PR, head, group, base)
    data["merge_group"]["head_ref"] = f"refs/heads/{MAIN}"  # not a merge queue ref
    await bed.deliver("merge_group", data)
    await bed.settle()
    assert regression_jobs(bed) == []
    [run] = bed.github.check_runs_for(REPO, group, "flops/regression")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Not run: merge group not traced")


def test_merge_queue_refs_are_read_as_github_names_them() -> None:
    sha = "929f8209d40f77f4abc622a499c93a83babdbe64"
    assert merge_queue.entry_of(f"refs/heads/gh-readonly-queue/main/pr-104-{sha}", "main") == \
        merge_queue.Entry(104, sha)
    assert merge_queue.entry_of(f"refs/heads/gh-readonly-queue/release/1.x/pr-7-{sha}", "release/1.x") == \
        merge_queue.Entry(7, sha)
    for other in (f"refs/heads/gh-readonly-queue/main/pr-104-{sha}", f"refs/heads/gh-readonly-queue/dev/pr-1-{sha}x",
                  "refs/heads/main", f"refs/heads/feature/gh-readonly-queue/dev/pr-1-{sha}"):
        assert merge_queue.entry_of(other, "dev") is None


# --- merge group attribution: every commit of the group is a queued pull request's ----------------------

def pr_of_two_commits(bed: Bed, number: int, branch: str, *, fork: bool) -> str:
    base = bed.github.branch_sha(REPO, MAIN)
    first = bed.github.commit(REPO, branch, {f"{branch}.py": "x = 1\n"}, parents=[base], message=f"{branch}: start",
                              author="mallory" if fork else "octocat")
    head = bed.github.commit(REPO, branch, {f"{branch}.py": "x = 2\n"}, parents=[first], message=f"{branch}: more",
                             author="mallory" if fork else "octocat")
    bed.github.add_pull(REPO, number, head, base_branch=MAIN, head_ref=branch, head_repo=FORK if fork else None,
                        user="mallory" if fork else "octocat")
    return head


def pr_commits(bed: Bed, head: str) -> list[Any]:
    """The PR's commits oldest first (its branch back to the base branch)."""
    return list(reversed(first_parents(bed, head, bed.github.branch_sha(REPO, MAIN))))


def queue(bed: Bed, method: str, number: int, head: str, ahead: str) -> str:
    """GitHub's merge queue building PR `number`'s entry on `ahead` with `method`: one merge commit,
    one squashed commit, or a copy of each of its commits (same author, author date, message)."""
    ref = f"gh-readonly-queue/{MAIN}/pr-{number}-{head}"
    if method == "merge":
        return enqueue(bed, number, head, ahead)
    if method == "squash":
        return bed.github.commit(REPO, ref, {f"squashed-{number}": "1\n"}, parents=[ahead],
                                 message=f"Feature (#{number})\n\n* start\n* more")
    for commit in pr_commits(bed, head):
        ahead = bed.github.commit(REPO, ref, {f"rebased-{commit.sha[:7]}": "1\n"}, parents=[ahead],
                                  message=commit.message, author=commit.author, date=commit.date)
    return ahead


def first_parents(bed: Bed, top: str, base: str) -> list[Any]:
    """The emulator's commits from `top` back along first parents, `base` excluded (newest first)."""
    repo, found = bed.github.repos[REPO], []
    while top != base:
        found.append(repo.commits[top])
        top = repo.commits[top].parents[0]
    return found


METHODS = ["merge", "squash", "rebase"]


@pytest.mark.parametrize("method", METHODS)
async def test_a_group_of_two_queued_prs_runs_with_each_queue_method(bed: Bed, method: str) -> None:
    setup_repo(bed)
    base = bed.github.branch_sha(REPO, MAIN)
    first, second = pr_of_two_commits(bed, PR, "one", fork=False), pr_of_two_commits(bed, 3, "two", fork=False)
    group = queue(bed, method, 3, second, queue(bed, method, PR, first, base))
    await bed.deliver("merge_group", group_payload(bed, 3, second, group, base))
    await bed.settle()
    assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in running(bed)] == [group]
    assert bed.github.check_runs_for(REPO, group, "flops/regression")[0]["status"] == "in_progress"
    reads = bed.github.calls_to("GET", rf"/repos/{REPO}/pulls/\d+/commits")
    assert len(reads) == (2 if method == "rebase" else 0)  # merge and squash queues read no commit list


@pytest.mark.parametrize("method, forged", [(m, False) for m in METHODS] + [("squash", True), ("rebase", True)])
async def test_a_stale_group_built_on_a_dequeued_fork_pr_runs_nothing(bed: Bed, method: str, forged: bool) -> None:
    """The unapproved fork PR #2 was queued, #3 behind it; #2 left the queue (its ref is gone) but the
    group GitHub built for #3 on top of it is still checked: its first-parent chain holds #2's code.
    `forged`: the fork's commits in the chain carry #3's commits' author, author date and message."""
    setup_repo(bed)
    base = bed.github.branch_sha(REPO, MAIN)
    fork_head = pr_of_two_commits(bed, PR, "fork", fork=True)
    own_head = pr_of_two_commits(bed, 3, "own", fork=False)
    fork_entry = queue(bed, method, PR, fork_head, base)
    if forged:
        for commit, copied in zip(first_parents(bed, fork_entry, base), reversed(pr_commits(bed, own_head))):
            commit.message, commit.author, commit.date = copied.message, copied.author, copied.date
    group = queue(bed, method, 3, own_head, fork_entry)
    del bed.github.repos[REPO].branches[f"gh-readonly-queue/{MAIN}/pr-{PR}-{fork_head}"]  # dequeued
    await bed.deliver("merge_group", group_payload(bed, 3, own_head, group, base))
    await bed.settle()
    assert regression_jobs(bed) == [] and bed.kube.list("jobs", NAMESPACE) == []
    [run] = bed.github.check_runs_for(REPO, group, "flops/regression")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Not run: commits of no queued pull request")
    assert "no pull request now in the merge queue accounts for" in run["output"]["summary"]
