"""`bench_ingest.py --with-processing`: how many deliveries per second flops-bot works off with
processing included, and what happens past that.

The bot (`ingest_servers.py bot-processing`, pinned to CPU 0) runs against the test bed (GitHub and
Kubernetes emulators in this process, SeaweedFS in its own); `wrk` (CPU 1) sends signed deliveries
at 100 connections for `--seconds`, then the run waits until the bot has worked off its queue:
- push: pushes to BRANCHES branches of a repo building two images (flops.yml read, two check runs,
  the source tarball uploaded to S3, two Kaniko Jobs created, earlier builds superseded); the same
  BRANCHES commits again and again, so after the first round the bot finds their builds and does
  not create them twice (what GitHub's redeliveries look like);
- pull_request: `opened` for BRANCHES pull requests (flops.yml read at the base, the pull request's
  earlier Jobs listed and cancelled; its builds come from the push of its branch).
Deliveries rotate over the branches / pull requests, so the bot's per-key ordering lets its workers
run in parallel. What the queue (FLOPS_QUEUE_SIZE) cannot take is answered 503.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import bench_ingest
import flows
import harness

BRANCHES = 20
CONFIG = flows.TWO_IMAGES.replace("branches: [master]", "branches: [" + ", ".join(
    f"bench-{i}" for i in range(BRANCHES)) + "]")


def push_bodies(bed: harness.Bed) -> list[dict[str, Any]]:
    bodies = []
    for i in range(BRANCHES):
        branch = f"bench-{i}"
        base = bed.github.branch_sha(flows.REPO, flows.MAIN)
        sha = bed.github.commit(flows.REPO, branch, {"server/app.py": f"print({i})\n"}, parents=[base])
        data = harness.payload("push")
        data.update(ref=f"refs/heads/{branch}", before=base, after=sha, deleted=False, created=False)
        data["installation"]["id"] = harness.INSTALLATION
        data["repository"]["default_branch"] = flows.MAIN
        data["head_commit"].update(id=sha, timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        data["commits"] = [{**data["commits"][0], "id": sha, "added": [], "removed": [],
                            "modified": ["server/app.py", "client/main.py"]}]
        bodies.append(data)
    return bodies


def pull_bodies(bed: harness.Bed) -> list[dict[str, Any]]:
    bodies = []
    for i in range(BRANCHES):
        number, branch = 100 + i, f"feature-{i}"
        base = bed.github.branch_sha(flows.REPO, flows.MAIN)
        head = bed.github.commit(flows.REPO, branch, {"client/main.py": f"print({i})\n"}, parents=[base])
        bed.github.add_pull(flows.REPO, number, head, base_branch=flows.MAIN, head_ref=branch, user="octocat")
        data = harness.payload("pull_request.opened")
        data["number"] = number
        data["pull_request"].update(number=number, state="open")
        data["pull_request"]["head"].update(sha=head, ref=branch)
        data["pull_request"]["base"].update(sha=base, ref=flows.MAIN)
        data["installation"]["id"] = harness.INSTALLATION
        bodies.append(data)
    return bodies


async def scrape(port: int) -> dict[str, float]:
    import aiohttp
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found: dict[str, float] = {}
    for match in re.finditer(r'^flops_webhook_deliveries_total\{event="(\w+)",outcome="(\w+)"\} (\S+)', text, re.M):
        found[f"{match[1]}/{match[2]}"] = float(match[3])
    depth = re.search(r"^flops_queue_depth (\S+)", text, re.M)
    found["depth"] = float(depth[1]) if depth else 0.0
    return found


async def one(event: str, bed: harness.Bed, server: tuple[Any, int], seconds: float) -> str:
    proc, port = server
    bodies = push_bodies(bed) if event == "push" else pull_bodies(bed)
    paths = []
    for i, data in enumerate(bodies):
        paths.append(bed.workdir / f"{event}-{i}.json")
        paths[-1].write_bytes(json.dumps(data, separators=(",", ":")).encode())
    before = await scrape(port)
    started = time.monotonic()
    run = await bench_ingest.wrk("bot", event, proc.pid, port, 100, seconds,
                                 bench_ingest.write_script(bed.workdir, event, paths))
    load_over = time.monotonic()
    after = await scrape(port)
    while after["depth"] > 0 and time.monotonic() - load_over < 300:
        await asyncio.sleep(0.5)  # a benchmark, not a test: poll the bot's own gauge until its queue is empty
        after = await scrape(port)
    drained = time.monotonic()
    got = {key: int(after.get(key, 0) - before.get(key, 0)) for key in after if key.startswith(event + "/")}
    done = got.get(f"{event}/processed", 0) + got.get(f"{event}/failed", 0)
    return (f"{event:<12} {run.requests:>7} answered in {run.seconds:.1f} s ({run.rps:,.0f}/s, p99 {run.p99_ms:.1f} ms), "
            f"{run.non_2xx} non-2xx; bot: {got}; {done} worked off in {drained - started:.1f} s = "
            f"**{done / (drained - started):.1f} deliveries/s** (queue empty {drained - load_over:.1f} s after the load)")


async def main(seconds: float) -> int:
    print(f"machine: {harness.machine()}")
    print(f"load average at start: {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
    lines = []
    async with harness.test_bed("ingest-processing") as bed:
        flows.set_up_push(bed)
        bed.github.commit(flows.REPO, flows.MAIN, {".github/flops.yml": CONFIG})
        port = harness.free_port()
        env = {**bed.env, "LOG_LEVEL": os.environ.get("LOG_LEVEL", "INFO")}
        proc = await bench_ingest.start_server("bot-processing", port, env, None, bed.workdir)
        try:
            for event in ("push", "pull_request"):
                lines.append(await one(event, bed, (proc, port), seconds))
        finally:
            await bench_ingest.stop_server(proc)
        jobs = len(bed.kube.list("jobs", harness.NAMESPACE))
        calls = len(bed.github.calls)
    print(f"\n100 connections for {seconds:.0f} s per event, {BRANCHES} branches / pull requests in turn; "
          f"FLOPS_QUEUE_SIZE and FLOPS_WORKERS at their defaults (1000, 8)")
    for line in lines:
        print("  " + line)
    print(f"  in all: {jobs} Jobs in the namespace, {calls} GitHub API calls answered by the emulator")
    print("  past the queue's capacity deliveries are answered 503 (queue_full): GitHub does not retry them by "
          "itself; the redelivery loop (FLOPS_REDELIVER_INTERVAL) asks for each again")
    return 0
