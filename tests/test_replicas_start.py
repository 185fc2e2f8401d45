"""Issue 21: the start claim across replicas. Two `python -m bot serve` replicas get the same trigger of one
PR head's run at the same moment (two `/regression` comments, a `synchronize` each, `/build` twice): one
run starts, with one check run. The emulated GitHub holds both replicas' first read of the pull request
until both asked (a barrier), so both go on to start at the same moment, every time."""
from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import NAMESPACE, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.test_as_shipped import (
    IMAGES,
    MAINTAINER,
    REGRESSION,
    TESTS,
    Shipped,
    code_repo,
    comment_payload,
    deliver,
    jobs_of,
    open_pr,
    pr_payload,
)
from tests.test_replicas import processed, two_replicas


async def at_once(github: GitHubEmulator, repo: str, number: int, *sends: Any, read: str = "") -> None:
    """Deliver `sends` together, each replica's read of the PR (or of `read`) held until both have asked."""
    barrier = github.hold_next("GET", read or rf"^/repos/{repo}/pulls/{number}$", times=2)
    sending = asyncio.gather(*sends)
    await wait_for(lambda: barrier.arrived == 2, timeout=20, what="both replicas reading the pull request")
    barrier.release.set()
    await sending


async def all_processed(a: Shipped, b: Shipped, before: int, count: int) -> None:
    await wait_for(lambda: processed(a) + processed(b) - before >= count, timeout=30,
                   what=f"the {count} deliveries processed")


def claims_left(kube: KubeEmulator) -> list[str]:
    return [lease["metadata"]["name"] for lease in kube.list("leases", NAMESPACE)
            if lease["metadata"]["name"].startswith("flops-start-")]


def replies(github: GitHubEmulator, repo: str, number: int) -> list[str]:
    return [c["body"] for c in github.comments_on(repo, number) if c["user"]["type"] == "Bot"]


async def test_two_regression_comments_on_two_replicas_at_once_start_one_run_and_a_rerun_after_it_finished(
        tmp_path: Any, github: GitHubEmulator, kube: KubeEmulator, s3: Any) -> None:
    repo, number = "acme/fl-claim", 31
    async with two_replicas(tmp_path, github, kube, s3) as (a, b):
        code_repo(a, repo, IMAGES + REGRESSION)
        head = open_pr(a, repo, number)
        before = processed(a) + processed(b)
        await at_once(github, repo, number, deliver(a, "issue_comment", comment_payload(a, repo, number, "/regression")),
                      deliver(b, "issue_comment", comment_payload(b, repo, number, "/regression")))
        await all_processed(a, b, before, 2)
        [job] = jobs_of(a, "regression", head)
        [check] = github.check_runs_for(repo, head, "flops/regression")
        assert job["metadata"]["annotations"]["flops.dev/check-run-id"] == str(check["id"])
        assert check["status"] == "in_progress"
        answers = replies(github, repo, number)
        assert sum("started for" in text for text in answers) == 1, answers
        assert sum("already running" in text for text in answers) == 1, answers
        assert claims_left(kube) == []  # released once the Job existed
        kube.succeed_job(NAMESPACE, job["metadata"]["name"])  # no metrics.json: reported as a failure
        await wait_for(lambda: github.check_runs_for(repo, head, "flops/regression")[0]["status"] == "completed",
                       timeout=30, what="the first run reported")
        await deliver(b, "issue_comment", comment_payload(b, repo, number, "/regression"))
        await wait_for(lambda: len(jobs_of(a, "regression", head)) == 2, timeout=30, what="the re-run started")
        assert len(github.check_runs_for(repo, head, "flops/regression")) == 2


async def test_an_approval_and_a_regression_comment_on_two_replicas_at_once_start_one_run(
        tmp_path: Any, github: GitHubEmulator, kube: KubeEmulator, s3: Any) -> None:
    repo, number = "acme/fl-claim-review", 34
    async with two_replicas(tmp_path, github, kube, s3) as (a, b):
        code_repo(a, repo, IMAGES + REGRESSION)
        head = open_pr(a, repo, number)
        review = pr_payload(a, "pull_request_review.submitted", repo, number)
        review["review"].update(state="approved", commit_id=head)
        review["review"]["user"]["login"] = MAINTAINER
        before = processed(a) + processed(b)
        await at_once(github, repo, number, deliver(a, "pull_request_review", review),
                      deliver(b, "issue_comment", comment_payload(b, repo, number, "/regression")),
                      read=rf"^/repos/{repo}/contents/\.github/flops\.yml")  # both read the config once
        await all_processed(a, b, before, 2)
        [job] = jobs_of(a, "regression", head)
        [check] = github.check_runs_for(repo, head, "flops/regression")
        assert job["metadata"]["annotations"]["flops.dev/check-run-id"] == str(check["id"])
        assert claims_left(kube) == []


async def test_a_synchronize_and_a_build_command_on_each_replica_at_once_start_each_run_once(
        tmp_path: Any, github: GitHubEmulator, kube: KubeEmulator, s3: Any) -> None:
    repo, number, other = "acme/fl-claim-tests", 32, 33
    async with two_replicas(tmp_path, github, kube, s3) as (a, b):
        code_repo(a, repo, IMAGES + TESTS)
        head = open_pr(a, repo, number)
        sync = pr_payload(a, "pull_request.synchronize", repo, number)
        before = processed(a) + processed(b)
        await at_once(github, repo, number, deliver(a, "pull_request", sync), deliver(b, "pull_request", sync))
        await all_processed(a, b, before, 2)
        [test_job] = jobs_of(a, "test", head)
        [check] = github.check_runs_for(repo, head, "flops/test: unit")
        assert test_job["metadata"]["annotations"]["flops.dev/check-run-id"] == str(check["id"])
        github.add_pull(repo, other, head, base_branch="master", head_ref="feature")
        before = processed(a) + processed(b)
        await at_once(github, repo, other, deliver(a, "issue_comment", comment_payload(a, repo, other, "/build server")),
                      deliver(b, "issue_comment", comment_payload(b, repo, other, "/build server")))
        await all_processed(a, b, before, 2)
        builds = [j for j in jobs_of(a, "build", head) if j["metadata"]["annotations"].get("flops.dev/pr") == str(other)]
        assert len(builds) == 1, [j["metadata"]["name"] for j in builds]
        assert len(github.check_runs_for(repo, head, "flops/build: server")) == 1
        assert claims_left(kube) == []


def claim_looks(kube: KubeEmulator) -> int:
    return sum(1 for method, target in kube.requests if method == "GET" and "/leases/flops-start-" in target)


async def test_a_failed_renewal_of_a_start_claim_does_not_let_the_other_replica_start_the_run_too(
        tmp_path: Any, github: GitHubEmulator, kube: KubeEmulator, s3: Any) -> None:
    """Replica a holds the claim while its start is slow (GitHub holds its check run); one renewal meets an
    API-server 500. It must go on renewing: b, given the same `/regression`, waits well past the claim's
    duration without taking it over, then finds a's run and starts nothing."""
    repo, number = "acme/fl-claim-blip", 35
    async with two_replicas(tmp_path, github, kube, s3, FLOPS_LEASE_DURATION="3s", FLOPS_LEASE_RENEW="2s",
                            FLOPS_LEASE_RETRY="1s") as (a, b):
        code_repo(a, repo, IMAGES + REGRESSION)
        head = open_pr(a, repo, number)
        before = processed(a) + processed(b)
        slow = github.hold_next("POST", rf"^/repos/{repo}/check-runs$")
        await deliver(a, "issue_comment", comment_payload(a, repo, number, "/regression"))
        await wait_for(lambda: slow.arrived == 1, timeout=30, what="a starting, inside its claim")
        [claim] = [lease for lease in kube.list("leases", NAMESPACE) if lease["metadata"]["name"].startswith("flops-start-")]
        holder = claim["spec"]["holderIdentity"]
        kube.fail_next("PUT", r"/leases/flops-start-", 500)  # a's next renewal
        await deliver(b, "issue_comment", comment_payload(b, repo, number, "/regression"))
        looked = claim_looks(kube)

        def holder_now() -> str:
            return str(((kube.get("leases", NAMESPACE, claim["metadata"]["name"]) or {}).get("spec") or {})
                       .get("holderIdentity"))

        await wait_for(lambda: claim_looks(kube) >= looked + 8 or holder_now() != holder, timeout=30,
                       what="b waiting 8 looks (> 3 s)")
        assert holder_now() == holder  # not taken over
        slow.release.set()
        await all_processed(a, b, before, 2)
        assert len(jobs_of(a, "regression", head)) == 1
        assert len(github.check_runs_for(repo, head, "flops/regression")) == 1
        assert claims_left(kube) == []
