"""The webhook proxy (issue #25 part 5): how long a delivery relayed through a smee.io-style channel
takes from GitHub's POST to the channel until the bot's intake holds its verified bytes.

Run: .venv/bin/python benchmarks/bench_webhook_proxy.py [--runs N]

A smee.io stand-in (tests/emulators/smee.py) on 127.0.0.1 relays signed push payloads of growing
size (100 KB .. 25 MB, GitHub's cap); `WebhookProxy` reads the stream, re-serialises the body as
smee-client does (`js_stringify`) and hands it to an intake stub that checks the signature as the
real intake does (`verify_signature`). Baseline in the same run: the same bytes POSTed directly to
a bare aiohttp handler that reads and verifies them (what `POST /webhook` costs without the relay).
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import statistics
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.platform.metrics import Metrics  # noqa: E402
from bot.platform.retry import RetryPolicy  # noqa: E402
from bot.service.intake import verify_signature  # noqa: E402
from bot.service.webhook_proxy import WebhookProxy  # noqa: E402
from tests.emulators.smee import SmeeChannel  # noqa: E402

SECRET = "bench-secret"
SIZES = (100_000, 1_000_000, 8_000_000, 25_000_000)


def signed(size: int) -> tuple[bytes, dict[str, str]]:
    payload = json.loads((Path(__file__).resolve().parent.parent / "tests/payloads/push.json").read_text())
    payload["head_commit"]["message"] = "x" * max(0, size - 8_000)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {"X-GitHub-Event": "push", "X-GitHub-Delivery": "bench", "Content-Type": "application/json",
                  "X-Hub-Signature-256": signature}


async def relayed(smee: SmeeChannel, arrived: asyncio.Queue[bool], body: bytes, headers: dict[str, str],
                  session: aiohttp.ClientSession) -> float:
    start = time.perf_counter()
    async with session.post(smee.url, data=body, headers=headers) as response:
        assert response.status == 200
    assert await arrived.get(), "the relayed delivery failed its signature check"
    return time.perf_counter() - start


async def direct(url: str, body: bytes, headers: dict[str, str], session: aiohttp.ClientSession) -> float:
    start = time.perf_counter()
    async with session.post(url, data=body, headers=headers) as response:
        assert response.status == 202
    return time.perf_counter() - start


async def bare_server() -> tuple[web.AppRunner, str]:
    async def handler(request: web.Request) -> web.Response:
        body = await request.read()
        ok = verify_signature(body, request.headers.get("X-Hub-Signature-256"), (SECRET,))
        return web.Response(status=202 if ok else 401)

    app = web.Application(client_max_size=30 << 20)
    app.router.add_post("/webhook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/webhook"  # type: ignore[union-attr]


async def main(runs: int) -> None:
    smee = SmeeChannel(retry_ms=None)
    await smee.start()
    arrived: asyncio.Queue[bool] = asyncio.Queue()

    def deliver(headers: Mapping[str, str], body: bytes) -> int:
        arrived.put_nowait(verify_signature(body, headers.get("X-Hub-Signature-256"), (SECRET,)))
        return 202

    runner, url = await bare_server()
    async with aiohttp.ClientSession() as session:
        proxy = WebhookProxy(smee.url, session, deliver, Metrics(), RetryPolicy())
        reading = asyncio.create_task(proxy.run())
        while not smee.readers:
            await asyncio.sleep(0.01)
        print(f"{'payload':>10} {'relayed (median ms)':>20} {'direct (median ms)':>19} {'ratio':>6}")
        for size in SIZES:
            body, headers = signed(size)
            via = [await relayed(smee, arrived, body, headers, session) for _ in range(runs)]
            bare = [await direct(url, body, headers, session) for _ in range(runs)]
            r, d = statistics.median(via) * 1000, statistics.median(bare) * 1000
            print(f"{len(body) / 1e6:>8.2f}MB {r:>20.1f} {d:>19.1f} {r / d:>6.1f}x")
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    await runner.cleanup()
    await smee.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    asyncio.run(main(parser.parse_args().runs))
