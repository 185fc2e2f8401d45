"""The run pages: `GET /runs/<run id>`, its containers' logs live (Server-Sent Events fed from
`pods/log?follow=true`) and whole, and `GET /runs?repo=owner/name` with filters.

Kubernetes first (the run's Jobs and Pods, labelled `flops.dev/run=<run id>`), then the record the bot
kept in its bucket when the run finished (bot.flows.logbook). Every page asks `signin.Sessions` who
may read the run's repository; logs are masked as check-run log tails are.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web

from bot.core import jobs, runs
from bot.core.jobs.contract import web_url
from bot.flows import logbook
from bot.flows.deps import Deps
from bot.flows.diagnosis import masker
from bot.platform import logs, podlogs
from bot.service import pages, signin
from bot.service.signin import SESSIONS, Sessions

log = logs.get_logger(__name__)

LIVE_MAX = 200  # log streams open at once; more answer 503
LIVE_PER_VISITOR = 8  # log streams one signed-in user (or one anonymous client address) follows at once; more 429
KEEPALIVE = 15.0  # seconds between SSE comments while a log is quiet (a browser that left is noticed)
DOWNLOAD_BYTES = 16 * 1024 * 1024
METRICS_BYTES = 1024 * 1024
SHOWN = 100  # runs listed on one page

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
DOWNLOADS_AT_ONCE = 4
DOWNLOADS = web.AppKey("log_downloads", asyncio.Semaphore)
LIVE = web.AppKey("live_logs", set[podlogs.Follow])  # the logs followed right now (closed on shutdown)
LIVE_BY = web.AppKey("live_logs_by_visitor", Counter[str])  # streams open per visitor (login or client address)


def guarded(handler: Handler) -> Handler:
    """Every answer of the run pages (errors too) carries the CSP and the other security headers."""
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(pages.HEADERS)
            raise
        if not response.prepared:
            response.headers.update(pages.HEADERS)
        return response
    return answer


def _html(title: str, body: str, request: web.Request, status: int = 200) -> web.Response:
    user = request.app[SESSIONS].user(request)
    text = pages.layout(title, body, pages.who(user.login if user else None, request.path_qs))
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def _hidden(request: web.Request, *, page: bool) -> web.HTTPException:
    """The one answer for a run that does not exist and for a run this visitor may not read: it depends on the
    visitor only (signed in or not), never on the run, so run ids cannot be probed."""
    sessions: Sessions = request.app[SESSIONS]
    user = sessions.user(request)
    if user is None and page and sessions.settings.signin.enabled:
        return web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))
    if user is not None:
        why = f"No such run, or {user.login} cannot read its repository on GitHub."
    elif sessions.settings.signin.enabled:
        why = "No such run, or its repository is not public: sign in with GitHub to see it."
    else:
        why = "No such run, or its repository's runs are not public (sign-in is not configured: GITHUB_CLIENT_ID)."
    body = pages.layout("No such run", pages.refused(why, "No such run"),
                        pages.who(user.login if user else None, request.path_qs))
    return web.HTTPNotFound(text=body, content_type="text/html")


async def _readable(request: web.Request, *, page: bool) -> tuple[Deps, runs.Run, bool, dict[str, dict[str, Any]]]:
    """The run of the path if this browser may read it; else the same answer as for a run that does not exist."""
    deps: Deps = request.app[signin.DEPS]
    run_id = request.match_info["run_id"]
    found = await _load(deps, run_id) if runs.RUN_ID.fullmatch(run_id) else None
    if found is None:
        raise _hidden(request, page=page)
    run, live, specs = found
    if not (await request.app[SESSIONS].verdict(request, run.repo, run.installation)).allowed:
        raise _hidden(request, page=page)
    return deps, run, live, specs


async def _load(deps: Deps, run_id: str) -> tuple[runs.Run, bool, dict[str, dict[str, Any]]] | None:
    """The run (from its Jobs while they exist, else its record), whether it is in the cluster, its Pods' specs."""
    run, specs = await logbook.run_from_cluster(deps, run_id)
    if run is not None and any(job.pods for job in run.jobs):
        return run, True, specs
    kept = await logbook.kept_run(deps, run_id)
    if kept is None and run is not None:  # not started yet (or its Pods are gone and nothing was kept)
        return run, True, specs
    if kept is None:  # it never existed, or its Jobs and its record are gone
        return None
    return kept, False, {}


async def _allow(request: web.Request, repo: str, installation: int, *, page: bool) -> None:
    """Raise unless this browser may read `repo`: to the sign-in (a page), or 403 with the reason."""
    sessions: Sessions = request.app[SESSIONS]
    verdict = await sessions.verdict(request, repo, installation)
    if verdict.allowed:
        return
    if verdict.why == "sign-in" and page and sessions.settings.signin.enabled:
        raise web.HTTPFound("/login?" + urlencode({"next": request.path_qs}))
    why = verdict.why if verdict.why != "sign-in" else (
        "Sign in with GitHub to see this run." if sessions.settings.signin.enabled else
        "This repository's runs are not public, and sign-in is not configured (GITHUB_CLIENT_ID).")
    user = sessions.user(request)
    body = pages.layout("Not allowed", pages.refused(why), pages.who(user.login if user else None, request.path_qs))
    raise web.HTTPForbidden(text=body, content_type="text/html")


async def run_page(request: web.Request) -> web.StreamResponse:
    deps, run, live, _ = await _readable(request, page=True)
    metrics = await _metrics(deps, run)
    body = pages.run_page(run, web_url(deps.settings.api_url), metrics, live)
    return _html(f"{run.kind} run {run.run_id}", body, request)


async def _metrics(deps: Deps, run: runs.Run) -> Any:
    if not run.output:
        return None
    try:
        return await deps.artifacts.runs.get_json(run.output + "metrics.json", METRICS_BYTES)
    except ValueError:
        return None


def _container(run: runs.Run, pod: str, container: str) -> runs.Pod:
    for job in run.jobs:
        for found in job.pods:
            if found.name == pod and any(c.name == container for c in found.containers):
                return found
    raise web.HTTPNotFound(text="No such container in this run.")


async def _log_target(request: web.Request) -> tuple[Deps, runs.Run, str, str, dict[str, Any] | None]:
    deps, run, live, specs = await _readable(request, page=False)
    pod, container = request.match_info["pod"], request.match_info["container"]
    _container(run, pod, container)  # a name of another run's Pod is refused here
    return deps, run, pod, container, specs.get(pod) if live else None


async def live_log(request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: one `data:` per line (masked), then `event: end`."""
    deps, run, pod, container, spec = await _log_target(request)
    if len(request.app[LIVE]) >= LIVE_MAX:
        raise web.HTTPServiceUnavailable(text="Too many logs are being followed right now; reload in a minute.")
    visitor, open_by = _visitor(request), request.app[LIVE_BY]
    if open_by[visitor] >= LIVE_PER_VISITOR:
        raise web.HTTPTooManyRequests(text=f"You follow {LIVE_PER_VISITOR} logs already: close one and reload.")
    open_by[visitor] += 1
    try:
        return await _follow(deps, request, run, pod, container, spec)
    finally:
        open_by[visitor] -= 1
        if open_by[visitor] <= 0:
            del open_by[visitor]


def _visitor(request: web.Request) -> str:
    """Whose streams these are: the signed-in login, else the client address (anonymous, public repository)."""
    user = request.app[SESSIONS].user(request)
    return f"user:{user.login}" if user else f"address:{request.remote or ''}"


async def _follow(deps: Deps, request: web.Request, run: runs.Run, pod: str, container: str,
                  spec: dict[str, Any] | None) -> web.StreamResponse:
    response = web.StreamResponse(headers={**pages.HEADERS, "Content-Type": "text/event-stream",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    try:
        if spec is not None:
            await _stream(deps, request, response, pod, container, spec)
        else:
            await _replay(deps, response, run.run_id, pod, container)
        await response.write(b"event: end\ndata: the log ended\n\n")
    except ConnectionResetError:  # the browser left
        pass
    return response


async def _stream(deps: Deps, request: web.Request, response: web.StreamResponse, pod: str, container: str,
                  spec: dict[str, Any]) -> None:
    """Follow the container's log until it ends, the browser leaves (checked every second, so its API stream
    and thread go at once) or the bot stops."""
    mask, followed = logbook.LineMasker(await masker(deps, spec)), request.app[LIVE]
    follow = podlogs.Follow(deps.kube, pod, container)
    lines = follow.start()
    followed.add(follow)
    quiet = 0.0
    try:
        while True:
            try:
                line = await asyncio.wait_for(lines.get(), 1.0)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                quiet += 1.0
                if quiet >= KEEPALIVE:
                    quiet = 0.0
                    await response.write(b": still here\n\n")
                continue
            quiet = 0.0
            if line is None:
                if follow.waiting:
                    await response.write(_event("(the container has not started yet: reload the page once it runs)"))
                return
            await response.write(_event(mask(line)))
    finally:
        follow.close()
        followed.discard(follow)


async def _replay(deps: Deps, response: web.StreamResponse, run_id: str, pod: str, container: str) -> None:
    text = await logbook.kept_log(deps, run_id, pod, container)
    if text is None:
        await response.write(_event("(flops-bot kept no log of this container)"))
        return
    for start in range(0, len(lines := text.split("\n")), 500):
        await response.write(b"".join(_event(line) for line in lines[start:start + 500]))


def _event(line: str) -> bytes:
    """One SSE message: a carriage return or newline inside would end it early."""
    return b"data: " + line.replace("\r", "").replace("\n", " ").encode() + b"\n\n"


async def download_log(request: web.Request) -> web.StreamResponse:
    deps, run, pod, container, spec = await _log_target(request)
    async with request.app[DOWNLOADS]:  # each holds up to DOWNLOAD_BYTES in memory: a few at a time
        return await _download(deps, run, pod, container, spec)


async def _download(deps: Deps, run: runs.Run, pod: str, container: str, spec: dict[str, Any] | None) -> web.Response:
    text = await deps.kube.whole_log(pod, container, DOWNLOAD_BYTES) if spec is not None else None
    if text is not None:
        text = "\n".join(map(logbook.LineMasker(await masker(deps, spec or {})), text.split("\n")))
    else:
        text = await logbook.kept_log(deps, run.run_id, pod, container)
    if text is None:
        raise web.HTTPNotFound(text="This container's log is gone.")
    name = quote(f"{pod}-{container}.log")
    return web.Response(text=text, content_type="text/plain", charset="utf-8",
                        headers={"Content-Disposition": f"attachment; filename=\"{name}\""})


async def list_runs(request: web.Request) -> web.StreamResponse:
    deps: Deps = request.app[signin.DEPS]
    repo = request.query.get("repo", "")
    if not runs.REPO.fullmatch(repo):
        return _html("Runs", "<h1>Runs</h1>" + pages.list_page("", [], {}), request,
                     status=200 if not repo else 400)
    every = await _runs_of(deps, repo)
    if not every:  # answered as for a private repository with runs: whether it has any is not told to anyone
        await _allow(request, repo, 0, page=True)  # with the reader's own token only: no App call for typed names
        raise web.HTTPNotFound(text="flops-bot has no run of this repository.")
    await _allow(request, every[0].repo, every[0].installation, page=True)
    filters = {k: request.query.get(k, "")[:100] for k in runs.FILTERS}
    found = [r for r in every if runs.matches(r, filters)]
    return _html(f"Runs of {repo}", pages.list_page(repo, found[:SHOWN], filters), request)


async def _runs_of(deps: Deps, repo: str) -> list[runs.Run]:
    """`repo`'s runs, newest first: those whose Jobs are in the cluster, then those the bot kept."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for job in await deps.kube.list_jobs(jobs.SELECTOR) + await deps.kube.list_jobs(jobs.SELECTOR, kind=jobs.RAYJOB):
        if jobs.annotations_of(job).get(jobs.REPO) == repo:
            run_id = ((job["metadata"].get("labels") or {}).get(jobs.RUN)) or jobs.name_of(job)
            grouped.setdefault(run_id, []).append(job)
    found = {run_id: run for run_id, listed in grouped.items() if (run := runs.run_of(run_id, listed, {})) is not None}
    for kept in await logbook.kept_runs(deps, repo):
        found.setdefault(kept.run_id, kept)
    return sorted(found.values(), key=lambda r: r.created, reverse=True)


async def static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in pages.STATIC:
        raise web.HTTPNotFound()
    return web.Response(text=pages.template(name), content_type=pages.STATIC[name], charset="utf-8",
                        headers={"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"})


def add_routes(app: web.Application, deps_key: web.AppKey[Deps]) -> None:
    """The run pages, sign-in and their static files; `Sessions` is made once the service's clients exist
    (`deps_key` is set: this context runs after the service's)."""
    async def sessions(app: web.Application) -> Any:
        app[signin.DEPS] = deps = app[deps_key]
        app[SESSIONS] = Sessions(deps.settings, deps.github)
        yield

    async def stop_following(app: web.Application) -> None:
        followed: set[podlogs.Follow] = app[LIVE]
        for follow in list(followed):
            follow.close()

    app[LIVE] = set()
    app[LIVE_BY] = Counter()
    app[DOWNLOADS] = asyncio.Semaphore(DOWNLOADS_AT_ONCE)
    app.cleanup_ctx.append(sessions)
    app.on_shutdown.append(stop_following)
    app.router.add_get("/runs", guarded(list_runs))
    app.router.add_get("/runs/{run_id}", guarded(run_page))
    app.router.add_get("/runs/{run_id}/pods/{pod}/containers/{container}/live", guarded(live_log))
    app.router.add_get("/runs/{run_id}/pods/{pod}/containers/{container}/log", guarded(download_log))
    app.router.add_get("/login", guarded(signin.login))
    app.router.add_get("/auth/callback", guarded(signin.callback))
    app.router.add_post("/logout", guarded(signin.logout))
    app.router.add_get("/static/{name}", static)
