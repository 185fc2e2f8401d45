"""Background dispatch: per-key order, no starved workers, the bound, drain, retry of failed deliveries.

The Dispatcher is driven with a real gidgethub Router whose handlers wait on gates the test
opens, so what runs when is decided by the test, not by timing.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import aiohttp
from gidgethub import routing, sansio

from bot.service.dispatch import Dispatcher, event_key
from tests.conftest import INSTALLATION, NAMESPACE, SECRET, Bed, payload, sign, wait_for
from tests.emulators.s3 import free_port

REPO = "Codertocat/Hello-World"


def comment_event(number: int, tag: str) -> sansio.Event:
    data = payload("issue_comment.created")
    data["issue"]["number"] = number
    data["comment"]["body"] = tag
    data["installation"] = {"id": INSTALLATION}
    return sansio.Event(data, event="issue_comment", delivery_id=str(uuid.uuid4()))


class Gated:
    """A router whose handler records each comment body and waits for its gate."""

    def __init__(self) -> None:
        self.router = routing.Router()
        self.started: list[str] = []
        self.finished: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.router.add(self.handle, "issue_comment", action="created")

    def gate(self, tag: str) -> asyncio.Event:
        return self.gates.setdefault(tag, asyncio.Event())

    async def handle(self, event: sansio.Event, gh: object, *, deps: object) -> None:
        tag = event.data["comment"]["body"]
        self.started.append(tag)
        await self.gate(tag).wait()
        self.finished.append(tag)


async def test_same_pr_runs_in_order_while_other_prs_proceed(bed: Bed) -> None:
    gated = Gated()
    dispatcher = Dispatcher(gated.router, bed.deps, workers=2, queue_size=10)
    dispatcher.start()
    for event in (comment_event(1, "a1"), comment_event(1, "a2"), comment_event(1, "a3"), comment_event(2, "b1")):
        assert dispatcher.submit(event)
    gated.gate("b1").set()
    await wait_for(lambda: "b1" in gated.finished, what="PR 2 processed while PR 1 is busy")
    assert gated.started == ["a1", "b1"]  # a2, a3 wait behind a1 without holding the second worker
    for tag in ("a3", "a2", "a1"):  # opened in reverse: order still follows arrival
        gated.gate(tag).set()
    await asyncio.wait_for(dispatcher.idle(), 5)
    assert gated.finished == ["b1", "a1", "a2", "a3"]
    await dispatcher.drain(1)


async def test_the_bound_counts_events_waiting_behind_a_busy_pr(bed: Bed) -> None:
    gated = Gated()
    dispatcher = Dispatcher(gated.router, bed.deps, workers=1, queue_size=2)
    dispatcher.start()
    assert dispatcher.submit(comment_event(1, "a1"))
    await wait_for(lambda: gated.started == ["a1"], what="a1 running")
    assert dispatcher.submit(comment_event(1, "a2"))
    assert not dispatcher.submit(comment_event(1, "a3"))  # full: GitHub records a failed delivery
    gated.gate("a1").set()
    gated.gate("a2").set()
    await asyncio.wait_for(dispatcher.idle(), 5)
    assert dispatcher.submit(comment_event(1, "a4"))
    gated.gate("a4").set()
    await asyncio.wait_for(dispatcher.idle(), 5)
    assert gated.finished == ["a1", "a2", "a4"]
    await dispatcher.drain(1)


async def test_drain_finishes_running_and_queued_work_then_stops(bed: Bed) -> None:
    gated = Gated()
    dispatcher = Dispatcher(gated.router, bed.deps, workers=1, queue_size=10)
    dispatcher.start()
    dispatcher.submit(comment_event(1, "a1"))
    dispatcher.submit(comment_event(2, "b1"))
    draining = asyncio.create_task(dispatcher.drain(5))
    await wait_for(lambda: not dispatcher.accepting, what="drain started")
    assert not draining.done()
    gated.gate("a1").set()
    gated.gate("b1").set()
    assert await asyncio.wait_for(draining, 5) is True
    assert gated.finished == ["a1", "b1"]


async def test_drain_gives_up_after_its_timeout(bed: Bed) -> None:
    gated = Gated()
    dispatcher = Dispatcher(gated.router, bed.deps, workers=1, queue_size=10)
    dispatcher.start()
    dispatcher.submit(comment_event(1, "stuck"))
    assert await dispatcher.drain(0.2) is False
    assert gated.finished == []


async def test_webhooks_during_drain_answer_503(bed: Bed) -> None:
    await bed.server.app.shutdown()  # what SIGTERM triggers: on_shutdown drains the dispatcher
    response = await bed.deliver("push", payload("push"))
    assert response.status == 503
    assert "redeliver" in (await response.json())["message"]


async def test_a_failed_delivery_runs_again_when_github_redelivers_it(bed: Bed) -> None:
    bed.github.add_repo(REPO, default_branch="master")
    sha = bed.github.commit(REPO, "master", {".github/flops.yml": "registry: r.example.com/x\nimages: []\n"})
    data = payload("push")
    data.update(after=sha, installation={"id": INSTALLATION})
    bed.github.fail_next("GET", r"/contents/\.github/flops\.yml", 502, times=5)  # every retry fails
    delivery = str(uuid.uuid4())
    assert (await bed.deliver("push", data, delivery=delivery)).status == 202
    await bed.settle()
    assert bed.deps.metrics.value("flops_webhook_deliveries_total", event="push", outcome="failed") == 1
    again = await bed.deliver("push", data, delivery=delivery)  # the Redeliver button: same GUID
    assert again.status == 202
    await bed.settle()
    assert bed.deps.metrics.value("flops_webhook_deliveries_total", event="push", outcome="processed") == 1
    reads = bed.github.calls_to("GET", r"/contents/\.github/flops\.yml")
    assert [c.status for c in reads][-1] == 200


async def test_sigterm_drains_in_flight_work_before_the_process_exits(env: dict[str, str], github, kube) -> None:
    """A real `python -m bot serve`: SIGTERM while a push is mid-flight (its config read is being
    retried) still ends with the Kaniko Job created, and the process exits 0. Its JSON log lines
    carry the delivery id and no secret."""
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.add_repo(REPO, default_branch="master")
    sha = github.commit(REPO, "master", {".github/flops.yml": "registry: r.example.com/x\nbranches: [master]\n"
                                         "images:\n  - name: server\n    dockerfile: Dockerfile\n",
                                         "Dockerfile": "FROM scratch\n"})
    data = payload("push")
    data.update(ref="refs/heads/master", after=sha, installation={"id": INSTALLATION})
    data["head_commit"]["id"] = sha
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bot", "serve"], env={**os.environ, **env, "PORT": str(port)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        async with aiohttp.ClientSession() as session:
            async def healthy() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as r:
                        return r.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(healthy, timeout=30, what="bot up")
            github.fail_next("GET", r"/contents/\.github/flops\.yml", 502, times=3)  # ~1.5 s of backoff
            body = json.dumps(data).encode()
            headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
                       "Content-Type": "application/json", "X-Hub-Signature-256": sign(body)}
            async with session.post(f"http://127.0.0.1:{port}/webhook", data=body, headers=headers) as r:
                assert r.status == 202
            await wait_for(lambda: github.calls_to("GET", r"/contents/\.github/flops\.yml"), what="work started")
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 40)
        output = proc.stdout.read() if proc.stdout else ""
        assert code == 0, output
        assert len(kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})) == 1
        logs = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        retries = [entry for entry in logs if entry["message"] == "github retry"]
        assert retries and all(entry["delivery_id"] == headers["X-GitHub-Delivery"] for entry in retries)
        key = Path(env["GITHUB_PRIVATE_KEY_PATH"]).read_text().splitlines()[1]
        for secret in (SECRET, env["MINIO_SECRET_KEY"], key, *github.issued_tokens()):
            assert secret not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_ordering_keys_follow_the_pull_request_or_the_branch() -> None:
    def key(name: str, event: str, **changes: object) -> str:
        data = payload(name)
        data["repository"]["full_name"] = REPO
        for field, value in changes.items():
            data[field]["number"] = value
        return event_key(sansio.Event(data, event=event, delivery_id="x"))

    push, rerun = key("push", "push"), key("check_run.rerequested", "check_run")
    assert push == rerun == f"{REPO}@refs/heads/master"  # a Re-run waits for a push in flight there
    assert key("pull_request.synchronize", "pull_request") == key("issue_comment.created", "issue_comment", issue=2) \
        == key("pull_request_review.submitted", "pull_request_review") == f"{REPO}#2"
    assert key("push.tag", "push") != push


async def test_a_payload_of_unexpected_shape_neither_kills_a_worker_nor_stays_seen(bed: Bed) -> None:
    gated = Gated()

    async def strict(event: sansio.Event, gh: object, *, deps: object) -> None:
        event.data["check_run"]["pull_requests"][0]["number"]  # fails on this shape, as a handler would

    gated.router.add(strict, "check_run")
    dispatcher = Dispatcher(gated.router, bed.deps, workers=1, queue_size=10)
    dispatcher.start()
    odd = sansio.Event(
        {"check_run": {"pull_requests": [{}]}, "installation": {"id": INSTALLATION}},
        event="check_run", delivery_id=str(uuid.uuid4()),
    )
    assert dispatcher.submit(odd)
    after = comment_event(1, "after")
    gated.gate("after").set()
    assert dispatcher.submit(after)
    await asyncio.wait_for(dispatcher.idle(), 10)
    assert gated.finished == ["after"]
    assert dispatcher.seen(after.delivery_id)
    assert not dispatcher.seen(odd.delivery_id)  # a handler failure lets Redeliver run it again
    assert await dispatcher.drain(5)


async def test_signed_payloads_of_odd_shapes_are_logged_counted_and_redeliverable(bed: Bed, caplog) -> None:
    """Over HTTP: a pull request that is a string (no ordering key, its handler fails) and an
    `action` that is a list (routing cannot read it). Each is logged with its delivery id and
    counted; the workers live on (a push is processed after them, the pending count drops to 0)
    and Redeliver of the failed one runs it again instead of answering "duplicate"."""
    odd = payload("pull_request.opened")
    odd["pull_request"] = "not an object"
    delivery = str(uuid.uuid4())
    assert (await bed.deliver("pull_request", odd, delivery=delivery)).status == 202
    listed = {**payload("pull_request.opened"), "action": ["opened"]}
    routed = await bed.deliver("pull_request", listed, delivery="list-action")
    assert routed.status == 400
    await bed.settle()
    metrics = bed.deps.metrics
    assert metrics.value("flops_delivery_errors_total", event="pull_request", stage="ordering") == 1
    assert metrics.value("flops_delivery_errors_total", event="pull_request", stage="processing") == 1
    assert metrics.value("flops_delivery_errors_total", event="pull_request", stage="routing") == 1
    logged = {(r.getMessage(), getattr(r, "delivery_id", None)) for r in caplog.records}
    assert {("delivery has no ordering key", delivery), ("delivery cannot be routed", "list-action")} <= logged
    assert any(r.getMessage() == "event processing failed" for r in caplog.records)
    for _ in range(bed.settings.workers + 1):  # more odd deliveries than there are workers
        assert (await bed.deliver("pull_request", odd)).status == 202
    again = await bed.deliver("pull_request", odd, delivery=delivery)
    assert again.status == 202  # the Redeliver button runs it again
    bed.github.add_repo(REPO, default_branch="master")
    data = payload("push")
    data.update(after=bed.github.commit(REPO, "master", {"README.md": "x"}), installation={"id": INSTALLATION})
    assert (await bed.deliver("push", data)).status == 202
    await bed.settle()
    assert metrics.value("flops_webhook_deliveries_total", event="push", outcome="processed") == 1
    assert metrics.value("flops_queue_depth") == 0
