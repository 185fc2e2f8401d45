"""Webhook ingest: signed ping and push deliveries through flops-bot's `/webhook`, side by side with
a bare aiohttp handler (the ceiling of the stack), an aiohttp handler that reads and HMACs the body
(the fairer ceiling) and a minimal Probot app (the framework users would otherwise pick).

Run: .venv/bin/python benchmarks/bench_ingest.py [--seconds 4] [--rounds 3] [--profile] [--no-probot]
     .venv/bin/python benchmarks/bench_ingest.py --with-processing [--seconds 4]
Needs: `wrk` (Debian: apt-get install -y wrk) and node/npm (Probot is installed into
benchmarks/probot/node_modules on first run; `--no-probot` without them).

What is measured: `wrk` (one thread, pinned to CPU 1) sends a recorded octokit payload
(tests/payloads/ping.json, push.json), HMAC SHA-256 signed as GitHub signs it, each request with its
own `X-GitHub-Delivery` (so dedupe never short-circuits), at 1 and 100 concurrent connections, to
each server (pinned to CPU 0; `ingest_servers.py` says what each one is):
- flops-bot: `bot.__main__.build_app` with the real settings from the environment, against the test
  bed's GitHub, Kubernetes and S3 servers, served by aiohttp as `python -m bot serve` serves it, JSON
  logs at INFO. The request path is the real one: read the body, verify the signature (constant time,
  every secret), parse, dedupe, route (gidgethub Router), enqueue on the bounded queue, 202. Only the
  background step after the queue is replaced by a no-op (workers still take, lock and finish every
  event), so the GitHub calls a push makes later do not share the core with the intake being measured.
- bare aiohttp: a POST handler that returns 200 without reading the body; aiohttp + HMAC: reads the
  body and checks its signature, then 200; each on asyncio's own loop and on uvloop (the loop
  `serve` runs the bot on).
- Probot 14: `probot run app.js` (verifies the same signature, routes `push` to an empty handler),
  LOG_LEVEL=warn so neither side logs per request.
`--with-processing` (ingest_processing.py) measures instead what the bot works off with processing
included. The servers and wrk talk only over 127.0.0.1; each run is bounded by --seconds.
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
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

HERE = Path(__file__).resolve().parent
PROBOT_DIR = HERE / "probot"
SERVERS_PY = HERE / "ingest_servers.py"
SERVER_CPU, LOAD_CPU = 0, 1
CONNECTIONS = (1, 100)
EVENTS = ("ping", "push")
SERVERS = ("bare", "bare-uvloop", "hmac", "hmac-uvloop", "probot", "bot")
LABELS = {"bare": "aiohttp", "bare-uvloop": "aio/uv", "hmac": "aio+hmac", "hmac-uvloop": "aio+h/uv", "probot": "probot",
          "bot": "flops"}
TARGET_VS_BARE = 0.7
TARGET_VS_PROBOT = 1.5
TARGET_P99_MS = 10.0

LUA = """\
local bodies, signatures = {}, {}
for i, item in ipairs(%(items)s) do
  local f = assert(io.open(item[1], "rb"))
  bodies[i] = f:read("*all")
  f:close()
  signatures[i] = item[2]
end
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-GitHub-Event"] = "%(event)s"
wrk.headers["User-Agent"] = "GitHub-Hookshot/bench"
local prefix = "%(prefix)s"
local counter = 0
request = function()
  counter = counter + 1
  local i = (counter %% #bodies) + 1
  wrk.headers["X-GitHub-Delivery"] = prefix .. "-" .. counter
  wrk.headers["X-Hub-Signature-256"] = signatures[i]
  return wrk.format(nil, "/webhook", nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCH {"requests": %%d, "duration_us": %%d, "non_2xx": %%d, "socket_errors": %%d, ' ..
    '"p50_us": %%d, "p90_us": %%d, "p99_us": %%d, "max_us": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


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
    event: str
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


async def wrk(server: str, event: str, pid: int, port: int, connections: int, seconds: float, script: Path) -> Run:
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    before_server = harness.cpu_seconds(pid)
    proc = await asyncio.create_subprocess_exec(
        "taskset", "-c", str(LOAD_CPU), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
        "--timeout", "5s", "-s", str(script), f"http://127.0.0.1:{port}/webhook",
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
    return Run(server, event, connections, data["requests"], elapsed, data["non_2xx"], data["socket_errors"],
               data["p50_us"] / 1000, data["p90_us"] / 1000, data["p99_us"] / 1000, data["max_us"] / 1000,
               wrk_cpu / elapsed, server_cpu / elapsed)


def write_script(workdir: Path, event: str, bodies: list[Path]) -> Path:
    """A wrk script sending `bodies` in turn (each signed), a fresh delivery id per request."""
    items = "{" + ", ".join(f'{{"{path}", "{harness.sign(path.read_bytes())}"}}' for path in bodies) + "}"
    script = workdir / f"{event}-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(LUA % {"items": items, "event": event, "prefix": uuid.uuid4()})
    return script


async def outcomes(port: int) -> dict[tuple[str, str], int]:
    """flops_webhook_deliveries_total by (event, outcome) from the bot's /metrics."""
    import aiohttp
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found = re.findall(r'^flops_webhook_deliveries_total\{event="(\w+)",outcome="(\w+)"\} ([\d.e+]+)', text, re.M)
    return {(event, outcome): int(float(value)) for event, outcome, value in found}


def payload_files(workdir: Path) -> dict[str, Path]:
    """The recorded octokit payloads (tests/payloads), as GitHub serialises them (compact JSON)."""
    files = {}
    for event in EVENTS:
        files[event] = workdir / f"{event}.json"
        files[event].write_bytes(json.dumps(harness.payload(event), separators=(",", ":")).encode())
    return files


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
        cmd = [*pin, sys.executable, str(SERVERS_PY), name, str(port)]
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


async def main(seconds: float, rounds: int, warmup: float, profiled: bool, probot: bool) -> int:
    if not shutil.which("wrk"):
        print("bench_ingest: wrk not found (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    probot_cli = ensure_probot() if probot else None
    names = [name for name in SERVERS if probot_cli or name != "probot"]
    print(f"machine: {harness.machine()}")
    async with harness.test_bed("ingest") as bed:
        bed.github.add_installation(harness.INSTALLATION, "Codertocat", [harness.REPO])
        files = payload_files(bed.workdir)
        servers: dict[str, tuple[asyncio.subprocess.Process, int]] = {}
        try:
            for name in names:
                port = harness.free_port()
                servers[name] = (await start_server(name, port, bed.env, probot_cli, bed.workdir), port)
            runs, counted = await measure(servers, files, bed.workdir, seconds, rounds, warmup)
            profile = await profile_bot(servers["bot"], bed.workdir, files, seconds) if profiled else None
        finally:
            for proc, _ in servers.values():
                await stop_server(proc)
        report(runs, {event: path.stat().st_size for event, path in files.items()}, counted)
        gc_file = bed.workdir / "gc.json"
        if gc_file.exists():
            print("\ngarbage collections in flops-bot over all runs (count, total ms, longest ms): " + ", ".join(
                f"gen{g} {n} / {total:.0f} / {longest:.1f}"
                for g, (n, total, longest) in json.loads(gc_file.read_text()).items()))
        if profile:
            print(f"\nwhere flops-bot spends its time on push at 100 connections (py-spy, an extra run):\n{profile}")
    return 0


async def measure(servers: dict[str, tuple[asyncio.subprocess.Process, int]], files: dict[str, Path],
                  workdir: Path, seconds: float, rounds: int,
                  warmup: float) -> tuple[list[Run], dict[tuple[str, str], int]]:
    """Warm every server up, then interleaved rounds (a noisy neighbour hits every server alike);
    also what the bot counted per (event, outcome) over the measured runs."""
    for name, (proc, port) in servers.items():  # warm-up (JIT, caches, connection pools): not recorded
        for event in EVENTS:
            await wrk(name, event, proc.pid, port, 100, warmup, write_script(workdir, event, [files[event]]))
    runs: list[Run] = []
    before = await outcomes(servers["bot"][1])
    for _ in range(rounds):
        for event in EVENTS:
            for connections in CONNECTIONS:
                for name, (proc, port) in servers.items():
                    runs.append(await wrk(name, event, proc.pid, port, connections, seconds,
                                          write_script(workdir, event, [files[event]])))
    after = await outcomes(servers["bot"][1])
    return runs, {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


async def profile_bot(server: tuple[asyncio.subprocess.Process, int], workdir: Path, files: dict[str, Path],
                      seconds: float) -> str | None:
    proc, port = server
    load = asyncio.create_task(wrk("bot", "push", proc.pid, port, 100, seconds + 1,
                                   write_script(workdir, "push", [files["push"]])))
    stacks = await harness.py_spy(proc.pid, seconds, workdir / "bot.stacks")
    await load
    return harness.summarize_stacks(stacks, top=30) if stacks else "(py-spy not installed: .venv/bin/pip install py-spy)"


def report(runs: list[Run], sizes: dict[str, int], counted: dict[tuple[str, str], int]) -> None:
    rounds = len(runs) // (len(EVENTS) * len(CONNECTIONS) * len({r.server for r in runs}))
    print("\npayloads (tests/payloads, compact JSON, signed HMAC SHA-256, a fresh X-GitHub-Delivery each): "
          + ", ".join(f"{event} {size} bytes" for event, size in sizes.items())
          + f"; median of {rounds} interleaved rounds of {runs[0].seconds:.1f} s each")
    print(f"{'event':<5} {'server':<8} {'conns':>5} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
          f"{'max ms':>8} {'non-2xx':>8} {'server CPU':>10} {'wrk CPU':>8} {'req/CPU-s':>9}")
    summary: dict[tuple[str, str, int], dict[str, float]] = {}
    for event in EVENTS:
        for connections in CONNECTIONS:
            for server in SERVERS:
                mine = [r for r in runs if r.server == server and r.connections == connections and r.event == event]
                if not mine:
                    continue
                fig = {"rps": harness.median([r.rps for r in mine]), "p50": harness.median([r.p50_ms for r in mine]),
                       "p90": harness.median([r.p90_ms for r in mine]), "p99": harness.median([r.p99_ms for r in mine]),
                       "max": max(r.max_ms for r in mine), "bad": sum(r.non_2xx + r.socket_errors for r in mine),
                       "cpu": harness.median([r.server_cpu for r in mine]),
                       "wrk": harness.median([r.wrk_cpu for r in mine]),
                       "per_cpu": harness.median([r.rps / max(r.server_cpu, 0.01) for r in mine])}
                summary[(event, server, connections)] = fig
                print(f"{event:<5} {LABELS[server]:<8} {connections:>5} {fig['rps']:>9.0f} {fig['p50']:>8.2f} "
                      f"{fig['p90']:>8.2f} {fig['p99']:>8.2f} {fig['max']:>8.2f} {int(fig['bad']):>8} "
                      f"{fig['cpu']:>9.0%} {fig['wrk']:>8.0%} {fig['per_cpu']:>9.0f}")
    responses = {event: sum(r.requests for r in runs if r.server == "bot" and r.event == event) for event in EVENTS}
    print(f"\nflops-bot counted {dict(sorted((f'{e}/{o}', n) for (e, o), n in counted.items()))} for the "
          f"responses wrk counted {responses} (in-flight requests at the end of each run are answered, not counted)")
    ratios(summary)


def ratios(summary: dict[tuple[str, str, int], dict[str, float]]) -> None:
    print("\nratios (req/s; in brackets per second of the server's own CPU, which a loaded machine moves less):")
    for event in EVENTS:
        for connections in CONNECTIONS:
            bot = summary[(event, "bot", connections)]["rps"]
            parts = [f"{event:<4} {connections:>3} conn"]
            for peer in SERVERS[:-1]:
                target = TARGET_VS_PROBOT if peer == "probot" else TARGET_VS_BARE
                if (event, peer, connections) not in summary:
                    continue
                ratio = bot / summary[(event, peer, connections)]["rps"]
                judged = peer != "probot" or connections == 100
                verdict = f" (target >= {target}x: {harness.verdict(ratio >= target)})" if judged else ""
                per_cpu = summary[(event, "bot", connections)]["per_cpu"] / summary[(event, peer, connections)]["per_cpu"]
                parts.append(f"flops/{LABELS[peer]} {ratio:.2f}x{verdict} [per CPU-s {per_cpu:.2f}x]")
            print("  " + ",\n      ".join(parts))
    for event in EVENTS:
        p99 = summary[(event, "bot", 100)]["p99"]
        print(f"  flops p99 {event} at 100 conn: {p99:.2f} ms (target < {TARGET_P99_MS:.0f} ms: "
              f"{harness.verdict(p99 < TARGET_P99_MS)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded warm-up per server and payload")
    parser.add_argument("--profile", action="store_true", help="also sample the bot with py-spy at 100 connections")
    parser.add_argument("--no-probot", action="store_true", help="compare with the aiohttp baselines only")
    parser.add_argument("--with-processing", action="store_true",
                        help="instead: deliveries/s the bot works off, processing included (push, pull_request)")
    args = parser.parse_args()
    if args.with_processing:
        import ingest_processing
        sys.exit(asyncio.run(ingest_processing.main(args.seconds)))
    sys.exit(asyncio.run(main(args.seconds, args.rounds, args.warmup, args.profile, not args.no_probot)))
