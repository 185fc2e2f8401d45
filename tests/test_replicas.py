"""Issue 21: two `python -m bot serve` replicas against one test bed, as deploy/base runs them.

Both serve webhooks and process events; exactly one holds the Lease `flops-bot-leader` and reports Jobs.
Killed with SIGKILL, the holder's Lease expires and the other replica reports what finished meanwhile,
once. Pushes (and pull-request updates) delivered alternately to both end as one replica would leave them.
"""
from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from tests.conftest import NAMESPACE, push_payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server
from tests.serving import serving
from tests.test_as_shipped import (
    CONFIG_REPO,
    DEPLOY,
    IMAGES,
    REGISTRY,
    REGRESSION,
    Shipped,
    code_repo,
    comment_payload,
    config_repo,
    deliver,
    deployed,
    digest,
    jobs_of,
    open_pr,
    pr_payload,
)

BOT_NAMESPACE, LEASE = "flops-system", "flops-bot-leader"
DURATION, RETRY = 15, 2  # the documented defaults (FLOPS_LEASE_DURATION, FLOPS_LEASE_RETRY): nothing set


@asynccontextmanager
async def two_replicas(tmp: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server,
                       **extra: str) -> AsyncIterator[tuple[Shipped, Shipped]]:
    """Replicas flops-bot-a and flops-bot-b: one bucket, one cluster, one App, as two pods of the Deployment
    (`extra`: more environment for both)."""
    bucket = "t-" + tmp.name[-12:].lower().replace("_", "-").strip("-") + "x"
    async with AsyncExitStack() as stack:
        bots = []
        for pod in ("flops-bot-a", "flops-bot-b"):
            (tmp / pod).mkdir()
            served = await stack.enter_async_context(serving(tmp / pod, github, kube, s3, FLOPS_BUCKET=bucket,
                                                             POD_NAME=pod, POD_NAMESPACE=BOT_NAMESPACE, **extra))
            bots.append(Shipped(github, kube, s3, served.url, served.log, served.process))
        yield bots[0], bots[1]


def holder(kube: KubeEmulator) -> str:
    lease = kube.get("leases", BOT_NAMESPACE, LEASE) or {}
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


async def leader_and_follower(kube: KubeEmulator, a: Shipped, b: Shipped) -> tuple[Shipped, Shipped]:
    name = await wait_for(lambda: holder(kube), timeout=20, what="a holder of the Lease")
    assert name.startswith(("flops-bot-a-", "flops-bot-b-")), name
    return (a, b) if name.startswith("flops-bot-a-") else (b, a)


def setup_repos(bot: Shipped, repo: str, file: str) -> None:
    config_repo(bot, file, repo)
    code_repo(bot, repo, IMAGES + DEPLOY.replace("FILE", file))


def completed_runs(github: GitHubEmulator, repo: str, sha: str, name: str) -> list[dict[str, Any]]:
    return [r for r in github.check_runs_for(repo, sha, name) if r["status"] == "completed"]


def completions(github: GitHubEmulator, repo: str, run_id: int) -> int:
    """How often a check run was updated (a build's is, once: its result): a report posted twice shows here."""
    return len(github.calls_to("PATCH", rf"/repos/{repo}/check-runs/{run_id}$"))


async def test_one_replica_holds_the_lease_and_the_other_takes_over_a_kill_reporting_once(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    repo, file = "acme/fl-ha", "dev/ha.yaml"
    async with two_replicas(tmp_path, github, kube, s3) as (a, b):
        leader, follower = await leader_and_follower(kube, a, b)
        setup_repos(leader, repo, file)
        data = push_payload(github, repo, {"fl/server.py": "print('ha')\n"})
        sha = data["after"]
        await deliver(follower, "push", data)  # the follower processes events too
        found = await wait_for(lambda: (js := {j["metadata"]["annotations"]["flops.dev/image"]: j
                                               for j in jobs_of(follower, "build", sha)}) and len(js) == 2 and js,
                               timeout=30, what="both build Jobs")
        with urllib.request.urlopen(follower.url + "/readyz") as response:  # a follower is Ready: it serves
            assert response.status == 200
        leader.process.kill()  # SIGKILL: no release of the Lease, no goodbye
        killed = time.monotonic()
        for image, job in found.items():  # the builds finish while nobody reports
            kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=digest(image, sha))
        for image in found:
            await wait_for(lambda i=image: completed_runs(github, repo, sha, f"flops/build: {i}"),  # type: ignore[misc]
                           timeout=DURATION + RETRY + 20, what=f"build {image} reported by the new holder")
        took = time.monotonic() - killed
        print(f"SIGKILL of the holder to both builds reported by the other replica: {took:.1f} s")
        assert took <= DURATION + RETRY + 8, f"takeover and report took {took:.1f}s"
        assert holder(kube).startswith(follower.log.parent.name + "-")
        with urllib.request.urlopen(follower.url + "/metrics") as response:
            assert "\nflops_leader 1.0\n" in response.read().decode()
        deploy = await wait_for(lambda: completed_runs(github, repo, sha, "flops/deploy: dev"), timeout=30,
                                what="the deploy")
        assert deploy[0]["conclusion"] == "success"
        tag = found["server"]["metadata"]["annotations"]["flops.dev/tag"]
        assert f"image: {REGISTRY}/server:{tag}@{digest('server', sha)}" in deployed(follower, file)
        for image in found:
            [run] = github.check_runs_for(repo, sha, f"flops/build: {image}")
            assert completions(github, repo, run["id"]) == 1
        await wait_for(lambda: all(j["metadata"]["annotations"].get("flops.dev/reported") == "success"
                                   for j in kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})),
                       timeout=10, what="both Jobs marked reported")
        leader.process.wait(timeout=10)


async def test_twenty_pushes_alternating_between_replicas_end_at_the_newest_build_reported_once(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    repo, file = "acme/fl-race", "dev/race.yaml"
    async with two_replicas(tmp_path, github, kube, s3) as (a, b):
        setup_repos(a, repo, file)
        pushes = [push_payload(github, repo, {"fl/server.py": f"print({i})\n"}, when=f"2026-11-22T09:{i:02d}:00Z")
                  for i in range(20)]
        shas = [data["after"] for data in pushes]
        # All at once, alternately: each replica takes its pushes in order, but the two race each other.
        await asyncio.gather(*(deliver((a, b)[i % 2], "push", data) for i, data in enumerate(pushes)))
        newest, older = shas[-1], shas[:-1]
        images = ("server", "client")

        def settled() -> bool:
            """Every push has its two build checks; every older push's are closed (superseded)."""
            for sha in shas:
                runs = {r["name"]: r for r in github.check_runs_for(repo, sha)}
                if not all(f"flops/build: {i}" in runs for i in images):
                    return False
                if sha in older and any(runs[f"flops/build: {i}"]["status"] != "completed" for i in images):
                    return False
            return len(jobs_of(a, "build", newest)) == 2

        try:
            await wait_for(settled, timeout=45, what="20 pushes processed, the older builds superseded")
        except AssertionError as exc:
            seen = {sha[:7]: sorted((r["name"][13:], r["status"], r.get("conclusion")) for r in
                                    github.check_runs_for(repo, sha)) for sha in shas}
            raise AssertionError(f"{exc}: {seen}") from None
        running = [j["metadata"]["name"] for sha in older for j in jobs_of(a, "build", sha)
                   if not (j.get("status") or {}).get("conditions") and not j["metadata"].get("deletionTimestamp")
                   and "flops.dev/reported" not in j["metadata"]["annotations"]]
        assert not running, f"superseded builds left running: {running}"
        for job in jobs_of(a, "build", newest):
            image = job["metadata"]["annotations"]["flops.dev/image"]
            kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=digest(image, newest))
        deploy = await wait_for(lambda: completed_runs(github, repo, newest, "flops/deploy: dev"), timeout=30,
                                what="the newest build deployed")
        assert deploy[0]["conclusion"] == "success"
        tag = jobs_of(a, "build", newest)[0]["metadata"]["annotations"]["flops.dev/tag"]
        assert f"{REGISTRY}/server:{tag}@{digest('server', newest)}" in deployed(a, file)
        for sha in shas:
            for image in images:
                runs = github.check_runs_for(repo, sha, f"flops/build: {image}")
                assert len(runs) == 1, (sha, image, len(runs))
                assert completions(github, repo, runs[0]["id"]) == 1, (sha, image)
                wanted = "success" if sha == newest else "cancelled"
                assert runs[0]["conclusion"] == wanted, (sha[:7], image, runs[0]["conclusion"])
        assert len(github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/")) == 1  # only the newest deployed


def processed(bot: Shipped) -> int:
    """Deliveries the process has finished handling (flops_event_processing_seconds' count)."""
    with urllib.request.urlopen(bot.url + "/metrics") as response:
        text = response.read().decode()
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines()
               if line.startswith("flops_event_processing_seconds_count"))


async def test_synchronize_events_alternating_between_replicas_leave_only_the_newest_heads_regression(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    """Each new head: its `synchronize` to one replica, a `/regression` for it to the other, the next head
    pushed while they are processed. Only the newest head's regression may remain."""
    repo, number = "acme/fl-pr-race", 12
    async with two_replicas(tmp_path, github, kube, s3) as (a, b):
        code_repo(a, repo, IMAGES + REGRESSION)
        heads = [open_pr(a, repo, number)]
        before = processed(a) + processed(b)
        for i in range(10):
            heads.append(github.commit(repo, "feature", {"fl/server.py": f"print('head {i}')\n"}))  # the PR moves
            sync = pr_payload(a, "pull_request.synchronize", repo, number)
            sync.update(before=heads[-2], after=heads[-1])
            ask = comment_payload(a, repo, number, "/regression")
            await asyncio.gather(deliver((a, b)[i % 2], "pull_request", sync),
                                 deliver((b, a)[i % 2], "issue_comment", ask))
        await wait_for(lambda: processed(a) + processed(b) - before >= 20, timeout=45, what="the 20 deliveries processed")
        newest = heads[-1]

        def runs() -> dict[str, list[dict[str, Any]]]:
            found: dict[str, list[dict[str, Any]]] = {}
            for job in kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "regression"}):
                found.setdefault(job["metadata"]["annotations"]["flops.dev/sha"], []).append(job)
            return found

        def alive(job: dict[str, Any]) -> bool:
            return "flops.dev/reported" not in job["metadata"]["annotations"] \
                and not (job.get("status") or {}).get("conditions")

        await wait_for(lambda: not [j for sha, js in runs().items() if sha != newest for j in js if alive(j)],
                       timeout=20, what="every older head's regression stopped")
        # The newest head runs, once: two `/regression` comments read as that head by the two replicas at the
        # same moment start it once (the start claim, README "High availability"); never an older head's run.
        [job] = runs()[newest]
        assert alive(job), "the newest head's regression runs"
        for sha in heads[:-1]:  # a run started is cancelled; a head that never ran keeps its `queued` (one replica too)
            for run in github.check_runs_for(repo, sha, "flops/regression"):
                assert run["status"] == "queued" or run["conclusion"] == "cancelled", (sha[:7], run["status"])
        started = [(r["status"], r.get("conclusion")) for r in github.check_runs_for(repo, newest, "flops/regression")
                   if r["status"] != "queued"]
        assert started == [("in_progress", None)], f"the newest head's regression checks: {started}"
