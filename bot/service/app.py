"""The aiohttp service: webhook intake, background dispatch, health, readiness, metrics.

`POST /webhook` verifies the signature before it parses anything, acknowledges at once and
hands the event to the `Dispatcher`, which processes deliveries on a bounded queue with a
bounded number of workers, one at a time per pull request / branch, and drains on shutdown.
"""
from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import web
from gidgethub import routing, sansio

from bot.flows.deps import AfterBuild, Deps
from bot.flows.lifecycle import Kind
from bot.flows.tracker import QUEUE_POLL, WATCH_SECONDS, Tracker
from bot.platform import logs
from bot.platform.artifacts import Artifacts
from bot.platform.github import GitHubApp
from bot.platform.kube import Kube, client_configuration
from bot.platform.metrics import Metrics
from bot.platform.retry import RetryPolicy
from bot.platform.settings import Settings
from bot.service.dispatch import Dispatcher
from bot.service.intake import parse_event, verify_signature

log = logs.get_logger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
DRAIN_SECONDS = 25.0

DEPS = web.AppKey("deps", Deps)
METRICS = web.AppKey("metrics", Metrics)
TRACKER = web.AppKey("tracker", Tracker)


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
        deps.metrics.delivery("unknown", "unauthorized")  # unverified: the caller's event name is not counted
        log.warning("webhook signature rejected", extra={"delivery": request.headers.get("X-GitHub-Delivery")})
        return _reply(401, "signature missing or invalid (check GITHUB_WEBHOOK_SECRET)")
    try:
        event = parse_event(request.headers, body)
    except ValueError as exc:
        deps.metrics.delivery(request.headers.get("X-GitHub-Event") or "unknown", "malformed")
        return _reply(400, f"malformed delivery: {exc}")
    return _enqueue(dispatcher, deps.metrics, event)


def _enqueue(dispatcher: Dispatcher, metrics: Metrics, event: sansio.Event) -> web.Response:
    if event.delivery_id and dispatcher.seen(event.delivery_id):
        metrics.delivery(event.event, "duplicate")
        return _reply(200, "duplicate delivery, already processed")
    try:
        handled = dispatcher.handles(event)
    except Exception:  # a signed payload routing cannot read (an `action` that is a list ...)
        log.warning("delivery cannot be routed", exc_info=True, extra={"event": event.event,
                                                                       "delivery_id": event.delivery_id})
        metrics.delivery_error(event.event, "routing")
        metrics.delivery(event.event, "malformed")
        return _reply(400, "malformed delivery: its fields cannot be routed")
    if not handled:
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
    body, content_type = request.app[METRICS].render(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})


def create_app(settings: Settings, router: routing.Router, *, kinds: Iterable[Kind],
               after_build: list[AfterBuild] | None = None, policy: RetryPolicy | None = None,
               drain_seconds: float = DRAIN_SECONDS, watch_seconds: int = WATCH_SECONDS,
               queue_poll: float = QUEUE_POLL) -> web.Application:
    """Everything is built here, nothing at import time: the entry point passes the handlers'
    router, the kinds of work the tracker reports and the after-build hooks."""
    app = web.Application(client_max_size=MAX_BODY)
    app[METRICS] = Metrics()

    async def lifecycle(app: web.Application) -> Any:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        github = GitHubApp(session, app_id=settings.app_id, private_key=settings.private_key,
                           api_url=settings.api_url, metrics=app[METRICS], policy=policy)
        kube = Kube(client_configuration(settings), settings.namespace)
        deps = Deps(settings=settings, github=github, kube=kube, artifacts=Artifacts(settings.s3),
                    metrics=app[METRICS], after_build=list(after_build or ()), policy=policy or RetryPolicy())
        app[DEPS] = deps
        app[READINESS] = Readiness({"github": github.check_key, "kubernetes": kube.ping,
                                    "s3": deps.artifacts.ping})
        app[DISPATCHER] = Dispatcher(router, deps, workers=settings.workers, queue_size=settings.queue_size)
        app[DISPATCHER].start()
        app[TRACKER] = Tracker(deps, kinds, watch_seconds=watch_seconds, queue_poll=queue_poll)
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

