"""Unsigned floods: 50 concurrent 24 MiB POSTs with a forged signature to `python -m bot serve`, and the
bot's peak RSS (issue 16, finding 1: the pod's limit is 512 Mi, so the peak must stay under 256 MiB).

Run: .venv/bin/python benchmarks/bench_unsigned_rss.py [--requests 50] [--mib 24]

What is measured: the bot runs as `python -m bot serve` (its own process, the environment the README
documents, FLOPS_UNVERIFIED_BYTES left at its default) against the test bed's GitHub, Kubernetes and
S3 servers. Its RSS is read from /proc/<pid>/status (VmRSS at start, VmHWM = the peak) before and
after the flood. Each flood request announces its whole Content-Length and carries a signature made
with the wrong secret, the costliest kind of unsigned request: the bot has to read it to know. While
the flood runs, a real push signed with the App's secret is delivered; it must be accepted and
processed (the bot reads its flops.yml from the GitHub emulator). Everything talks over 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

LIMIT_MIB = 256  # half the 512 Mi pod limit (deploy/base/deployment.yaml)
FORGED = "sha256=" + "0" * 64


async def start_bot(bed: harness.Bed, port: int) -> subprocess.Popen[bytes]:
    env = {"PATH": os.environ["PATH"], "HOME": str(bed.workdir), **bed.env, "PORT": str(port)}
    env.pop("FLOPS_BUCKET")  # as the README documents it: every default unset
    log = open(bed.workdir / "bot.log", "wb")  # noqa: SIM115 - the process keeps it
    process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=harness.ROOT, env=env,
                               stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    import aiohttp
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the bot exited:\n{(bed.workdir / 'bot.log').read_text()}")
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the bot was not ready within 60 s")


async def flood(session: object, url: str, body: bytes) -> str:
    """One unsigned POST: its status, or how the connection ended when the bot closed it first."""
    import aiohttp
    assert isinstance(session, aiohttp.ClientSession)
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
               "Content-Type": "application/json", "X-Hub-Signature-256": FORGED}
    try:
        async with session.post(url, data=body, headers=headers) as response:
            await response.read()
            return str(response.status)
    except aiohttp.ClientError as exc:
        return f"closed ({type(exc).__name__})"


async def signed_push(session: object, bed: harness.Bed, url: str) -> int:
    import aiohttp
    assert isinstance(session, aiohttp.ClientSession)
    bed.github.add_repo(harness.REPO, default_branch="master")
    sha = bed.github.commit(harness.REPO, "master", {"README.md": "hello"})
    data = harness.payload("push")
    data["after"] = data["head_commit"]["id"] = sha
    data["installation"]["id"] = harness.INSTALLATION
    body = json.dumps(data).encode()
    headers = {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
               "Content-Type": "application/json", "X-Hub-Signature-256": harness.sign(body)}
    async with session.post(url, data=body, headers=headers) as response:
        return response.status


async def metric_lines(session: object, url: str) -> list[str]:
    import aiohttp
    assert isinstance(session, aiohttp.ClientSession)
    async with session.get(url) as response:
        text = await response.text()
    return re.findall(r"^flops_webhook_deliveries_total\{.*$", text, re.M)


async def processed(session: object, url: str, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any('event="push",outcome="processed"' in line for line in await metric_lines(session, url)):
            return True
        await asyncio.sleep(0.1)
    return False


async def main(requests: int, mib: int) -> int:
    import aiohttp
    print(f"machine: {harness.machine()}")
    body = b"{" + b" " * (mib * 1024 * 1024 - 2) + b"}"
    async with harness.test_bed("unsigned") as bed:
        bed.github.add_installation(harness.INSTALLATION, "Codertocat", [harness.REPO])
        port = harness.free_port()
        bot = await start_bot(bed, port)
        base = f"http://127.0.0.1:{port}"
        try:
            start_rss, start_peak = harness.rss_mb(bot.pid)
            connector = aiohttp.TCPConnector(limit=0, force_close=True)
            async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
                began = time.monotonic()
                floods = [asyncio.create_task(flood(session, base + "/webhook", body)) for _ in range(requests)]
                push_status = await signed_push(session, bed, base + "/webhook")
                outcomes = Counter(await asyncio.gather(*floods))
                elapsed = time.monotonic() - began
                push_processed = await processed(session, base + "/metrics")
                rss, peak = harness.rss_mb(bot.pid)
                lines = await metric_lines(session, base + "/metrics")
        finally:
            bot.terminate()
            bot.wait(timeout=40)
    config_reads = len(bed.github.calls_to("GET", r"/contents/\.github/flops\.yml"))
    ok = peak < LIMIT_MIB * 1.048576 and push_status == 202 and push_processed
    print(f"\n{requests} concurrent POSTs of {mib} MiB with a forged signature to `python -m bot serve` "
          f"(FLOPS_UNVERIFIED_BYTES default 64 MiB), {elapsed:.1f} s")
    print(f"  bot RSS at start: {start_rss:.1f} MB (peak so far {start_peak:.1f} MB)")
    print(f"  bot peak RSS (VmHWM) after the flood: {peak:.1f} MB, +{peak - start_peak:.1f} MB over its start; "
          f"RSS now {rss:.1f} MB; limit {LIMIT_MIB} MiB ({LIMIT_MIB * 1.048576:.0f} MB)")
    print(f"  what the flood got: {dict(sorted(outcomes.items()))}")
    print(f"  signed push during the flood: HTTP {push_status}, processed: {push_processed} "
          f"(flops.yml reads on the GitHub emulator: {config_reads})")
    print("  /metrics: " + "; ".join(line.replace("flops_webhook_deliveries_total", "") for line in lines))
    print(f"  peak RSS < {LIMIT_MIB} MiB and the signed push processed: {harness.verdict(ok)}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--mib", type=int, default=24)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.requests, args.mib)))
