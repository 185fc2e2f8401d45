"""Issue 21: the Lease `flops-bot-leader` elects the one replica that reports Jobs.

Against the Kubernetes emulator over HTTP: the emulator serves coordination.k8s.io/v1 Leases as the
API server does (409 on a stale resourceVersion); two `Leadership`s over it never hold at once, gated work
runs only in the holder, a clean stop hands over at once, and a Job report is claimed only once.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from bot.platform import settings
from bot.platform.kube import Kube
from bot.platform.leader import LEASE_NAME, Leadership
from bot.platform.settings import LeaseSettings
from tests.conftest import INSTALLATION, NAMESPACE, BedFactory, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.test_builds import DIGEST, REPO, _completed, by_image, push

BOT_NAMESPACE = "flops-system"
FAST = LeaseSettings(namespace=BOT_NAMESPACE, pod_name="flops-bot-0", duration=3, renew=1, retry=1)


def request(kube: KubeEmulator, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(kube.url + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {kube.token}"})
    try:
        with urllib.request.urlopen(req) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_emulator_serves_leases_with_conflicts_like_the_api_server(kube: KubeEmulator) -> None:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{BOT_NAMESPACE}/leases"
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE_NAME},
             "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2026-12-04T18:00:00.000000Z",
                      "acquireTime": "2026-12-04T18:00:00.000000Z", "leaseTransitions": 0}}
    status, created = request(kube, "POST", base, lease)
    assert status == 201 and created["metadata"]["resourceVersion"]
    assert request(kube, "POST", base, lease)[0] == 409
    status, read = request(kube, "GET", f"{base}/{LEASE_NAME}")
    assert status == 200 and read["spec"]["holderIdentity"] == "a"
    read["spec"]["holderIdentity"] = "b"
    status, replaced = request(kube, "PUT", f"{base}/{LEASE_NAME}", read)
    assert status == 200 and replaced["spec"]["holderIdentity"] == "b"
    stale = dict(read, spec={**read["spec"], "holderIdentity": "c"})  # still carries the old resourceVersion
    status, conflict = request(kube, "PUT", f"{base}/{LEASE_NAME}", stale)
    assert status == 409 and conflict["reason"] == "Conflict"
    assert request(kube, "GET", f"{base}/{LEASE_NAME}")[1]["spec"]["holderIdentity"] == "b"
    bad = dict(lease, spec={"leaseDurationSeconds": "long"})
    assert request(kube, "POST", base, dict(bad, metadata={"name": "other"}))[0] == 422
    offset = dict(lease, metadata={"name": "offset"}, spec={**lease["spec"], "renewTime": "2026-12-04T19:00:00+01:00"})
    assert request(kube, "POST", base, offset)[1]["spec"]["renewTime"] == "2026-12-04T18:00:00.000000Z"


class Replica:
    """One Leadership and the gated work it runs (counts starts and stops)."""

    def __init__(self, kube: KubeEmulator, pod: str) -> None:
        self.client = Kube(kube.client_configuration(), "flops")
        self.leadership = Leadership(self.client, LeaseSettings(**{**FAST.__dict__, "pod_name": pod}))
        self.started = self.stopped = 0
        self.leadership.while_leader("work", self.work)
        self.task = asyncio.create_task(self.leadership.run())

    async def work(self) -> None:
        self.started += 1
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped += 1

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        self.client.close()


def holder(kube: KubeEmulator) -> str | None:
    lease = kube.get("leases", BOT_NAMESPACE, LEASE_NAME)
    return (lease or {}).get("spec", {}).get("holderIdentity")


async def test_one_of_two_replicas_holds_the_lease_and_a_clean_stop_hands_it_over(kube: KubeEmulator) -> None:
    a, b = Replica(kube, "flops-bot-a"), Replica(kube, "flops-bot-b")
    try:
        first = await wait_for(lambda: next((r for r in (a, b) if r.leadership.is_leader), None), what="a leader")
        other = b if first is a else a
        await wait_for(lambda: first.started == 1, what="the gated work started in the holder")
        assert holder(kube) == first.leadership.identity and first.leadership.identity.startswith("flops-bot-")
        lease = kube.get("leases", BOT_NAMESPACE, LEASE_NAME)
        assert lease["spec"]["leaseDurationSeconds"] == 3
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", lease["spec"]["renewTime"])  # MicroTime
        renewed = lease["spec"]["renewTime"]
        await wait_for(lambda: kube.get("leases", BOT_NAMESPACE, LEASE_NAME)["spec"]["renewTime"] != renewed,
                       timeout=5, what="a renewal")
        assert not other.leadership.is_leader and other.started == 0
        await first.stop()  # released: the other takes over at its next look, not after the expiry
        assert first.stopped == 1
        await wait_for(lambda: other.started == 1, timeout=FAST.retry + 2, what="the other replica took over")
        assert other.leadership.is_leader and holder(kube) == other.leadership.identity
        assert kube.get("leases", BOT_NAMESPACE, LEASE_NAME)["spec"]["leaseTransitions"] == 1
    finally:
        await a.stop()
        await b.stop()


async def test_a_holder_that_stops_renewing_loses_the_lease_after_its_duration(kube: KubeEmulator) -> None:
    a = Replica(kube, "flops-bot-a")
    await wait_for(lambda: a.leadership.is_leader, what="a leads")
    a.task.cancel()  # crashed without releasing: the record stays as it was
    a.leadership._release = _nothing  # type: ignore[method-assign]
    await asyncio.gather(a.task, return_exceptions=True)
    assert holder(kube) == a.leadership.identity
    b = Replica(kube, "flops-bot-b")
    try:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await wait_for(lambda: b.leadership.is_leader, timeout=FAST.duration + 3, what="takeover after expiry")
        waited = loop.time() - began
        assert FAST.duration <= waited <= FAST.duration + FAST.retry + 1, waited
    finally:
        await b.stop()
        a.client.close()


async def _nothing() -> None:
    return None


@pytest.mark.parametrize("replicas", [2])
async def test_of_two_claims_of_one_job_report_only_one_succeeds(kube: KubeEmulator, replicas: int) -> None:
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "claimed"},
           "spec": {"template": {"spec": {"restartPolicy": "Never",
                                          "containers": [{"name": "c", "image": "busybox"}]}}}}
    clients = [Kube(kube.client_configuration(), "flops") for _ in range(replicas)]
    try:
        await clients[0].create_job(job)
        read = await clients[0].get_job("claimed")
        assert read is not None
        version = read["metadata"]["resourceVersion"]
        results = await asyncio.gather(*(c.claim_job("claimed", version, {"flops.dev/reporting": f"r{i} 1"})
                                         for i, c in enumerate(clients)))
        assert sorted(r is not None for r in results) == [False, True]
        winner = next(i for i, r in enumerate(results) if r is not None)
        assert results[winner]["metadata"]["annotations"]["flops.dev/reporting"] == f"r{winner} 1"
        assert kube.get("jobs", "flops", "claimed")["metadata"]["annotations"]["flops.dev/reporting"] == f"r{winner} 1"
    finally:
        for c in clients:
            c.close()


def test_lease_settings_default_to_the_documented_values_and_name_bad_ones() -> None:
    base = {"GITHUB_APP_ID": "1", "GITHUB_PRIVATE_KEY": "k", "GITHUB_WEBHOOK_SECRET": "s", "MINIO_ENDPOINT": "m:1",
            "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b", "KUBERNETES_SERVICE_HOST": "x"}
    lease = settings.from_env(base).lease
    assert (lease.namespace, lease.duration, lease.renew, lease.retry) == ("flops-system", 15, 10, 2)
    assert lease.pod_name  # the host name when POD_NAME is unset
    lease = settings.from_env({**base, "POD_NAME": "flops-bot-7d9-x2", "POD_NAMESPACE": "ops"}).lease
    assert (lease.pod_name, lease.namespace) == ("flops-bot-7d9-x2", "ops")
    with pytest.raises(settings.SettingsError) as raised:
        settings.from_env({**base, "FLOPS_LEASE_DURATION": "10", "FLOPS_LEASE_RENEW": "10"})
    assert "FLOPS_LEASE_RENEW < FLOPS_LEASE_DURATION" in str(raised.value)
    with pytest.raises(settings.SettingsError, match="FLOPS_LEASE_RETRY must be a duration like 30s, 5m or 1h"):
        settings.from_env({**base, "FLOPS_LEASE_RETRY": "0.5"})
    lease = settings.from_env({**base, "FLOPS_LEASE_DURATION": "1m", "FLOPS_LEASE_RENEW": "20s"}).lease
    assert (lease.duration, lease.renew) == (60, 20)  # durations take s, m, h like every other


async def test_a_report_claimed_by_a_dead_replica_is_taken_over_once_its_claim_is_stale(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """A replica claimed a finished Job's report and died before reporting: the holder leaves the claim alone
    while it is younger than the lease duration, then reports the Job itself, once."""
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed(FLOPS_LEASE_DURATION="3", FLOPS_LEASE_RENEW="2", FLOPS_LEASE_RETRY="1")
    data = push(bed, {"server/app.py": "print('claimed')\n"})
    await bed.deliver("push", data)
    await bed.settle()
    name = by_image(bed)["server"]["metadata"]["name"]
    job = bed.kube.get("jobs", NAMESPACE, name)
    job["metadata"]["annotations"]["flops.dev/reporting"] = f"flops-bot-dead-abc123 {int(time.time())}"
    bed.kube.put_object(job)
    claimed = time.monotonic()
    bed.kube.succeed_job(NAMESPACE, name, message=DIGEST)
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), timeout=15,
                         what="the stale claim taken over")
    assert time.monotonic() - claimed >= 2, "reported while another replica's claim was fresh"
    assert run["conclusion"] == "success"
    await wait_for(lambda: "flops.dev/reported" in bed.kube.get("jobs", NAMESPACE, name)["metadata"]["annotations"],
                   what="marked reported")
    annotations = bed.kube.get("jobs", NAMESPACE, name)["metadata"]["annotations"]
    assert "flops.dev/reporting" not in annotations  # the claim is gone with the report
    assert len(github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{run['id']}$")) == 1
