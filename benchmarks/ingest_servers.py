"""The servers `bench_ingest.py` runs, each in a process of its own pinned to one core:
`python benchmarks/ingest_servers.py {bot,bot-processing,bare,hmac}[-uvloop] PORT`.

- bot: flops-bot as `python -m bot serve` runs it (settings from the environment, JSON logs at
  LOG_LEVEL, default INFO), the background step after the queue replaced by a no-op.
- bot-processing: the same, processing included (the GitHub calls, Jobs and uploads a delivery makes).
- bare: an aiohttp POST handler answering 200 without reading the body (the stack's ceiling), on
  asyncio's own loop; bare-uvloop: the same on uvloop, the loop `serve` runs on.
- hmac, hmac-uvloop: an aiohttp handler that reads the body and checks its HMAC SHA-256 signature,
  then answers 200 (the fairer ceiling: the work no verified intake can skip).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def serve_bot(port: int, processing: bool) -> None:
    from aiohttp import web

    from bot.__main__ import build_app, configure_logging, event_loop
    from bot.platform.settings import from_env
    from bot.service.app import DISPATCHER

    settings = from_env()
    configure_logging(settings)  # as `serve` does: LOG_LEVEL from the environment, default INFO
    app = build_app(settings)

    async def processing_off(app: web.Application) -> None:
        async def discard(event: Any) -> None:
            return None
        app[DISPATCHER].process = discard  # type: ignore[method-assign]  # the background step only

    if os.environ.get("BENCH_GC_TRACE"):
        app.on_startup.append(trace_gc_pauses(Path(os.environ["BENCH_GC_TRACE"])))
    if os.environ.get("BENCH_GC_THRESHOLD"):  # experiments only: gen0's threshold (CPython's default 700)
        import gc
        gc.set_threshold(int(os.environ["BENCH_GC_THRESHOLD"]), 10, 10)
    if not processing:
        app.on_startup.append(processing_off)  # runs after build_app's own start-up (cleanup_ctx is first)
    web.run_app(app, host="127.0.0.1", port=port, print=None, shutdown_timeout=5, loop=event_loop())  # as `run`


def trace_gc_pauses(out: Path) -> Any:
    """A start-up hook: from then on, time every garbage collection; write the totals at exit."""
    import atexit
    import gc

    pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
    began = [0.0]

    def timed(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        else:
            pauses[info["generation"]].append(time.perf_counter() - began[0])

    def write() -> None:
        out.write_text(json.dumps({str(g): [len(v), sum(v) * 1000, max(v, default=0) * 1000]
                                   for g, v in pauses.items()}))

    async def start(app: Any) -> None:
        gc.callbacks.append(timed)
        atexit.register(write)
    return start


def serve_bare(port: int, verify: bool, uvloop: bool) -> None:
    from aiohttp import web

    secret = os.environ.get("GITHUB_WEBHOOK_SECRET", "").encode()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def verified(request: web.Request) -> web.Response:
        body = await request.read()
        given = request.headers.get("X-Hub-Signature-256", "")
        expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given, expected):
            return web.Response(status=401, text="bad signature")
        return web.Response(text="ok")

    app = web.Application(client_max_size=25 * 1024 * 1024)
    app.router.add_post("/webhook", verified if verify else ok)
    loop = None
    if uvloop:  # the same loop as flops-bot's `serve`
        import uvloop as uv
        loop = uv.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, print=None, shutdown_timeout=5, loop=loop)


if __name__ == "__main__":
    name, port_text = sys.argv[1], sys.argv[2]
    if name in ("bot", "bot-processing"):
        serve_bot(int(port_text), processing=name == "bot-processing")
    else:
        serve_bare(int(port_text), verify=name.startswith("hmac"), uvloop=name.endswith("-uvloop"))
