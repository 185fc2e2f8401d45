"""#21 Recovery of missed deliveries: what GitHub could not deliver (the bot down, not ready, its
queue full) is asked for again (`POST /app/hook/deliveries/{id}/attempts`) and processed.

The GitHub emulator sends the webhooks itself and lists every attempt as GitHub does; the bot runs
as shipped (`python -m bot serve`, stopped and restarted) and in process (one pass at a time)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.platform.settings import SettingsError, from_env
from bot.service.app import DISPATCHER
from bot.service.redeliver import STATE_KEY, Redeliverer
from tests.conftest import INSTALLATION, NAMESPACE, SECRET, BedFactory, push_payload, wait_for
from tests.emulators.deliveries import Delivery
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server, free_port
from tests.serving import serving
from tests.test_builds import FILES, REPO

ATTEMPTS = r"^/app/hook/deliveries/\d+/attempts$"


def code_repo(github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.add_repo(REPO, default_branch="master")
    github.commit(REPO, "master", FILES)


def a_push(github: GitHubEmulator, n: int) -> dict[str, Any]:
    return push_payload(github, REPO, {"server/app.py": f"print({n})\n"})


def built(github: GitHubEmulator, sha: str) -> list[dict[str, Any]]:
    """The push's build check run (a newer push to the branch may have superseded its Job since)."""
    return github.check_runs_for(REPO, sha, "flops/build: server")


def redelivered(github: GitHubEmulator, guid: str) -> list[Delivery]:
    return [d for d in github.hooks.of(guid) if d.redelivery]


async def answering(status: int, port: int) -> web.AppRunner:
    """Something on the bot's address that is not the bot: an ingress answering 503 while no pod is ready."""
    async def refuse(request: web.Request) -> web.Response:
        return web.json_response({"message": "no endpoints available"}, status=status)

    app = web.Application()
    app.router.add_post("/webhook", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_serve_redelivers_what_failed_while_it_was_down_and_its_cursor_survives_a_restart(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    """Done when: the bot stopped, two pushes fail (connection refused: status 0; a 503); the bot
    started again redelivers both on start and builds them; restarted once more, it redelivers only
    what failed since (a failure older than its cursor is not looked at again)."""
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    same = {"PORT": str(port), "FLOPS_BUCKET": "t-" + uuid.uuid4().hex[:12]}
    refused = await github.deliver("push", a_push(github, 1))
    assert (refused.status_code, refused.redelivery) == (0, False)
    stub = await answering(503, port)
    unavailable = await github.deliver("push", a_push(github, 2))
    await stub.cleanup()
    assert unavailable.status_code == 503
    async with serving(tmp_path, github, kube, s3, **same, FLOPS_REDELIVER_INTERVAL="1s"):
        for missed in (refused, unavailable):
            await wait_for(lambda m=missed: built(github, m.payload["after"]), timeout=30, what="the missed push built")
            [again] = redelivered(github, missed.guid)
            assert again.status_code == 202
        live = await github.deliver("push", a_push(github, 3))
        assert live.status_code == 202
        await wait_for(lambda: cursor(s3, same["FLOPS_BUCKET"]) >= live.id, timeout=30, what="a pass past it")
    assert len(github.calls_to("POST", ATTEMPTS)) == 2
    live.status_code, live.status = 0, "timed out"  # looks failed now, but lies behind the stored cursor
    later = await github.deliver("push", a_push(github, 4))
    assert later.status_code == 0
    async with serving(tmp_path, github, kube, s3, **same):
        await wait_for(lambda: built(github, later.payload["after"]), timeout=30, what="the later push built")
    assert len(github.calls_to("POST", ATTEMPTS)) == 3
    assert redelivered(github, live.guid) == [] and len(redelivered(github, later.guid)) == 1
    assert len(redelivered(github, refused.guid)) == 1 and len(redelivered(github, unavailable.guid)) == 1
    logged = [json.loads(line) for line in (tmp_path / "bot.log").read_text().splitlines()]
    asked = [entry for entry in logged if entry["message"] == "redelivery requested"]
    assert [(e["guid"], e["event"]) for e in asked] == [(d.guid, "push") for d in (refused, unavailable, later)]
    assert [e["delivery"] for e in asked] == [refused.id, unavailable.id, later.id]


def cursor(s3: S3Server, bucket: str) -> int:
    try:
        response = s3.client().get_object(bucket, STATE_KEY)
    except Exception:  # not written yet
        return 0
    return int(json.loads(response.read()).get("last_id") or 0)


async def test_a_delivery_already_processed_is_not_redelivered(make_bed: BedFactory, github: GitHubEmulator) -> None:
    """GitHub gave up waiting (a timeout, status 0) on a delivery the bot did take: its GUID is in the
    dispatcher's dedupe, so the pass skips it."""
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = bed.url("/webhook"), SECRET
    taken = await github.deliver("push", a_push(github, 4))
    assert taken.status_code == 202
    taken.status_code, taken.status = 0, "timed out"
    done = await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()
    assert done.outcomes == {"skipped": 1}
    assert github.calls_to("POST", ATTEMPTS) == []
    assert bed.deps.metrics.value("flops_redeliveries_total", outcome="skipped") == 1


async def test_at_most_flops_redeliver_max_per_pass_the_rest_next_pass(make_bed: BedFactory,
                                                                        github: GitHubEmulator) -> None:
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0", FLOPS_REDELIVER_MAX="2")
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{free_port()}/webhook", SECRET
    failed = [await github.deliver("push", a_push(github, 10 + n)) for n in range(5)]
    github.hooks.url = bed.url("/webhook")
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    passes = []
    for _ in range(3):
        done = await loop.one_pass()
        passes.append(done.outcomes)
        asked = sum(p.get("requested", 0) for p in passes)
        await wait_for(lambda n=asked: len([d for d in github.hooks.deliveries if d.redelivery]) == n,
                       what="the redeliveries answered")
    assert passes == [{"requested": 2, "deferred": 3}, {"requested": 2, "deferred": 1}, {"requested": 1}]
    assert [len(redelivered(github, d.guid)) for d in failed] == [1] * 5  # oldest first, each once
    assert all(redelivered(github, d.guid)[0].status_code == 202 for d in failed)
    await bed.settle()
    assert all(built(github, d.payload["after"]) for d in failed)
    assert (await loop.one_pass()).outcomes == {}


async def test_first_start_looks_back_one_hour_at_most(make_bed: BedFactory, github: GitHubEmulator) -> None:
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{free_port()}/webhook", SECRET
    old = await github.deliver("push", a_push(github, 20))
    recent = await github.deliver("push", a_push(github, 21))
    old.delivered_at, recent.delivered_at = time.time() - 2 * 3600, time.time() - 1800
    github.hooks.url = bed.url("/webhook")
    done = await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()
    assert done.outcomes == {"requested": 1}
    assert redelivered(github, old.guid) == [] and len(redelivered(github, recent.guid)) == 1


async def test_a_secondary_rate_limit_ends_the_pass_and_the_next_one_goes_on(make_bed: BedFactory,
                                                                             github: GitHubEmulator) -> None:
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{free_port()}/webhook", SECRET
    failed = [await github.deliver("push", a_push(github, 30 + n)) for n in range(3)]
    github.hooks.url = bed.url("/webhook")
    github.fail_next("POST", ATTEMPTS, 403, headers={"Retry-After": "900"},
                     body={"message": "You have exceeded a secondary rate limit."})
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    first = await loop.one_pass()
    assert (first.outcomes, first.retry_after) == ({"deferred": 3}, 900)
    assert (await loop.one_pass()).outcomes == {"requested": 3}
    await wait_for(lambda: all(redelivered(github, d.guid) for d in failed), what="three redeliveries")


async def test_the_loop_waits_the_interval_and_longer_when_github_asks(make_bed: BedFactory,
                                                                       github: GitHubEmulator) -> None:
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{free_port()}/webhook", SECRET
    await github.deliver("push", a_push(github, 40))
    github.fail_next("POST", ATTEMPTS, 429, headers={"Retry-After": "700"})
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            raise asyncio.CancelledError

    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER], sleep=sleep)
    loop.interval = 300
    with pytest.raises(asyncio.CancelledError):
        await loop.run()
    assert waits == [700, 300]  # rate limited: GitHub's wait; then the interval
    assert len(github.calls_to("POST", ATTEMPTS)) == 2


async def test_a_delivery_refused_for_good_is_asked_for_three_times_in_all(make_bed: BedFactory,
                                                                          github: GitHubEmulator) -> None:
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{free_port()}/webhook", SECRET
    lost = await github.deliver("push", a_push(github, 50))
    github.fail_next("POST", ATTEMPTS, 404)
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    outcomes = [(await loop.one_pass()).outcomes]  # GitHub refused the request: asked again next pass
    for n in (1, 2):
        outcomes.append((await loop.one_pass()).outcomes)
        await wait_for(lambda n=n: len(redelivered(github, lost.guid)) == n, what=f"redelivery {n} refused")
    outcomes.append((await loop.one_pass()).outcomes)
    assert outcomes == [{"failed": 1}, {"requested": 1}, {"requested": 1}, {"skipped": 1}]
    assert len(github.calls_to("POST", ATTEMPTS)) == 3
    assert all(d.status_code == 0 for d in github.hooks.of(lost.guid))
    assert bed.deps.metrics.value("flops_redeliveries_total", outcome="failed") == 1


async def test_events_the_bot_does_not_subscribe_to_are_left_alone(make_bed: BedFactory,
                                                                   github: GitHubEmulator) -> None:
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{free_port()}/webhook", SECRET
    await github.deliver("star", {"action": "created", "repository": {"id": 1, "full_name": REPO}})
    assert (await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()).outcomes == {}


def test_the_interval_is_a_duration_and_zero_turns_the_loop_off(env: dict[str, str]) -> None:
    assert from_env(env).redeliver_interval == 300 and from_env(env).redeliver_max == 100
    assert from_env({**env, "FLOPS_REDELIVER_INTERVAL": "90s"}).redeliver_interval == 90
    assert from_env({**env, "FLOPS_REDELIVER_INTERVAL": "1h"}).redeliver_interval == 3600
    assert from_env({**env, "FLOPS_REDELIVER_INTERVAL": "0"}).redeliver_interval == 0
    with pytest.raises(SettingsError, match="FLOPS_REDELIVER_INTERVAL"):
        from_env({**env, "FLOPS_REDELIVER_INTERVAL": "soon"})
    with pytest.raises(SettingsError, match="FLOPS_REDELIVER_MAX"):
        from_env({**env, "FLOPS_REDELIVER_MAX": "-1"})


async def test_interval_zero_never_lists_deliveries(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    assert github.calls_to("GET", r"^/app/hook/deliveries") == []


async def crashed_with(bed_deps: Any, taken: Delivery) -> None:
    """The state a process leaves that took `taken` (answered 202) and died before processing it."""
    await bed_deps.artifacts.put_json(STATE_KEY, {"last_id": taken.id, "settled_id": taken.id - 1, "clean": False,
                                                  "since": time.time() - 600})


async def test_a_delivery_taken_by_a_process_that_died_is_asked_for_again_on_the_next_start(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """Chaos finding: GitHub heard 202, the process was SIGKILLed with the push still in its queue;
    the next process's first pass asks for it again (a clean stop would leave nothing to ask for)."""
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    dying = await answering(202, port)  # took it, then died
    taken = await github.deliver("push", a_push(github, 60))
    await dying.cleanup()
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    await crashed_with(bed.deps, taken)
    github.hooks.url = bed.url("/webhook")
    loop = Redeliverer(bed.deps, bed.server.app[DISPATCHER])
    assert (await loop.one_pass()).outcomes == {"requested": 1}
    await wait_for(lambda: built(github, taken.payload["after"]), timeout=30, what="the push built")
    assert (await loop.one_pass()).outcomes == {}  # only the first pass of a process looks back
    await bed.settle()
    await loop.stopped()
    assert (await bed.deps.artifacts.get_json(STATE_KEY))["clean"] is True
    assert (await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()).outcomes == {}  # clean: nothing


async def test_a_delivery_taken_again_after_a_crash_reuses_the_check_run_the_dead_process_made(
        make_bed: BedFactory, github: GitHubEmulator, kube: KubeEmulator) -> None:
    """Chaos finding: the dead process created the build check run but not the Job; processed again,
    the push looks before it creates, so the commit keeps one `flops/build: server`, the Job's."""
    code_repo(github)
    first = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    github.hooks.url, github.hooks.secret = first.url("/webhook"), SECRET
    taken = await github.deliver("push", a_push(github, 61))
    await first.settle()
    sha = taken.payload["after"]
    [job] = [j for j in kube.list("jobs", NAMESPACE) if j["metadata"]["annotations"].get("flops.dev/sha") == sha
             and j["metadata"]["annotations"].get("flops.dev/image") == "server"]
    await first.server.close()
    async with aiohttp.ClientSession() as session, session.delete(  # as if it died between check run and Job
            f"{kube.url}/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{job['metadata']['name']}",
            headers={"Authorization": f"Bearer {kube.token}"}) as response:
        assert response.status == 200
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    await crashed_with(bed.deps, taken)
    github.hooks.url = bed.url("/webhook")
    assert (await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()).outcomes == {"requested": 1}
    again = await wait_for(lambda: kube.get("jobs", NAMESPACE, job["metadata"]["name"]), timeout=30,
                           what="the Job created again")
    [check] = github.check_runs_for(REPO, sha, "flops/build: server")
    assert again["metadata"]["annotations"]["flops.dev/check-run-id"] == str(check["id"])


async def test_a_delivery_asked_for_after_a_crash_that_meets_the_bot_down_again_is_asked_for_once_more(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """Chaos finding: killed again before the redelivery it asked for arrived, the process left a
    state past that delivery, and the next start never looked at it again."""
    code_repo(github)
    port = free_port()
    github.hooks.url, github.hooks.secret = f"http://127.0.0.1:{port}/webhook", SECRET
    dying = await answering(202, port)
    taken = await github.deliver("push", a_push(github, 62))
    await dying.cleanup()
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0")
    await crashed_with(bed.deps, taken)  # hooks.url still points at nothing: the redelivery fails (status 0)
    assert (await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()).outcomes == {"requested": 1}
    await wait_for(lambda: len(github.hooks.of(taken.guid)) == 2, what="the redelivery refused")
    state = await bed.deps.artifacts.get_json(STATE_KEY)
    assert state["settled_id"] < taken.id and not state["clean"]
    # the next process; the crashed one still runs in this test, so the next takes a Lease of its own
    fresh = await make_bed(FLOPS_REDELIVER_INTERVAL="0", POD_NAMESPACE="flops-system-next")
    github.hooks.url = fresh.url("/webhook")
    assert (await Redeliverer(fresh.deps, fresh.server.app[DISPATCHER]).one_pass()).outcomes == {"requested": 1}
    await wait_for(lambda: built(github, taken.payload["after"]), timeout=30, what="the push built")


async def test_deliveries_refused_queue_full_under_a_burst_are_redelivered_and_built(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """Past what the bot works off, its queue fills and it answers `503 queue full` at once (GitHub
    does not retry that by itself); the next redelivery pass asks for each refused one again."""
    code_repo(github)
    bed = await make_bed(FLOPS_REDELIVER_INTERVAL="0", FLOPS_WORKERS="1", FLOPS_QUEUE_SIZE="2")
    github.hooks.url, github.hooks.secret = bed.url("/webhook"), SECRET
    held = github.hold_next("GET", r"/contents/\.github/flops\.yml$")  # the one worker stays busy on the first push
    pushes = [a_push(github, 20 + n) for n in range(4)]
    first = await github.deliver("push", pushes[0])
    await wait_for(lambda: held.arrived, what="the first push being worked on")
    rest = [await github.deliver("push", data) for data in pushes[1:]]
    assert [d.status_code for d in [first, *rest]] == [202, 202, 503, 503]  # one worked on, one queued (2 accepted in all), two refused
    held.release.set()
    await bed.settle()
    done = await Redeliverer(bed.deps, bed.server.app[DISPATCHER]).one_pass()
    assert done.outcomes == {"requested": 2}
    for data in pushes:
        await wait_for(lambda d=data: built(github, d["after"]), timeout=20, what="every push built")
    assert [len(redelivered(github, d.guid)) for d in [first, *rest]] == [0, 0, 1, 1]
    assert bed.deps.metrics.value("flops_webhook_deliveries_total", event="push", outcome="queue_full") == 2
