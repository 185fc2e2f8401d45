"""Issue 21: a follower's crash loses nothing. Two `python -m bot serve` replicas; the follower answers 202
to pushes and, before it has processed them (the emulated GitHub holds a request of it), is killed with
SIGKILL. Its record in the state bucket goes dead, and the leader's redelivery pass asks GitHub for them
again: each is built once, nothing is doubled, wherever the redelivery lands (the leader, or the killed
follower's restarted container)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import SECRET, push_payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server
from tests.serving import serving
from tests.test_as_shipped import IMAGES, code_repo, jobs_of
from tests.test_replicas import BOT_NAMESPACE, leader_and_follower, two_replicas

FAST = {"FLOPS_REDELIVER_INTERVAL": "2s", "FLOPS_LEASE_DURATION": "6s", "FLOPS_LEASE_RENEW": "4s",
        "FLOPS_LEASE_RETRY": "2s"}


def records(s3: S3Server, bucket: str) -> list[str]:
    return [o.object_name for o in s3.client().list_objects(bucket, prefix="redeliver/replicas/", recursive=True)]


async def test_deliveries_a_killed_follower_had_accepted_are_redelivered_by_the_leader_and_processed_once(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    repo = "acme/fl-lost"
    async with two_replicas(tmp_path, github, kube, s3, **FAST) as (a, b):
        leader, follower = await leader_and_follower(kube, a, b)
        code_repo(leader, repo, IMAGES)
        bucket = "t-" + tmp_path.name[-12:].lower().replace("_", "-").strip("-") + "x"  # two_replicas' bucket
        await wait_for(lambda: len(records(s3, bucket)) == 2, timeout=10, what="both replicas' records")
        held = github.hold_next("GET", rf"^/repos/{repo}/")  # the follower's first read: it never gets an answer
        github.hooks.url, github.hooks.secret = follower.url + "/webhook", SECRET
        pushes = [push_payload(github, repo, {"fl/server.py": f"print({i})\n"}, when=f"2026-11-23T10:0{i}:00Z")
                  for i in range(2)]
        accepted = [await github.deliver("push", data) for data in pushes]
        assert [d.status_code for d in accepted] == [202, 202]
        await wait_for(lambda: held.arrived == 1, timeout=20, what="the follower processing the first push")
        follower.process.kill()  # SIGKILL with both pushes accepted, neither processed
        killed = time.monotonic()
        follower.process.wait(timeout=10)
        github.hooks.url = leader.url + "/webhook"
        held.release.set()
        for data in pushes:
            await wait_for(lambda d=data: github.check_runs_for(repo, d["after"], "flops/build: server"),  # type: ignore[misc]
                           timeout=45, what="the push built after the leader asked for it again")
        took = time.monotonic() - killed
        print(f"SIGKILL of the follower to both accepted pushes built by the leader: {took:.1f} s")
        assert took <= 6 + 6 + 2 + 2 + 15, f"recovery took {took:.1f}s"  # silent 6 s, watched 6 s more, a pass
        # every 2 s, then the build
        for delivery, data in zip(accepted, pushes):
            again = [d for d in github.hooks.of(delivery.guid) if d.redelivery]
            assert [d.status_code for d in again] == [202], delivery.guid
            names = [r["name"] for r in github.check_runs_for(repo, data["after"])]
            assert "flops/build: server" in names and len(names) == len(set(names)), names  # each check once
        newest = [j["metadata"]["annotations"]["flops.dev/image"] for j in jobs_of(leader, "build", pushes[-1]["after"])]
        assert len(newest) == len(set(newest)), newest  # each image's Job once
        logged = [json.loads(line) for line in leader.log.read_text().splitlines()]
        assert [e for e in logged if e["message"] == "dead replica's deliveries asked for again"]
        assert len([e for e in logged if e["message"] == "redelivery requested"]) == 2
        left = await wait_for(lambda: (found := records(s3, bucket)) and len(found) == 1 and found, timeout=10,
                              what="the dead replica's record gone")
        assert left[0].startswith(f"redeliver/replicas/{leader.log.parent.name}-")


async def test_a_delivery_retaken_from_a_killed_follower_that_lands_on_its_restarted_container_looks_first(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    """The killed follower had created the push's build check run (its answer held), not the Job. Its pod's
    next container comes up and the leader's redelivery lands there: announced as retaken, the push looks
    before it creates, and the commit keeps one `flops/build: server`, the Job's."""
    repo = "acme/fl-lost-half"
    async with two_replicas(tmp_path, github, kube, s3, **FAST) as (a, b):
        leader, follower = await leader_and_follower(kube, a, b)
        code_repo(leader, repo, IMAGES)
        held = github.hold_next("POST", rf"^/repos/{repo}/check-runs$", applied=True)  # created, never answered
        github.hooks.url, github.hooks.secret = follower.url + "/webhook", SECRET
        data = push_payload(github, repo, {"fl/server.py": "print('half')\n"})
        accepted = await github.deliver("push", data)
        await wait_for(lambda: held.arrived == 1, timeout=20, what="the follower creating the build check run")
        follower.process.kill()
        follower.process.wait(timeout=10)
        pod = follower.log.parent.name
        (tmp_path / "restarted").mkdir()
        bucket = "t-" + tmp_path.name[-12:].lower().replace("_", "-").strip("-") + "x"
        async with serving(tmp_path / "restarted", github, kube, s3, FLOPS_BUCKET=bucket, POD_NAME=pod,
                           POD_NAMESPACE=BOT_NAMESPACE, **FAST) as restarted:
            github.hooks.url = restarted.url + "/webhook"
            held.release.set()
            [job] = await wait_for(lambda: jobs_of(leader, "build", data["after"]), timeout=45,
                                   what="the build Job, created by the restarted container")
            [check] = github.check_runs_for(repo, data["after"], "flops/build: server")
            assert job["metadata"]["annotations"]["flops.dev/check-run-id"] == str(check["id"])
            [again] = [d for d in github.hooks.of(accepted.guid) if d.redelivery]
            assert again.status_code == 202
            logged = [json.loads(line) for line in restarted.log.read_text().splitlines()]
            assert [e for e in logged if e["message"] == "github create done before a restart; using the object found"]
