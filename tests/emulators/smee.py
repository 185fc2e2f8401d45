"""A smee.io stand-in over real HTTP (aiohttp): the webhook proxy's channel, as probot/smee.io serves it.

`POST /<channel>` (what GitHub calls) relays the delivery to every reader of the channel as one SSE
`message` whose data is JSON: the request's headers under lowercase names, `body` (the payload as
parsed JSON), `query` and `timestamp`. `GET /<channel>` with exactly `Accept: text/event-stream`
streams: `retry:` (when set), `event: ready` at once, then the relayed messages, each with an `id:`.

Test knobs: `drop()` ends every open stream (the client must reconnect), `down()` / `up()` refuse
or accept new streams (503), `connects` and `last_event_ids` record what readers sent.
"""
from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web


class SmeeChannel:
    def __init__(self, channel: str = "flopsDevChannel1", retry_ms: int | None = 10) -> None:
        self.channel = channel
        self.retry_ms = retry_ms
        self.url = ""
        self.connects = 0
        self.last_event_ids: list[str | None] = []
        self._count = 0
        self._streams: list[tuple[web.StreamResponse, asyncio.Event]] = []
        self._refusing = False
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=30 * 1024 * 1024)
        app.router.add_get("/{channel}", self._stream)
        app.router.add_post("/{channel}", self._relay)
        # a reader that goes away ends its stream here as on smee.io (`readers` drops at once)
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/{self.channel}"
        return self.url

    async def stop(self) -> None:
        self.drop()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def readers(self) -> int:
        return len(self._streams)

    def drop(self) -> None:
        for _, closed in self._streams:
            closed.set()

    def down(self) -> None:
        self._refusing = True
        self.drop()

    def up(self) -> None:
        self._refusing = False

    async def send_raw(self, text: str) -> None:
        """Write `text` as is to every open stream (malformed events, comments)."""
        for response, closed in list(self._streams):
            try:
                await response.write(text.encode())
            except (ConnectionError, RuntimeError):  # that reader went away
                closed.set()

    async def publish(self, payload: dict[str, Any], event: str | None = None) -> None:
        self._count += 1
        named = f"event: {event}\n" if event else ""
        await self.send_raw(f"id: {self._count}\n{named}data: {json.dumps(payload)}\n\n")

    async def _relay(self, request: web.Request) -> web.Response:
        if request.match_info["channel"] != self.channel:
            return web.Response(status=404)
        body = json.loads(await request.read())
        headers = {name.lower(): value for name, value in request.headers.items()}
        await self.publish({**headers, "body": body, "query": dict(request.query),
                            "timestamp": int(time.time() * 1000)})
        return web.Response(status=200)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["channel"] != self.channel or request.headers.get("Accept") != "text/event-stream":
            return web.Response(status=404 if request.match_info["channel"] != self.channel else 200,
                                text="<html>webhooks</html>", content_type="text/html")
        if self._refusing:
            return web.Response(status=503, text="down")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        self.connects += 1
        self.last_event_ids.append(request.headers.get("Last-Event-ID"))
        closed = asyncio.Event()
        self._streams.append((response, closed))
        try:
            self._count += 1
            retry = f"retry: {self.retry_ms}\n" if self.retry_ms is not None else ""
            await response.write(f"{retry}id: {self._count}\nevent: ready\ndata: {{}}\n\n".encode())
            await closed.wait()
        finally:
            self._streams.remove((response, closed))
        return response
