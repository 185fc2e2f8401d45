"""Issue 21: every replica's record of the deliveries it took (bot/service/replicas.py), and the leader's
pass retaking what a dead replica took with it: the rules as data, then one pass against the emulated
GitHub with a dead replica's record in the state bucket."""
from __future__ import annotations

import asyncio
import time

from bot.service import replicas
from bot.service.app import DISPATCHER
from bot.service.redeliver import Redeliverer
from tests.conftest import SECRET, BedFactory, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.s3 import free_port
from tests.test_redeliver import a_push, answering, built, code_repo, crashed_with, redelivered

NOW = 1_800_000_000.0
QUICK = {"FLOPS_LEASE_DURATION": "3s", "FLOPS_LEASE_RENEW": "2s", "FLOPS_LEASE_RETRY": "1s"}  # a dead record: 3 s


def record(identity: str, *, written: float, settled: float, unfinished: tuple[str, ...] = (),
           finished: tuple[str, ...] = (), clean: bool = False) -> replicas.Record:
    return replicas.Record(identity, "pod-" + identity, written, settled, frozenset(unfinished), finished, clean)


def test_a_dead_replicas_unrecorded_deliveries_between_its_settled_point_and_last_record_are_retaken() -> None:
    dead = record("b", written=NOW - 20, settled=NOW - 25, unfinished=("u",), finished=("done-b",))
    census = replicas.Census([dead], [record("c", written=NOW - 1, settled=NOW - 1, finished=("done-c",),
                                             unfinished=("busy-c",))])
    assert census.retake("u", NOW - 3600, NOW - 3600) is True  # it said it held it, however old
    assert census.retake("x", NOW - 24, NOW - 24) is True  # answered 2xx after its settled point, recorded nowhere
    assert census.retake("old", NOW - 56, NOW - 56) is False  # settled before: processed
    assert census.retake("later", NOW + 11, NOW + 11) is False  # after it stopped writing: not its
    for known in ("done-b", "done-c", "busy-c"):
        assert census.retake(known, NOW - 24, NOW - 24) is False
    assert census.back_to == NOW - 25 - replicas.LOOKBACK
    stuck = replicas.Census([record("b", written=NOW, settled=NOW - 86_400)], [])  # a delivery stuck for a day
    assert stuck.back_to == NOW - replicas.SETTLED_LIMIT - replicas.LOOKBACK  # an hour back at most
    assert stuck.retake("y", NOW - 7200, NOW - 7200) is False


def test_a_delivery_newer_than_a_live_replicas_last_record_waits_for_the_next_pass() -> None:
    census = replicas.Census([record("b", written=NOW - 20, settled=NOW - 25)],
                             [record("c", written=NOW - 30, settled=NOW - 30)])
    assert census.retake("x", NOW - 24, NOW - 24) is None  # c may have taken it since it last wrote
    fresh = replicas.Census([record("b", written=NOW - 20, settled=NOW - 25)], [record("c", written=NOW, settled=NOW)])
    assert fresh.retake("x", NOW - 24, NOW - 24) is True
    assert fresh.retake("x", NOW - 24, NOW - 1) is None  # attempted again a moment ago: c may be taking it now
    assert replicas.Census([], [record("c", written=NOW, settled=NOW)]).retake("x", NOW - 24, NOW - 24) is False


def test_what_dead_and_cleanly_stopped_replicas_processed_stays_known() -> None:
    census = replicas.Census([record("b", written=NOW, settled=NOW, finished=("1", "2"))], [],
                             [record("c", written=NOW, settled=NOW, finished=("3",), clean=True)])
    assert census.processed() == ["1", "2", "3"]
    assert census.retake("3", NOW, NOW) is False


async def test_a_pass_retakes_what_a_dead_replica_accepted_and_deletes_its_record(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    dying = await answering(202, port)  # another replica took it, then died
    taken = await github.deliver("push", a_push(github, 70))
    await dying.cleanup()
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0", **QUICK)
    key = replicas.PREFIX + "flops-bot-b-0a0b0c.json"
    await bed.deps.artifacts.put_json(key, {"identity": "flops-bot-b-0a0b0c", "pod": "flops-bot-b",
                                            "written_at": time.time() - 20, "settled_at": time.time() - 25,
                                            "unfinished": [], "finished": []})
    github.hooks.url = bed.url("/webhook")
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    assert (await loop.one_pass()).outcomes == {"requested": 1}
    await wait_for(lambda: built(github, taken.payload["after"]), timeout=30, what="the push built")
    assert len(redelivered(github, taken.guid)) == 1
    assert await bed.deps.artifacts.get_json(key) is None
    assert (await loop.one_pass()).outcomes == {}  # asked for once


async def test_a_dead_replicas_delivery_whose_redelivery_request_failed_is_asked_for_at_the_next_pass(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """GitHub refused the request (422): nothing is on its way, so the next pass asks again; it must not count
    as retaken (which skipped it for good, and the dead replica's record went with nothing asked)."""
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    dying = await answering(202, port)
    taken = await github.deliver("push", a_push(github, 71))
    await dying.cleanup()
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0", **QUICK)
    key = replicas.PREFIX + "flops-bot-b-0d0e0f.json"
    await bed.deps.artifacts.put_json(key, {"identity": "flops-bot-b-0d0e0f", "pod": "flops-bot-b",
                                            "written_at": time.time() - 20, "settled_at": time.time() - 25,
                                            "unfinished": [], "finished": []})
    github.hooks.url = bed.url("/webhook")
    github.fail_next("POST", r"/attempts$", 422, body={"message": "Validation Failed"})
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    assert (await loop.one_pass()).outcomes == {"failed": 1}
    assert await bed.deps.artifacts.get_json(key) is not None  # kept: its delivery is not asked for yet
    assert (await loop.one_pass()).outcomes == {"requested": 1}
    await wait_for(lambda: built(github, taken.payload["after"]), timeout=30, what="the push built")
    assert len(redelivered(github, taken.guid)) == 1
    assert await bed.deps.artifacts.get_json(key) is None


async def test_a_live_replica_whose_clock_is_behind_is_not_judged_dead(make_bed: BedFactory,
                                                                      github: GitHubEmulator) -> None:
    """Its record says it was written a minute ago (its clock is a minute behind), but it keeps changing: the
    leader must not ask GitHub again for the delivery it is processing, nor delete its record."""
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    busy = await answering(202, port)  # the skewed replica took it and is processing it
    taken = await github.deliver("push", a_push(github, 72))
    await busy.cleanup()
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0", **QUICK)
    key = replicas.PREFIX + "flops-bot-c-0a0b0c.json"
    writes: list[float] = []

    async def skewed_replica() -> None:
        while True:
            now = time.time() - 60
            await bed.deps.artifacts.put_json(key, {"identity": "flops-bot-c-0a0b0c", "pod": "flops-bot-c",
                                                    "written_at": now, "settled_at": now - 5,
                                                    "unfinished": [taken.guid], "finished": []})
            writes.append(now)
            await asyncio.sleep(0.5)

    writing = asyncio.create_task(skewed_replica())
    try:
        await wait_for(lambda: writes, timeout=10, what="the skewed replica's first record")
        loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
        assert (await loop.one_pass()).outcomes == {}
        assert redelivered(github, taken.guid) == []
        assert await bed.deps.artifacts.get_json(key) is not None
    finally:
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)


async def test_after_a_crash_a_delivery_a_live_replica_just_took_is_not_asked_for_again(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """The leader's first pass after its predecessor died retakes what nobody recorded; a delivery answered 202 a
    moment before a live replica's last record may be that replica's (it records within FLOPS_LEASE_RETRY):
    asked for again, it would run twice at once. Had the dead process taken it, its own record covers it."""
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    busy = await answering(202, port)  # the live replica c, which has not written its record since
    taken = await github.deliver("push", a_push(github, 73))
    await busy.cleanup()
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0", **QUICK)
    await crashed_with(bed.deps, taken)
    now = time.time()
    await bed.deps.artifacts.put_json(replicas.PREFIX + "flops-bot-c-0a0b0c.json", {
        "identity": "flops-bot-c-0a0b0c", "pod": "flops-bot-c", "written_at": now, "settled_at": now,
        "unfinished": [], "finished": []})
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    assert (await loop.one_pass()).outcomes == {}
    assert redelivered(github, taken.guid) == []
