"""The aiohttp service: webhook intake, background dispatch, health, readiness, metrics.

`POST /webhook` verifies the signature while the body streams in and parses nothing before; a
request it will not read (no signature, no length, too large, too many unverified bytes in
flight) is answered at once and its connection closed. A verified delivery is acknowledged at once
and handed to the `Dispatcher`, which processes deliveries on a bounded queue with a bounded
number of workers, one at a time per pull request / branch, and drains on shutdown.
"""
from __future__ import annotations

import asyncio
import functools
import gc
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from gidgethub import routing, sansio

from bot.flows.deps import AfterBuild, Deps
from bot.flows.lifecycle import Kind
from bot.flows.queued import QUEUE_POLL
from bot.flows.tracker import WATCH_SECONDS, Tracker
from bot.platform import logs
from bot.platform.artifacts import Artifacts
from bot.platform.github import GitHubApp
from bot.platform.kube import Kube, client_configuration
from bot.platform.leader import Leadership, identity_for
from bot.platform.metrics import Metrics
from bot.platform.retry import RetryPolicy
from bot.platform.settings import Settings
from bot.service import runs
from bot.service.dispatch import Dispatcher
from bot.service.intake import (
    BODY_GRACE,
    BODY_SECONDS,
    Refusal,
    Signature,
    UnverifiedBytes,
    admit,
    client_of,
    parse_event,
)
from bot.service.redeliver import Redeliverer
from bot.service.replicas import Heartbeat
from bot.service.retakes import Notices
from bot.service.webhook_proxy import WebhookProxy

log = logs.get_logger(__name__)

MAX_BODY = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
CHUNK = 64 * 1024  # the body is read, and its signature computed, this much at a time
DRAIN_SECONDS = 25.0

DEPS = web.AppKey("deps", Deps)
METRICS = web.AppKey("metrics", Metrics)
TRACKER = web.AppKey("tracker", Tracker)
LEADERSHIP = web.AppKey("leadership", Leadership)
REDELIVERER = web.AppKey("redeliverer", Redeliverer)
RELAY = web.AppKey("relay", asyncio.Task[None])
HEARTBEAT = web.AppKey("heartbeat", Heartbeat)
BEATING = web.AppKey("beating", asyncio.Task[None])
UNVERIFIED = web.AppKey("unverified", UnverifiedBytes)


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


async def webhook(request: web.Request) -> web.StreamResponse:
    deps = request.app[DEPS]
    if not request.app[DISPATCHER].accepting:
        return _reply(503, "shutting down; GitHub can redeliver this event")
    try:
        body = await _verified_body(request, deps.settings.webhook_secrets)
    except Refusal as refusal:
        _refused(deps.metrics, request.headers, refusal)
        return await _refuse(request, refusal)
    return _accept(request.app, request.headers, body)


def intake(app: web.Application, headers: Mapping[str, str], body: bytes) -> web.Response:
    """A delivery whose body is already read (the webhook proxy): its signature checked at once,
    then the one path `POST /webhook` takes too. `headers` are looked up case-insensitively."""
    deps = app[DEPS]
    header = headers.get("X-Hub-Signature-256") or ""
    signature = Signature(header, deps.settings.webhook_secrets)
    signature.update(body)
    if not Signature.present(header) or not signature.valid():
        refusal = Refusal(401, "unauthorized", "signature missing or invalid (check GITHUB_WEBHOOK_SECRET)")
        _refused(deps.metrics, headers, refusal)
        return _reply(refusal.status, refusal.message)
    return _accept(app, headers, body)


def _refused(metrics: Metrics, headers: Mapping[str, str], refusal: Refusal) -> None:
    metrics.delivery("unknown", refusal.outcome)  # unverified: the caller's event name is not counted
    log.warning("webhook refused", extra={"delivery": headers.get("X-GitHub-Delivery"),
                                          "status": refusal.status, "outcome": refusal.outcome})


def _accept(app: web.Application, headers: Mapping[str, str], body: bytes | bytearray) -> web.Response:
    """The one path of every verified delivery (`POST /webhook` and the webhook proxy): parsing,
    dedupe, routing, queue."""
    deps = app[DEPS]
    dispatcher = app[DISPATCHER]
    if not dispatcher.accepting:
        return _reply(503, "shutting down; GitHub can redeliver this event")
    try:
        event = parse_event(headers, body)
    except ValueError as exc:
        deps.metrics.delivery(headers.get("X-GitHub-Event") or "unknown", "malformed")
        return _reply(400, f"malformed delivery: {exc}")
    return _enqueue(dispatcher, deps.metrics, event)


async def _verified_body(request: web.Request, secrets: tuple[str, ...]) -> bytes:
    """The body, read chunk by chunk while its signature is computed (joined once at the end), within the
    budget of unverified bytes; a Refusal when it may not be read or does not verify."""
    budget, client = request.app[UNVERIFIED], client_of(request.remote)
    reserved = admit(request.headers, request.content_length, budget, MAX_BODY, client)
    signature = Signature(request.headers["X-Hub-Signature-256"], secrets)
    try:
        if request.content.is_eof():  # the whole body came with the headers (most deliveries): no wait, no timer
            body = request.content.read_nowait()
            signature.update(body)
        else:
            body = await _streamed(request, signature, budget)
    finally:
        budget.release(reserved, client)
    if not signature.valid():
        raise Refusal(401, "unauthorized", "signature missing or invalid (check GITHUB_WEBHOOK_SECRET)")
    return body


async def _streamed(request: web.Request, signature: Signature, budget: UnverifiedBytes) -> bytes:
    """The body as it arrives, CHUNK at a time into the signature, joined once; each chunk moves the
    deadline to `budget.deadline` (the minimum rate after a grace, `budget.seconds` at most)."""
    chunks: list[bytes] = []
    start, received = asyncio.get_running_loop().time(), 0
    try:
        async with asyncio.timeout_at(budget.deadline(start, 0)) as timer:
            async for chunk in request.content.iter_chunked(CHUNK):
                signature.update(chunk)
                chunks.append(chunk)
                received += len(chunk)
                timer.reschedule(budget.deadline(start, received))
    except TimeoutError:
        if budget.deadline(start, received) < start + budget.seconds:
            raise Refusal(408, "too_slow", f"body slower than {budget.min_rate} bytes/s "
                                           "(FLOPS_UNVERIFIED_MIN_RATE)") from None
        raise Refusal(408, "timeout", f"body not received within {budget.seconds:g} s") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _refuse(request: web.Request, refusal: Refusal) -> web.StreamResponse:
    """Answer and close the connection: a body not read yet is never read (no lingering drain)."""
    response = _reply(refusal.status, refusal.message)
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    if request.content.is_eof():
        return response
    response.force_close()
    await response.prepare(request)
    await response.write_eof()
    request.protocol.force_close()
    return response


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
    return web.Response(body=_message(message), status=status, content_type="application/json", charset="utf-8")


@functools.lru_cache(maxsize=64)
def _message(message: str) -> bytes:
    """The JSON body of a reply: the same few messages every time, each serialised once."""
    return orjson.dumps({"message": message})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    status = await request.app[READINESS].status()
    ready = all(value == "ok" for value in status.values())
    return web.json_response({"ready": ready, "checks": status}, status=200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render(request.headers.get("Accept", ""))
    return web.Response(body=body, headers={"Content-Type": content_type, "X-Content-Type-Options": "nosniff"})


def _start_proxy(app: web.Application, session: aiohttp.ClientSession, deps: Deps) -> asyncio.Task[None] | None:
    """`WEBHOOK_PROXY_URL` set: read the channel in the background (start-up never waits for it)."""
    if not deps.settings.webhook_proxy_url:
        return None
    def deliver(headers: Mapping[str, str], body: bytes) -> int:
        return intake(app, headers, body).status

    proxy = WebhookProxy(deps.settings.webhook_proxy_url, session, deliver, deps.metrics, deps.policy)
    log.info("webhook proxy enabled", extra={"proxy": proxy.where})
    return asyncio.create_task(proxy.run(), name="webhook-proxy")


def _start_leadership(app: web.Application, deps: Deps, kinds: Iterable[Kind], watch_seconds: int,
                      queue_poll: float) -> asyncio.Task[None]:
    """Every replica serves webhooks; only the Lease holder runs the tracker (reports, timeouts) and
    the loop that asks GitHub to redeliver what failed (FLOPS_REDELIVER_INTERVAL=0: off)."""
    app[LEADERSHIP] = leadership = Leadership(deps.kube, deps.settings.lease, identity=deps.identity,
                                                   metrics=deps.metrics)
    app[TRACKER] = Tracker(deps, kinds, watch_seconds=watch_seconds, queue_poll=queue_poll,
                           identity=leadership.identity)
    leadership.while_leader("tracker", app[TRACKER].run)
    if deps.settings.redeliver_interval:
        app[REDELIVERER] = redeliverer = Redeliverer(deps, app[DISPATCHER])
        leadership.while_leader("redeliver", redeliverer.run)
        app[HEARTBEAT] = heartbeat = Heartbeat(deps, app[DISPATCHER])  # every replica: what it took, for the leader
        app[DISPATCHER].notices = Notices(deps.artifacts)  # and what the leader asks for again, for every replica
        app[BEATING] = asyncio.create_task(heartbeat.run(), name="replica-record")
    else:
        log.info("redelivery of failed deliveries disabled (FLOPS_REDELIVER_INTERVAL=0)")
    return asyncio.create_task(leadership.run(), name="leadership")


async def _stop_background(app: web.Application, tracking: asyncio.Task[None],
                           relaying: asyncio.Task[None] | None) -> None:
    """Stop the Lease's work and the proxy; a holder that ran the redelivery loop and drained every
    delivery it took says so, so the next start asks GitHub for nothing taken here."""
    leading = app[LEADERSHIP].is_leader
    background = [task for task in (tracking, relaying, app.get(BEATING)) if task is not None]
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)
    if leading and REDELIVERER in app:  # a follower never writes the loop's state
        await app[REDELIVERER].stopped()
    if HEARTBEAT in app:
        await app[HEARTBEAT].stopped()


def _unverified(settings: Settings, metrics: Metrics, seconds: float, grace: float) -> UnverifiedBytes:
    budget = UnverifiedBytes(settings.unverified_bytes, seconds, grace=grace, per_client=settings.unverified_per_client,
                             min_rate=settings.unverified_min_rate)
    metrics.count_unverified_bytes(lambda: budget.held)
    return budget


def _deps(settings: Settings, session: aiohttp.ClientSession, metrics: Metrics, after_build: list[AfterBuild] | None,
          policy: RetryPolicy | None) -> Deps:
    """The clients every flow uses, made when the service starts."""
    github = GitHubApp(session, app_id=settings.app_id, private_key=settings.private_key, api_url=settings.api_url,
                       metrics=metrics, policy=policy)
    return Deps(settings=settings, github=github, kube=Kube(client_configuration(settings), settings.namespace),
                artifacts=Artifacts(settings.s3), metrics=metrics, after_build=list(after_build or ()),
                policy=policy or RetryPolicy(), identity=identity_for(settings.lease.pod_name))


def create_app(settings: Settings, router: routing.Router, *, kinds: Iterable[Kind],
               after_build: list[AfterBuild] | None = None, policy: RetryPolicy | None = None,
               drain_seconds: float = DRAIN_SECONDS, watch_seconds: int = WATCH_SECONDS,
               body_seconds: float = BODY_SECONDS, body_grace: float = BODY_GRACE,
               queue_poll: float = QUEUE_POLL) -> web.Application:
    """Everything is built here, nothing at import time: the entry point passes the handlers'
    router, the kinds of work the tracker reports and the after-build hooks."""
    app = web.Application(client_max_size=MAX_BODY)
    app[METRICS] = Metrics()
    app[UNVERIFIED] = _unverified(settings, app[METRICS], body_seconds, body_grace)

    async def lifecycle(app: web.Application) -> Any:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        app[DEPS] = deps = _deps(settings, session, app[METRICS], after_build, policy)
        kube = deps.kube
        app[READINESS] = Readiness({"github": deps.github.check_key, "kubernetes": kube.ping,
                                    "s3": deps.artifacts.ping})
        app[DISPATCHER] = Dispatcher(router, deps, workers=settings.workers, queue_size=settings.queue_size)
        app[DISPATCHER].start()
        tracking = _start_leadership(app, deps, kinds, watch_seconds, queue_poll)
        relaying = _start_proxy(app, session, deps)
        if relaying is not None:
            app[RELAY] = relaying
        log.info("flops-bot started", extra={"app_id": settings.app_id, "namespace": settings.namespace,
                                             "api_url": settings.api_url, "holder": app[LEADERSHIP].identity})
        gc.freeze()  # the start-up heap (modules, clients) lives forever: keep it out of every full collection
        yield
        gc.unfreeze()
        await _stop_background(app, tracking, relaying)
        await app[TRACKER].idle()
        await session.close()
        kube.close()

    async def drain(app: web.Application) -> None:
        if RELAY in app:  # first: a delivery relayed during the drain would get 503, and smee already told GitHub 2xx
            app[RELAY].cancel()
            await asyncio.gather(app[RELAY], return_exceptions=True)
        await app[DISPATCHER].drain(drain_seconds)

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(drain)
    app.router.add_post("/webhook", webhook)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runs.add_routes(app, DEPS)  # /runs, /login, /auth/callback, /static
    return app

