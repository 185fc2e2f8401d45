"""Issue 21: the start claim (bot/flows/claims.py) against the Kubernetes emulator: one holder at a time,
a waiter goes on once it is released, a dead holder's claim is taken over (its pod's next container at
once, anyone after the claim went unrenewed for its duration)."""
from __future__ import annotations

import asyncio
import dataclasses

from bot.flows import claims
from bot.flows.deps import Deps
from bot.platform.leader import micro_time
from tests.conftest import NAMESPACE, Bed, wait_for
from tests.emulators.kube import KubeEmulator

START = claims.Start("acme/fl", "pr-7", "regression", "a" * 40)


def other_replica(deps: Deps, **lease: int | bool) -> Deps:
    """The same clients as another process: its own identity (and pod), the lease timings given."""
    settings = dataclasses.replace(deps.settings, lease=dataclasses.replace(deps.settings.lease, pod_name="other-pod",
                                                                            **lease))
    return dataclasses.replace(deps, identity="other-pod-abc123", settings=settings)


def lease_looks(kube: KubeEmulator) -> int:
    return sum(1 for method, target in kube.requests
               if method == "GET" and target.endswith(f"/leases/{START.name}"))


async def test_a_second_claimant_waits_until_the_first_released_the_claim(bed: Bed, kube: KubeEmulator) -> None:
    entered: list[str] = []

    async def second() -> None:
        async with claims.claimed(other_replica(bed.deps, retry=1), START):
            entered.append("second")

    async with claims.claimed(bed.deps, START):
        assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == bed.deps.identity
        waiting = asyncio.create_task(second())
        await wait_for(lambda: lease_looks(kube) >= 2, timeout=10, what="the second claimant looking twice")
        assert entered == []
    await wait_for(lambda: entered == ["second"], timeout=10, what="the second claimant in")
    await waiting
    assert kube.get("leases", NAMESPACE, START.name) is None  # released by both


def held_by(kube: KubeEmulator, holder: str, pod: str, renewed: str = "") -> None:
    kube.put_object({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": START.name, "namespace": NAMESPACE, "annotations": {claims.POD: pod}},
                     "spec": {"holderIdentity": holder, "leaseDurationSeconds": 600,
                              "renewTime": renewed or micro_time()}})


async def test_a_claim_unrenewed_for_an_hour_is_a_leftover_taken_over_at_once(bed: Bed, kube: KubeEmulator) -> None:
    held_by(kube, "gone-pod-dead00", "gone-pod", renewed="2026-01-01T00:00:00.000000Z")
    async with asyncio.timeout(5):  # a 600 s lease, another pod: only its age lets it in
        async with claims.claimed(bed.deps, START):
            assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == bed.deps.identity


async def test_a_claim_of_this_pods_previous_container_is_taken_over_at_once(bed: Bed, kube: KubeEmulator) -> None:
    deps = other_replica(bed.deps, pod_unique=True)  # POD_NAME set, as the downward API sets it
    held_by(kube, "other-pod-dead00", "other-pod")
    async with asyncio.timeout(5):  # a 600 s lease: only the pod rule lets it in
        async with claims.claimed(deps, START):
            assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == deps.identity
    assert lease_looks(kube) == 1


async def test_with_a_host_name_for_pod_name_a_claim_of_the_same_name_is_not_taken_over(
        bed: Bed, kube: KubeEmulator) -> None:
    """Two live processes may share a host name (host networking): only POD_NAME identifies a pod."""
    assert not bed.deps.settings.lease.pod_unique  # POD_NAME unset in the test bed: the host name
    held_by(kube, "someone-else-live00", "other-pod")  # the same name as the claimant's, another identity
    entered = asyncio.create_task(claims.claimed(other_replica(bed.deps, retry=1), START).__aenter__())
    await wait_for(lambda: lease_looks(kube) >= 2, timeout=10, what="two looks at the claim")
    assert not entered.done()
    entered.cancel()


async def test_a_claim_left_unrenewed_for_its_duration_is_taken_over(bed: Bed, kube: KubeEmulator) -> None:
    held_by(kube, "another-pod-dead00", "another-pod")
    lease = kube.get("leases", NAMESPACE, START.name)
    lease["spec"]["leaseDurationSeconds"] = 1
    kube.put_object(lease)
    async with asyncio.timeout(10):
        async with claims.claimed(other_replica(bed.deps, retry=1), START):
            assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == "other-pod-abc123"
    assert lease_looks(kube) >= 2  # it watched the record stay unchanged for the duration first


def lease_writes(kube: KubeEmulator, method: str) -> int:
    return sum(1 for m, target in kube.requests if m == method and START.name in target)


async def test_a_claim_create_answered_500_is_tried_again_and_the_start_goes_on(bed: Bed, kube: KubeEmulator) -> None:
    """An API-server blip at the create must not lose the start (processing failed: nothing redelivers it)."""
    kube.fail_next("POST", r"/leases$", 500)
    async with asyncio.timeout(10):
        async with claims.claimed(other_replica(bed.deps, retry=1), START):
            assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == "other-pod-abc123"
    assert kube.get("leases", NAMESPACE, START.name) is None


async def test_a_create_that_landed_but_whose_answer_was_lost_is_recognised_as_its_own(
        bed: Bed, kube: KubeEmulator) -> None:
    """A 504 after the Lease was written: the next try finds it held by this start (its acquireTime), and goes
    on at once instead of waiting FLOPS_LEASE_DURATION for its own claim to look dead."""
    kube.fail_next("POST", r"/leases$", 504, applied=True)
    deps = other_replica(bed.deps, retry=1, duration=600, renew=300)
    async with asyncio.timeout(10):  # a 600 s lease: only recognising it lets the start in
        async with claims.claimed(deps, START):
            assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == deps.identity
    assert kube.get("leases", NAMESPACE, START.name) is None  # and it is released


async def test_a_renewal_answered_500_is_tried_again_so_the_claim_stays_alive(bed: Bed, kube: KubeEmulator) -> None:
    """A failed renewal must not end the renewing: the claim would go unrenewed while its start runs, and another
    replica take it over and start the same run."""
    kube.fail_next("PUT", START.name, 500)
    async with claims.claimed(other_replica(bed.deps, retry=1, renew=1), START):
        await wait_for(lambda: lease_writes(kube, "PUT") >= 2, timeout=10, what="a renewal after the failed one")
        assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == "other-pod-abc123"
    assert kube.get("leases", NAMESPACE, START.name) is None


async def test_a_takeover_that_landed_but_whose_answer_was_lost_is_recognised_as_its_own(
        bed: Bed, kube: KubeEmulator) -> None:
    held_by(kube, "gone-pod-dead00", "gone-pod", renewed="2026-01-01T00:00:00.000000Z")  # a leftover: taken at once
    kube.fail_next("PUT", START.name, 504, applied=True)
    deps = other_replica(bed.deps, retry=1, duration=600, renew=300)
    async with asyncio.timeout(10):  # its own 600 s lease: only recognising it lets the start in
        async with claims.claimed(deps, START):
            assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == deps.identity
    assert kube.get("leases", NAMESPACE, START.name) is None


async def test_a_renewal_that_landed_but_whose_answer_was_lost_keeps_the_claim(bed: Bed, kube: KubeEmulator) -> None:
    """The next renewal, at the version read before, gets a 409: the claim is still this start's (its holder
    and acquireTime), so it goes on renewing, and is deleted at the end instead of left behind."""
    kube.fail_next("PUT", START.name, 504, applied=True)
    async with claims.claimed(other_replica(bed.deps, retry=1, renew=1), START):
        await wait_for(lambda: lease_writes(kube, "PUT") >= 3, timeout=15, what="renewals after the lost answer")
        assert kube.get("leases", NAMESPACE, START.name)["spec"]["holderIdentity"] == "other-pod-abc123"
    assert kube.get("leases", NAMESPACE, START.name) is None
