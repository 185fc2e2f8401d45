"""Tracker scale: 5,000 bot Jobs finishing in bursts on one watch; the bot's memory; restart recovery.

Run: .venv/bin/python benchmarks/bench_tracker.py [--jobs 5000] [--burst 500]

The bot runs as its own process (`build_app` with the settings from the environment, JSON logs, as
`python -m bot serve` runs it, on 127.0.0.1), so its RSS is its own; the test bed's GitHub emulator,
Kubernetes emulator and SeaweedFS run in and beside this process. Every Job is a real Kaniko build Job
body (`bot.jobs.build_job`) with its in-progress check run on the GitHub emulator, as the push flow
leaves them. Steps:
1. start the bot on an empty namespace: time to its first list + watch (the baseline), idle RSS;
2. create the Jobs (running) while it watches;
3. finish all but 100 of them in bursts (Pod Succeeded with a digest, Job Complete): time until
   every one was reported (check run completed, build record in S3, Job annotated), RSS all along;
4. stop the bot, finish the last 100 while it is down, start it again: time from the process start
   to its first list + watch with all Jobs present (recovery), and until the 100 were reported.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

TARGET_RSS_MB = 150.0
TARGET_RECOVERY_S = 3.0
HELD_BACK = 100
DIGEST = "sha256:" + "ab" * 32
JOBS_PATH = f"/apis/batch/v1/namespaces/{harness.NAMESPACE}/jobs"
CONFIG = """\
registry: harbor.example.com/flops
images:
  - name: server
    dockerfile: Dockerfile.server
  - name: client
    dockerfile: Dockerfile.client
"""


def serve(port: int) -> None:
    from aiohttp import web

    from bot.__main__ import build_app, configure_logging
    from bot.platform.settings import from_env

    settings = from_env()
    configure_logging(settings)  # as `serve` does: LOG_LEVEL from the environment, default INFO
    web.run_app(build_app(settings), host="127.0.0.1", port=port, print=None, shutdown_timeout=10)


class Bot:
    """The bot as a process: started, watched (RSS), stopped."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self.peak_rss = 0.0
        self._sampler: asyncio.Task[None] | None = None

    async def start(self) -> None:
        port = harness.free_port()
        with open(self.log, "ab") as log:
            self.started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--serve", "--port", str(port), env={**os.environ, **self.env},
                stdout=log, stderr=log)
        self._sampler = asyncio.create_task(self._sample())

    def rss(self) -> float:
        assert self.proc is not None
        return harness.rss_mb(self.proc.pid)[0]

    async def _sample(self) -> None:
        while self.proc is not None and self.proc.returncode is None:
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except (OSError, KeyError):
                return
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.peak_rss = max(self.peak_rss, harness.rss_mb(self.proc.pid)[1])  # VmHWM: the true peak
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 40)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._sampler is not None:
            await asyncio.gather(self._sampler, return_exceptions=True)


def watch_opened_after(requests: harness.Timed, since: float) -> float | None:
    """When the tracker opened its watch (it lists first): the moment it has caught up."""
    return next((at for at, (method, path) in requests.timed if at >= since and method == "GET"
                 and path.startswith(JOBS_PATH) and "watch=true" in path), None)


def first_list_after(requests: harness.Timed, since: float) -> float | None:
    """When the tracker asked for its first page of Jobs (the bot's start-up is over by then)."""
    return next((at for at, (method, path) in requests.timed if at >= since and method == "GET"
                 and path.startswith(JOBS_PATH + "?") and "watch=true" not in path
                 and "managed-by=flops-bot" in path and "limit=1&" not in path + "&"), None)


def reported_names(requests: harness.Timed, names: set[str]) -> set[str]:
    """Jobs the bot annotated (it marks a Job reported only after GitHub accepted the report)."""
    prefix = JOBS_PATH + "/"
    return {path[len(prefix):].split("?")[0] for _, (method, path) in list(requests.timed)
            if method == "PATCH" and path.startswith(prefix)} & names


async def wait_until(condition: Any, timeout: float, what: str, every: float = 0.05) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value if isinstance(value, float) else time.monotonic()
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


async def check_runs(bed: harness.Bed, count: int) -> list[int]:
    """`count` in-progress build check runs, created over the emulator's REST API as the bot creates them."""
    import aiohttp
    from gidgethub.apps import get_jwt

    key = Path(bed.env["GITHUB_PRIVATE_KEY_PATH"]).read_text()
    async with aiohttp.ClientSession(headers={"Accept": "application/vnd.github+json"}) as session:
        jwt = get_jwt(app_id=str(harness.APP_ID), private_key=key)
        async with session.post(f"{bed.github.url}/app/installations/{harness.INSTALLATION}/access_tokens",
                                headers={"Authorization": f"Bearer {jwt}"}) as response:
            token = (await response.json())["token"]
        headers = {"Authorization": f"token {token}"}
        ids: list[int] = []

        shas = [bed.github.commit(harness.REPO, "master", {"server/app.py": f"print({i})\n"}) for i in range(count)]

        async def create(i: int) -> int:
            body = {"name": f"flops/build: {'server' if i % 2 == 0 else 'client'}", "head_sha": shas[i],
                    "status": "in_progress", "output": {"title": "Building", "summary": "Kaniko Job"}}
            async with session.post(f"{bed.github.url}/repos/{harness.REPO}/check-runs", json=body,
                                    headers=headers) as response:
                return int((await response.json())["id"])

        for start in range(0, count, 200):
            ids += await asyncio.gather(*(create(i) for i in range(start, min(count, start + 200))))
    return ids


def job_bodies(bed: harness.Bed, check_ids: list[int]) -> list[dict[str, Any]]:
    from bot.core import config, jobs
    from bot.platform import checks
    from bot.platform.settings import from_env

    cfg = config.parse(CONFIG)
    cluster = jobs.cluster_from(from_env(bed.env))
    bodies = []
    for i, check_id in enumerate(check_ids):
        sha = bed.github.check_runs[check_id]["head_sha"]
        source = jobs.Source(harness.REPO, sha, harness.INSTALLATION, ref="master")
        image = cfg.images[i % 2]
        tag = jobs.image_tag("master", "2026-11-22T09:30:00Z", sha)
        body = jobs.build_job(jobs.BuildRequest(source, image, cfg.registry, tag, "2026-11-22T09:30:00Z"), cluster,
                              check=checks.build_name(image.name))
        body["metadata"]["annotations"][jobs.CHECK_RUN] = str(check_id)
        bodies.append(body)
    return bodies


def cpu_now(bot: Bot, bed: harness.Bed) -> dict[str, float]:
    """CPU seconds so far of the bot, of this process (the emulators, the bursts) and of SeaweedFS."""
    assert bot.proc is not None
    weed = getattr(bed.s3, "_process", None)
    mine = os.times()
    return {"bot": harness.cpu_seconds(bot.proc.pid), "emulators": mine.user + mine.system,
            "s3": harness.cpu_seconds(weed.pid) if weed is not None else 0.0}


def finish(bed: harness.Bed, names: list[str]) -> None:
    for name in names:
        bed.kube.succeed_job(harness.NAMESPACE, name, message=DIGEST)


async def measure(bed: harness.Bed, bot: Bot, again: Bot, requests: harness.Timed, count: int, burst: int,
                  profile: bool) -> tuple[dict[str, Any], list[float], list[int]]:
    """Steps 1-4 of the module docstring; the figures, the burst durations, the check-run ids."""
    figures: dict[str, Any] = {}
    await bot.start()
    watching = await wait_until(lambda: watch_opened_after(requests, bot.started), 60, "the first watch")
    figures["start_empty"] = watching - bot.started
    await asyncio.sleep(1.0)  # settled: the start-up allocations are done
    figures["rss_idle"] = bot.rss()

    began = time.monotonic()
    ids = await check_runs(bed, count)
    bodies = job_bodies(bed, ids)
    await asyncio.to_thread(lambda: [bed.kube.put_object(b) for b in bodies])
    figures["create"] = time.monotonic() - began
    await asyncio.sleep(1.0)
    figures["rss_running"] = bot.rss()
    names = [b["metadata"]["name"] for b in bodies]
    in_bursts, held = names[:-HELD_BACK], names[-HELD_BACK:]

    spy = asyncio.create_task(harness.py_spy(bot.proc.pid, 20, bed.workdir / "bot.stacks")) if profile else None
    cpu_before = cpu_now(bot, bed)
    began = time.monotonic()
    burst_times = []
    for start in range(0, len(in_bursts), burst):
        t = time.monotonic()
        await asyncio.to_thread(finish, bed, in_bursts[start:start + burst])
        burst_times.append(time.monotonic() - t)
    figures["bursts_done"] = time.monotonic() - began
    wanted = set(in_bursts)
    await wait_until(lambda: len(reported_names(requests, wanted)) == len(wanted), 900,
                     f"{len(wanted)} reports", every=0.25)
    figures["report_all"] = time.monotonic() - began
    figures["cpu"] = {k: v - cpu_before[k] for k, v in cpu_now(bot, bed).items()}
    figures["rss_after"] = bot.rss()
    figures["stacks"] = await spy if spy else None
    await bot.stop()
    figures["rss_peak"] = bot.peak_rss

    await asyncio.to_thread(finish, bed, held)  # finished while the bot is down
    await again.start()
    watching = await wait_until(lambda: watch_opened_after(requests, again.started), 60, "the watch after restart")
    figures["recovery"] = watching - again.started
    listed = first_list_after(requests, again.started) or watching
    figures["recovery_startup"], figures["recovery_listing"] = listed - again.started, watching - listed
    await wait_until(lambda: len(reported_names(requests, set(held))) == len(held), 120, "the held-back reports")
    figures["recovered_reports"] = time.monotonic() - again.started
    figures["rss_restart"] = again.rss()
    await again.stop()
    figures["rss_restart_peak"] = again.peak_rss

    return figures, burst_times, ids



async def main(count: int, burst: int, profile: bool) -> int:
    print(f"machine: {harness.machine()}")
    async with harness.test_bed("tracker") as bed:
        bed.github.add_installation(harness.INSTALLATION, "Codertocat", [harness.REPO])
        bed.github.add_repo(harness.REPO, default_branch="master")
        bed.kube.requests = harness.Timed(bed.kube.requests)
        requests: harness.Timed = bed.kube.requests  # type: ignore[assignment]
        log = bed.workdir / "bot.log"
        bot, again = Bot(bed.env, log), Bot(bed.env, log)
        try:
            figures, burst_times, ids = await measure(bed, bot, again, requests, count, burst, profile)
        finally:  # a failed run leaves no bot behind
            await bot.stop()
            await again.stop()
        done = await asyncio.to_thread(lambda: [j for j in bed.kube.list("jobs", harness.NAMESPACE)
                                                if "flops.dev/reported" in j["metadata"]["annotations"]])
        completed = sum(1 for i in ids if bed.github.check_runs[i]["status"] == "completed")
        double = sum(1 for c in bed.github.calls if c.method == "PATCH" and "/check-runs/" in c.path) - completed
        report(count, burst, burst_times, figures, len(done), completed, double)
        cpu, stacks = figures["cpu"], figures["stacks"]
        print(f"  CPU while reporting ({figures['report_all']:.0f} s of wall time): the bot {cpu['bot']:.1f} s "
              f"({cpu['bot'] / (count - HELD_BACK) * 1000:.1f} ms per report), the GitHub and Kubernetes emulators "
              f"{cpu['emulators']:.1f} s, SeaweedFS {cpu['s3']:.1f} s")
        if profile:
            summary = harness.summarize_stacks(stacks, top=30) if stacks else "(py-spy not installed)"
            print(f"\nwhere the bot spends its time in the first 20 s of the bursts (py-spy):\n{summary}")
    return 0


def report(count: int, burst: int, burst_times: list[float], f: dict[str, Any], annotated: int, completed: int,
           double: int) -> None:
    reported = count - HELD_BACK
    print(f"\n{count} build Jobs on one watch; {reported} finished in {len(burst_times)} bursts of {burst} "
          f"(each burst took the emulator {harness.median(burst_times):.2f} s median to apply), "
          f"{HELD_BACK} finished while the bot was down")
    print(f"  start on an empty namespace to first watch (baseline): {f['start_empty']:.2f} s")
    print(f"  creating the check runs and Jobs: {f['create']:.1f} s")
    print(f"  first burst to all {reported} reported: {f['report_all']:.1f} s "
          f"({reported / f['report_all']:.0f} reports/s; the bursts themselves took {f['bursts_done']:.1f} s)")
    print(f"  restart with {count} Jobs present, process start to first watch: {f['recovery']:.2f} s "
          f"({f['recovery'] / f['start_empty']:.2f}x the empty-namespace start; target < {TARGET_RECOVERY_S:.0f} s: "
          f"{harness.verdict(f['recovery'] < TARGET_RECOVERY_S)})")
    print(f"    of which the process start-up (imports, clients) to the first list request "
          f"{f['recovery_startup']:.2f} s, listing all {count} Jobs (pages of 500) to the watch {f['recovery_listing']:.2f} s")
    print(f"  ... and to the {HELD_BACK} Jobs that finished while it was down all reported: "
          f"{f['recovered_reports']:.2f} s")
    peak = max(f["rss_peak"], f["rss_restart_peak"])
    print(f"  bot RSS: idle {f['rss_idle']:.0f} MB, with {count} running Jobs {f['rss_running']:.0f} MB, "
          f"after the reports {f['rss_after']:.0f} MB, peak {f['rss_peak']:.0f} MB; after the restart "
          f"{f['rss_restart']:.0f} MB, peak {f['rss_restart_peak']:.0f} MB "
          f"(peak/idle {peak / f['rss_idle']:.2f}x; target < {TARGET_RSS_MB:.0f} MB: "
          f"{harness.verdict(peak < TARGET_RSS_MB)})")
    print(f"  check: {annotated}/{count} Jobs annotated reported, {completed}/{count} check runs completed, "
          f"{double} check-run updates beyond one per Job")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--profile", action="store_true", help="sample the bot with py-spy while it reports")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port)
    else:
        sys.exit(asyncio.run(main(args.jobs, args.burst, args.profile)))
