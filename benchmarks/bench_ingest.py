"""Webhook ingest: signed push deliveries through flops-bot's `/webhook`, next to a bare aiohttp
handler (the ceiling of the stack) and a minimal Probot app (the framework users would otherwise pick).

Run: .venv/bin/python benchmarks/bench_ingest.py [--seconds 4] [--rounds 3]
Needs: `wrk` (Debian: apt-get install -y wrk) and node/npm (Probot is installed into
benchmarks/probot/node_modules on first run).

What is measured: `wrk` (one thread, pinned to CPU 1) sends the recorded push payload
(tests/payloads/push.json), HMAC SHA-256 signed as GitHub signs it, each request with its own
`X-GitHub-Delivery` (so dedupe never short-circuits), at 1 and 100 concurrent connections, to each
server (pinned to CPU 0):
- flops-bot: `bot.__main__.build_app` with the real settings from the environment, against the test
  bed's GitHub, Kubernetes and S3 servers, served by aiohttp as `python -m bot serve` serves it. The
  request path is the real one: read the body, verify the signature (constant time, every secret),
  parse, dedupe, route (gidgethub Router), enqueue on the bounded queue, 202. Only the background
  step after the queue is replaced by a no-op (workers still take, lock and finish every event), so
  the GitHub calls a push makes later do not share the core with the intake being measured.
- bare aiohttp: a POST handler that returns 200 and nothing else, served the same way.
- Probot 14: `probot run app.js` (verifies the same signature, routes `push` to an empty handler),
  LOG_LEVEL=warn so neither side logs per request.
The servers and wrk talk only over 127.0.0.1; each run is bounded by --seconds.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

HERE = Path(__file__).resolve().parent
PROBOT_DIR = HERE / "probot"
SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = (1, 100)
TARGET_VS_BARE = 0.7
TARGET_VS_PROBOT = 1.5
TARGET_P99_MS = 20.0

LUA = """\
local f = assert(io.open("%(body)s", "rb"))
local body = f:read("*all")
f:close()
wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "push"
wrk.headers["X-Hub-Signature-256"] = "%(signature)s"
wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
local prefix = "%(prefix)s"
local counter = 0
request = function()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = prefix .. "-" .. counter
  return wrk.format(nil, "/webhook")
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


# --- the servers (run as subprocesses of this script) ------------------------------------------------

def serve_bot(port: int) -> None:
    """flops-bot as `python -m bot serve` runs it (settings, JSON logs, aiohttp), on 127.0.0.1."""
    from aiohttp import web

    from bot.__main__ import build_app, configure_logging
    from bot.service.app import DISPATCHER
    from bot.platform.settings import from_env

    settings = from_env()
    configure_logging(settings)  # as `serve` does: LOG_LEVEL from the environment, default INFO
    app = build_app(settings)

    async def processing_off(app: web.Application) -> None:
        async def discard(event: Any) -> None:
            return None
        app[DISPATCHER].process = discard  # type: ignore[method-assign]  # the background step only

    if os.environ.get("BENCH_GC_TRACE"):
        app.on_startup.append(trace_gc_pauses(Path(os.environ["BENCH_GC_TRACE"])))
    app.on_startup.append(processing_off)  # runs after build_app's own start-up (cleanup_ctx is first)
    web.run_app(app, host="127.0.0.1", port=port, print=None, shutdown_timeout=5)


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


def serve_bare(port: int) -> None:
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/webhook", ok)
    web.run_app(app, host="127.0.0.1", port=port, print=None, shutdown_timeout=5)


def ensure_probot() -> Path:
    """Install the pinned Probot into benchmarks/probot/node_modules (once); the CLI's path."""
    cli = PROBOT_DIR / "node_modules" / "probot" / "bin" / "probot.js"
    if not cli.exists():
        if not shutil.which("npm"):
            raise SystemExit("bench_ingest: npm not found; install node and npm to compare with Probot")
        print("installing probot into benchmarks/probot/node_modules ...", flush=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=PROBOT_DIR,
                       check=True, timeout=300)
    return cli


# --- the load ------------------------------------------------------------------------------------------

@dataclass
class Run:
    server: str
    connections: int
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    wrk_cpu: float  # share of one core wrk used
    server_cpu: float  # share of one core the server used

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


async def wrk(server: str, pid: int, port: int, connections: int, seconds: float, script: Path) -> Run:
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_server = harness.cpu_seconds(pid)
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
        "-s", str(script), f"http://127.0.0.1:{port}/webhook",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), seconds + 30)
    server_cpu = harness.cpu_seconds(pid) - before_server
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^BENCH (.+)$", out.decode(), re.M)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode()[-500:]} {out.decode()[-500:]}")
    data = json.loads(match.group(1))
    elapsed = data["duration_us"] / 1e6
    wrk_cpu = (after_children.ru_utime + after_children.ru_stime - before_children.ru_utime
               - before_children.ru_stime)
    return Run(server, connections, data["requests"], elapsed, data["non_2xx"], data["socket_errors"],
               data["p50_us"] / 1000, data["p90_us"] / 1000, data["p99_us"] / 1000, data["max_us"] / 1000,
               wrk_cpu / elapsed, server_cpu / elapsed)


def write_script(workdir: Path, body_path: Path, signature: str) -> Path:
    script = workdir / f"push-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(LUA % {"body": body_path, "signature": signature, "prefix": uuid.uuid4()})
    return script


async def accepted_pushes(port: int) -> int:
    """flops_webhook_deliveries_total{event="push",outcome="accepted"} from the bot's /metrics."""
    import aiohttp
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    match = re.search(r'^flops_webhook_deliveries_total\{event="push",outcome="accepted"\} (\d+)', text, re.M)
    return int(match.group(1)) if match else 0


# --- the run --------------------------------------------------------------------------------------------

async def start_server(name: str, port: int, env: dict[str, str], probot_cli: Path | None,
                       logdir: Path) -> asyncio.subprocess.Process:
    log = open(logdir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
    pin = ["taskset", "-c", str(SERVER_CPU)]
    if name == "probot":
        assert probot_cli is not None
        node_env = {**os.environ, "APP_ID": env["GITHUB_APP_ID"],
                    "PRIVATE_KEY": Path(env["GITHUB_PRIVATE_KEY_PATH"]).read_text(), "WEBHOOK_SECRET": harness.SECRET,
                    "WEBHOOK_PATH": "/webhook", "HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "warn",
                    "NODE_ENV": "production"}
        cmd = [*pin, "node", str(probot_cli), "run", "./app.js"]
        proc = await asyncio.create_subprocess_exec(*cmd, cwd=PROBOT_DIR, env=node_env, stdout=log, stderr=log)
    else:
        cmd = [*pin, sys.executable, __file__, "--serve", name, "--port", str(port)]
        trace = {"BENCH_GC_TRACE": str(logdir / "gc.json")} if name == "bot" else {}
        proc = await asyncio.create_subprocess_exec(*cmd, env={**os.environ, **env, **trace}, stdout=log, stderr=log)
    await harness.wait_port("127.0.0.1", port, 60, proc)
    return proc


async def stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def main(seconds: float, rounds: int, warmup: float, profiled: bool) -> int:
    if not shutil.which("wrk"):
        print("bench_ingest: wrk not found (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    probot_cli = ensure_probot()
    print(f"machine: {harness.machine()}")
    body = json.dumps(harness.payload("push")).encode()
    async with harness.test_bed("ingest") as bed:
        bed.github.add_installation(harness.INSTALLATION, "Codertocat", [harness.REPO])
        body_path = bed.workdir / "push.json"
        body_path.write_bytes(body)
        signature = harness.sign(body)
        servers: dict[str, tuple[asyncio.subprocess.Process, int]] = {}
        try:
            for name in ("bare", "bot", "probot"):
                port = harness.free_port()
                servers[name] = (await start_server(name, port, bed.env, probot_cli, bed.workdir), port)
            for name, (proc, port) in servers.items():  # warm-up (JIT, caches, connection pools): not recorded
                await wrk(name, proc.pid, port, 100, warmup, write_script(bed.workdir, body_path, signature))
            runs: list[Run] = []
            accepted_before = await accepted_pushes(servers["bot"][1])
            for _ in range(rounds):  # interleaved, so a noisy neighbour hits every server alike
                for connections in CONNECTIONS:
                    for name, (proc, port) in servers.items():
                        runs.append(await wrk(name, proc.pid, port, connections, seconds,
                                              write_script(bed.workdir, body_path, signature)))
            accepted = await accepted_pushes(servers["bot"][1]) - accepted_before
            profile = await profile_bot(servers["bot"], bed.workdir, body_path, signature, seconds) if profiled else None
        finally:
            for proc, _ in servers.values():
                await stop_server(proc)
        bot_responses = sum(r.requests for r in runs if r.server == "bot")
        report(runs, len(body), accepted, bot_responses)
        gc_file = bed.workdir / "gc.json"
        if gc_file.exists():
            print("\ngarbage collections in flops-bot over all runs (count, total ms, longest ms): " + ", ".join(
                f"gen{g} {n} / {total:.0f} / {longest:.1f}" for g, (n, total, longest) in json.loads(gc_file.read_text()).items()))
        if profile:
            print(f"\nwhere flops-bot spends its time at 100 connections (py-spy, an extra run):\n{profile}")
    return 0


async def profile_bot(server: tuple[asyncio.subprocess.Process, int], workdir: Path, body_path: Path,
                      signature: str, seconds: float) -> str | None:
    proc, port = server
    load = asyncio.create_task(wrk("bot", proc.pid, port, 100, seconds + 1,
                                   write_script(workdir, body_path, signature)))
    stacks = await harness.py_spy(proc.pid, seconds, workdir / "bot.stacks")
    await load
    return harness.summarize_stacks(stacks, top=25) if stacks else "(py-spy not installed: .venv/bin/pip install py-spy)"


def report(runs: list[Run], size: int, accepted: int, bot_responses: int) -> None:
    print(f"\npush delivery: {size} bytes (tests/payloads/push.json), signed HMAC SHA-256; "
          f"{len({r.connections for r in runs})} concurrencies x {len({r.server for r in runs})} servers, "
          f"median of {len(runs) // 6} rounds of {runs[0].seconds:.1f} s each")
    print(f"{'server':<8} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'non-2xx':>8} {'server CPU':>10} {'wrk CPU':>8}")
    summary: dict[tuple[str, int], dict[str, float]] = {}
    for connections in CONNECTIONS:
        for server in ("bare", "bot", "probot"):
            mine = [r for r in runs if r.server == server and r.connections == connections]
            fig = {"rps": harness.median([r.rps for r in mine]), "p50": harness.median([r.p50_ms for r in mine]),
                   "p90": harness.median([r.p90_ms for r in mine]), "p99": harness.median([r.p99_ms for r in mine]),
                   "max": max(r.max_ms for r in mine), "bad": sum(r.non_2xx + r.socket_errors for r in mine),
                   "cpu": harness.median([r.server_cpu for r in mine]), "wrk": harness.median([r.wrk_cpu for r in mine])}
            summary[(server, connections)] = fig
            label = {"bare": "aiohttp", "bot": "flops", "probot": "probot"}[server]
            print(f"{label:<8} {connections:>5} {fig['rps']:>9.0f} {fig['p50']:>8.2f} {fig['p90']:>8.2f} "
                  f"{fig['p99']:>8.2f} {fig['max']:>8.2f} {int(fig['bad']):>8} {fig['cpu']:>9.0%} {fig['wrk']:>8.0%}")
    print(f"\nflops-bot accepted {accepted} push deliveries (queued, 202) for {bot_responses} responses wrk "
          "counted (in-flight requests at the end of each run are accepted but not counted by wrk)")
    print("\nratios (req/s):")
    for connections in CONNECTIONS:
        bot = summary[("bot", connections)]
        vs_bare = bot["rps"] / summary[("bare", connections)]["rps"]
        vs_probot = bot["rps"] / summary[("probot", connections)]["rps"]
        print(f"  {connections:>3} conn: flops/aiohttp {vs_bare:.2f}x (target >= {TARGET_VS_BARE}x: "
              f"{harness.verdict(vs_bare >= TARGET_VS_BARE)}), flops/probot {vs_probot:.2f}x "
              f"(target >= {TARGET_VS_PROBOT}x: {harness.verdict(vs_probot >= TARGET_VS_PROBOT)})")
    p99 = summary[("bot", 100)]["p99"]
    print(f"  flops p99 at 100 conn: {p99:.2f} ms (target < {TARGET_P99_MS:.0f} ms: "
          f"{harness.verdict(p99 < TARGET_P99_MS)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded warm-up per server")
    parser.add_argument("--profile", action="store_true", help="also sample the bot with py-spy at 100 connections")
    parser.add_argument("--serve", choices=["bot", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve == "bot":
        serve_bot(args.port)
    elif args.serve == "bare":
        serve_bare(args.port)
    else:
        sys.exit(asyncio.run(main(args.seconds, args.rounds, args.warmup, args.profile)))
