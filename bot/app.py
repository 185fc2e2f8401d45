"""The aiohttp service: webhook intake, background dispatch, health, readiness, metrics.

`POST /webhook` verifies the signature before it parses anything, acknowledges at once and
hands the event to the `Dispatcher`, which processes deliveries on a bounded queue with a
bounded number of workers, one at a time per pull request / branch, and drains on shutdown.
"""
from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import json
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp
from aiohttp import web
from gidgethub import routing, sansio

from bot.artifacts import Artifacts
from bot.deps import AfterBuild, Deps
from bot.github import GitHubApp, RetryPolicy
from bot.kube import Kube, client_configuration
from bot import logs
from bot.logs import delivery_id
from bot.metrics import Metrics
from bot.settings import Settings
from bot.tracker import WATCH_SECONDS, Reporter, Tracker

log = logs.get_logger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
SEEN_DELIVERIES = 10_000
DRAIN_SECONDS = 25.0

DEPS = web.AppKey("deps", Deps)
METRICS = web.AppKey("metrics", Metrics)
TRACKER = web.AppKey("tracker", Tracker)


def verify_signature(body: bytes, header: str | None, secrets: tuple[str, ...]) -> bool:
    """GitHub's `X-Hub-Signature-256: sha256=<hex>`, checked in constant time against every secret."""
    if not header or not header.startswith("sha256="):
        return False
    given = header[len("sha256="):].encode()
    matched = False
    for secret in secrets:  # no early exit: every secret is always compared
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return matched


def event_key(event: sansio.Event) -> str:
    """Deliveries with the same key are processed in order, never concurrently."""
    data = event.data
    repo = (data.get("repository") or {}).get("full_name", "")
    number = (data.get("pull_request") or data.get("issue") or {}).get("number")
    if number is None and event.event == "check_run":
        prs = data.get("check_run", {}).get("pull_requests") or []
        number = prs[0]["number"] if prs else None
    if number is not None:
        return f"{repo}#{number}"
    return f"{repo}@{data.get('ref') or (data.get('merge_group') or {}).get('head_ref') or _check_branch(data)}"


def _check_branch(data: dict[str, Any]) -> str:
    """A check run's branch as a push names it, so a Re-run waits for a push in flight there."""
    branch = ((data.get("check_run") or {}).get("check_suite") or {}).get("head_branch")
    return f"refs/heads/{branch}" if branch else ""


class Dispatcher:
    """Bounded queue, bounded concurrency, per-key ordering, dedupe by delivery id, drain.

    Deliveries with the same `event_key` run one after another, in arrival order, on the worker
    that took the first of them; a worker never waits on a busy key, so one busy pull request
    cannot starve the others. A delivery whose processing failed is forgotten, so GitHub's
    "Redeliver" button retries it.
    """

    def __init__(self, router: routing.Router, deps: Deps, *, workers: int, queue_size: int) -> None:
        self.router = router
        self.deps = deps
        self._queue: asyncio.Queue[sansio.Event] = asyncio.Queue()
        self._limit = queue_size
        self._pending = 0  # accepted and not yet processed: queued plus waiting behind a busy key
        self._workers_n = workers
        self._workers: list[asyncio.Task[None]] = []
        self._backlogs: dict[str, deque[sansio.Event]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._done = asyncio.Event()
        self._done.set()
        self.accepting = True

    def handles(self, event: sansio.Event) -> bool:
        return bool(self.router.fetch(event))

    def seen(self, delivery: str) -> bool:
        return delivery in self._seen

    def submit(self, event: sansio.Event) -> bool:
        """Queue an event; False when full (GitHub shows the failure; redeliver later)."""
        if self._pending >= self._limit:
            return False
        self._queue.put_nowait(event)
        self._pending += 1
        self._done.clear()
        if event.delivery_id:
            self._seen[event.delivery_id] = None
            while len(self._seen) > SEEN_DELIVERIES:
                self._seen.popitem(last=False)
        self.deps.metrics.queue_depth = self._pending
        return True

    def start(self) -> None:
        self._workers = [asyncio.create_task(self._work(), name=f"dispatch-{i}") for i in range(self._workers_n)]

    async def idle(self) -> None:
        """Return once every accepted delivery has been processed."""
        await self._done.wait()

    async def drain(self, timeout: float) -> bool:
        """Stop accepting, finish what is queued and running (up to `timeout`), stop workers."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
            drained = True
        except TimeoutError:
            log.warning("drain timed out", extra={"left": self._pending})
            drained = False
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        return drained

    async def _work(self) -> None:
        while True:
            event = await self._queue.get()
            key = event_key(event)
            if key in self._backlogs:
                self._backlogs[key].append(event)  # the worker on this key takes it next, in order
                continue
            backlog = self._backlogs[key] = deque([event])
            try:
                while backlog:
                    try:
                        await self.process(backlog[0])
                    finally:
                        backlog.popleft()
                        self._finished()
            finally:
                del self._backlogs[key]

    def _finished(self) -> None:
        self._pending -= 1
        self.deps.metrics.queue_depth = self._pending
        if self._pending == 0:
            self._done.set()

    async def process(self, event: sansio.Event) -> None:
        token = delivery_id.set(event.delivery_id)
        started = time.monotonic()
        try:
            installation = (event.data.get("installation") or {}).get("id")
            gh = self.deps.github.for_installation(int(installation)) if installation else self.deps.github.as_app()
            await self.router.dispatch(event, gh, deps=self.deps)
            outcome = "processed"
        except Exception:
            log.exception("event processing failed", extra={"event": event.event, "action": event.data.get("action")})
            outcome = "failed"
            self._seen.pop(event.delivery_id, None)  # a redelivery of a failed event runs again
        finally:
            delivery_id.reset(token)
        self.deps.metrics.delivery(event.event, outcome)
        self.deps.metrics.processed(event.event, time.monotonic() - started)


class Readiness:
    """GitHub key accepted, Kubernetes and S3 reachable; cached briefly so probes stay cheap."""

    def __init__(self, checks: dict[str, Callable[[], Awaitable[Any]]], ttl: float = 5.0) -> None:
        self._checks = checks
        self._ttl = ttl
        self._at = 0.0
        self._last: dict[str, str] = {}

    async def status(self) -> dict[str, str]:
        if time.monotonic() - self._at > self._ttl:
            results = await asyncio.gather(*(self._run(name, check) for name, check in self._checks.items()))
            self._last = dict(results)
            self._at = time.monotonic()
        return self._last

    @staticmethod
    async def _run(name: str, check: Callable[[], Awaitable[Any]]) -> tuple[str, str]:
        try:
            await asyncio.wait_for(check(), 5.0)
        except Exception as exc:  # any failure means not ready; say which and why
            return name, f"error: {type(exc).__name__}: {exc}"[:300]
        return name, "ok"


DISPATCHER = web.AppKey("dispatcher", Dispatcher)
READINESS = web.AppKey("readiness", Readiness)


async def webhook(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    dispatcher = request.app[DISPATCHER]
    if not dispatcher.accepting:
        return _reply(503, "shutting down; GitHub can redeliver this event")
    body = await request.read()
    if not verify_signature(body, request.headers.get("X-Hub-Signature-256"), deps.settings.webhook_secrets):
        deps.metrics.delivery(request.headers.get("X-GitHub-Event", "unknown"), "unauthorized")
        log.warning("webhook signature rejected", extra={"delivery": request.headers.get("X-GitHub-Delivery")})
        return _reply(401, "signature missing or invalid (check GITHUB_WEBHOOK_SECRET)")
    try:
        event = parse_event(request.headers, body)
    except ValueError as exc:
        deps.metrics.delivery(request.headers.get("X-GitHub-Event", "unknown"), "malformed")
        return _reply(400, f"malformed delivery: {exc}")
    return _enqueue(dispatcher, deps.metrics, event)


def parse_event(headers: Mapping[str, str], body: bytes) -> sansio.Event:
    """A verified delivery's body and headers as a gidgethub Event; ValueError when malformed."""
    name = headers.get("X-GitHub-Event", "")
    if not name:
        raise ValueError("X-GitHub-Event header is missing")
    content_type = headers.get("Content-Type", "").split(";")[0].strip()
    if content_type == "application/x-www-form-urlencoded":
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        body = form.get("payload", [""])[0].encode()
    elif content_type != "application/json":
        raise ValueError(f"content type {content_type!r}; set the webhook to application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("payload is not a JSON object")
    return sansio.Event(data, event=name, delivery_id=headers.get("X-GitHub-Delivery", ""))


def _enqueue(dispatcher: Dispatcher, metrics: Metrics, event: sansio.Event) -> web.Response:
    if event.delivery_id and dispatcher.seen(event.delivery_id):
        metrics.delivery(event.event, "duplicate")
        return _reply(200, "duplicate delivery, already processed")
    if not dispatcher.handles(event):
        metrics.delivery(event.event, "ignored")
        return _reply(202, "ignored")
    if not dispatcher.submit(event):
        metrics.delivery(event.event, "queue_full")
        return _reply(503, "queue full; GitHub can redeliver this event")
    metrics.delivery(event.event, "accepted")
    return _reply(202, "accepted")


def _reply(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    status = await request.app[READINESS].status()
    ready = all(value == "ok" for value in status.values())
    return web.json_response({"ready": ready, "checks": status}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff"})


def create_app(settings: Settings, router: routing.Router, *, reporters: Mapping[str, Reporter],
               after_build: list[AfterBuild] | None = None, policy: RetryPolicy | None = None,
               drain_seconds: float = DRAIN_SECONDS, watch_seconds: int = WATCH_SECONDS) -> web.Application:
    """Everything is built here, nothing at import time: the entry point passes the handlers'
    router, the tracker's reporters (one per Job kind) and the after-build hooks."""
    app = web.Application(client_max_size=MAX_BODY)
    app[METRICS] = Metrics()

    async def lifecycle(app: web.Application) -> Any:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        github = GitHubApp(session, app_id=settings.app_id, private_key=settings.private_key,
                           api_url=settings.api_url, metrics=app[METRICS], policy=policy)
        kube = Kube(client_configuration(settings), settings.namespace)
        deps = Deps(settings=settings, github=github, kube=kube, artifacts=Artifacts(settings.s3),
                    metrics=app[METRICS], after_build=list(after_build or ()))
        app[DEPS] = deps
        app[READINESS] = Readiness({"github": github.check_key, "kubernetes": kube.ping,
                                    "s3": deps.artifacts.ping})
        app[DISPATCHER] = Dispatcher(router, deps, workers=settings.workers, queue_size=settings.queue_size)
        app[DISPATCHER].start()
        app[TRACKER] = Tracker(deps, reporters, watch_seconds=watch_seconds)
        tracking = asyncio.create_task(app[TRACKER].run(), name="tracker")
        log.info("flops-bot started", extra={"app_id": settings.app_id, "namespace": settings.namespace,
                                             "api_url": settings.api_url})
        gc.freeze()  # the start-up heap (modules, clients) lives forever: keep it out of every full collection
        yield
        gc.unfreeze()
        tracking.cancel()
        await asyncio.gather(tracking, return_exceptions=True)
        await app[TRACKER].idle()
        await session.close()
        kube.close()

    async def drain(app: web.Application) -> None:
        await app[DISPATCHER].drain(drain_seconds)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app

