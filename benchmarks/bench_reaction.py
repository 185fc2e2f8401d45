"""Reaction latency: from a push delivery received to the first Kaniko Job accepted by the Kubernetes
emulator and to the first check run created on the GitHub emulator.

Run: .venv/bin/python benchmarks/bench_reaction.py [--pushes 60]

On the test bed with zero added latency (GitHub emulator and the bot in this process's loop, the
Kubernetes emulator in its own thread, SeaweedFS in its own process, all on 127.0.0.1). Each push is
a new commit on master with two images to build (tests/payloads/push.json, signed): the bot reads
.github/flops.yml, looks for builds to supersede, uploads the commit's source to S3 (tarball from
GitHub, re-packed), creates `flops/build: <image>` and then the Job, per image. The times come from the
emulators' own records (each call is stamped as the emulator records it). Between pushes both builds
succeed and are reported, so every push starts from a quiet bot. The cluster keeps the finished Jobs of
--history earlier pushes (finished build Jobs live for days), and each measured push's Jobs are deleted
once reported, so every measured push sees the same number of Jobs.

Baseline, measured in the same run: the dependency floor — one round trip of each kind the reaction
needs (GitHub API via the bot's own client, Kubernetes API via the official client in a thread, S3
via minio in a thread), times how many of each the bot made before its first Job. The ratio says how
much the bot adds on top of the calls it cannot avoid.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows  # noqa: E402
import harness  # noqa: E402
from tests.conftest import wait_for  # noqa: E402

TARGET_MEDIAN_MS = 20.0
JOBS_PATH = f"/apis/batch/v1/namespaces/{harness.NAMESPACE}/jobs"


@dataclass
class Reaction:
    ack: float
    first_check: float
    first_job: float
    github_calls: int  # before the first Job (the codeload download counted as one)
    kube_calls: int
    timeline: list[tuple[float, str]]  # every emulator call up to the first Job, from the POST


async def one_push(bot: flows.Bot, bed: harness.Bed, marker: int, keep: bool = False) -> Reaction:
    calls, requests = bed.github.calls, bed.kube.requests
    assert isinstance(calls, harness.Timed) and isinstance(requests, harness.Timed)
    data = flows.push_payload(bed, {"server/app.py": f"print({marker})\n", "client/main.py": f"print({marker})\n"})
    gh_mark, kube_mark = len(calls.timed), len(requests.timed)
    started = time.monotonic()
    await bot.deliver("push", data)
    ack = time.monotonic() - started

    def first_job() -> float | None:
        return next((at for at, (method, path) in requests.timed[kube_mark:]
                     if method == "POST" and path.startswith(JOBS_PATH)), None)

    def first_check() -> float | None:
        return next((at for at, call in calls.timed[gh_mark:]
                     if call.method == "POST" and call.path.endswith("/check-runs")), None)

    job_at = await wait_for(first_job, 30, "the first Job")
    check_at = await wait_for(first_check, 30, "the first check run")
    gh_before = sum(1 for at, _ in calls.timed[gh_mark:] if at <= job_at)
    kube_before = sum(1 for at, _ in requests.timed[kube_mark:] if at < job_at)
    timeline = sorted([(at - started, f"GitHub {c.method} {_short(c.path)}") for at, c in calls.timed[gh_mark:]
                       if at <= job_at] + [(at - started, f"Kubernetes {m} {_short(p)}")
                                          for at, (m, p) in requests.timed[kube_mark:] if at <= job_at])
    await bot.settle()
    await flows.finish_builds(bot, data["after"])
    if not keep:  # the namespace stays at the history's size: every measured push sees the same cluster
        for job in flows.jobs_of(bot, data["after"]):
            await bot.deps.kube.delete_job(job["metadata"]["name"])
    return Reaction(ack, check_at - started, job_at - started, gh_before, kube_before, timeline)


def _short(path: str) -> str:
    path = path.split("?")[0]
    return "/".join(part if len(part) < 30 else part[:7] + "…" for part in path.split("/"))


async def round_trips(bot: flows.Bot, samples: int) -> dict[str, float]:
    """Median single round trips of the three dependencies, through the bot's own clients."""
    deps = bot.deps
    gh = deps.github.for_installation(harness.INSTALLATION)
    source = (await deps.artifacts.list_keys("sources/"))[0]
    blob = await deps.artifacts.get_bytes(source) or b""
    job = bot.kube.list("jobs", harness.NAMESPACE)[0]["metadata"]["name"]
    times: dict[str, list[float]] = {"github": [], "kube": [], "kube list": [], "s3 stat": [], "s3 put": []}
    selector = "app.kubernetes.io/managed-by=flops-bot,flops.dev/kind=build"
    for i in range(samples):
        began = time.monotonic()
        await deps.kube.list_jobs(selector)
        times["kube list"].append(time.monotonic() - began)
        began = time.monotonic()
        await gh.getitem(f"/repos/{flows.REPO}/contents/.github/flops.yml", url_vars={})
        times["github"].append(time.monotonic() - began)
        began = time.monotonic()
        await deps.kube.get_job(job)
        times["kube"].append(time.monotonic() - began)
        began = time.monotonic()
        await deps.artifacts.exists(f"bench/absent-{i}")
        times["s3 stat"].append(time.monotonic() - began)
        began = time.monotonic()
        await asyncio.to_thread(deps.artifacts.client.put_object, deps.artifacts.bucket, f"bench/put-{i}",
                                io.BytesIO(blob), len(blob))
        times["s3 put"].append(time.monotonic() - began)
    return {name: harness.median(values) for name, values in times.items()}


async def main(pushes: int, history: int, profile_it: bool) -> int:
    print(f"machine: {harness.machine()}")
    async with harness.test_bed("reaction") as bed:
        flows.set_up_push(bed)
        bed.github.calls = harness.Timed(bed.github.calls)
        bed.kube.requests = harness.Timed(bed.kube.requests)
        async with harness.running_bot(bed) as bot:
            for i in range(history):  # warm-up (token, pools, bucket) and the finished builds a cluster keeps
                await one_push(bot, bed, -1 - i, keep=True)
            reactions = [await one_push(bot, bed, i) for i in range(1, pushes + 1)]
            profile = await profiled(bot, bed, pushes) if profile_it else None
            floor_parts = await round_trips(bot, 30)
            jobs_listed = len(bot.kube.list("jobs", harness.NAMESPACE))
    report(reactions, floor_parts, jobs_listed)
    if profile:
        print(f"\nwhere the time goes during pushes (py-spy over this process, an extra {pushes} pushes):\n{profile}")
    return 0


async def profiled(bot: flows.Bot, bed: harness.Bed, pushes: int) -> str:
    """py-spy samples this process while `pushes` more pushes run (reported separately, not measured)."""
    import os
    out = bed.workdir / "reaction.stacks"
    spy = asyncio.create_task(harness.py_spy(os.getpid(), 8, out))
    await asyncio.sleep(0.5)  # py-spy attached
    deadline = time.monotonic() + 7
    marker = 10_000
    while time.monotonic() < deadline:
        marker += 1
        await one_push(bot, bed, marker)
    stacks = await spy
    return harness.summarize_stacks(stacks, top=30) if stacks else "(py-spy not installed: .venv/bin/pip install py-spy)"


def report(reactions: list[Reaction], rt: dict[str, float], jobs_listed: int) -> None:
    ms = 1000.0
    first_job = [r.first_job * ms for r in reactions]
    first_check = [r.first_check * ms for r in reactions]
    ack = [r.ack * ms for r in reactions]
    gh_calls = harness.median([r.github_calls for r in reactions])
    kube_calls = harness.median([r.kube_calls for r in reactions])
    floor = (gh_calls * rt["github"] + rt["kube list"] + (kube_calls - 1) * rt["kube"] + rt["s3 stat"]
             + rt["s3 put"]) * ms
    print(f"\n{len(reactions)} pushes (2 images each), from the delivery's POST:")
    print(f"{'':<24} {'median ms':>10} {'p99 ms':>8} {'min ms':>8} {'max ms':>8}")
    for name, values in (("202 acknowledged", ack), ("first check run created", first_check),
                         ("first Job accepted", first_job)):
        print(f"{name:<24} {harness.median(values):>10.2f} {harness.percentile(values, 99):>8.2f} "
              f"{min(values):>8.2f} {max(values):>8.2f}")
    print(f"\nbefore its first Job the bot made {gh_calls:.0f} GitHub requests (tarball redirect and download "
          f"included), {kube_calls:.0f} Kubernetes requests (one lists the build Jobs: {jobs_listed} of them), "
          "1 S3 stat and 1 S3 upload")
    print("dependency round trips (median of 30): " + ", ".join(f"{k} {v * ms:.2f} ms" for k, v in rt.items()))
    median_job = harness.median(first_job)
    typical = min(reactions, key=lambda r: abs(r.first_job * ms - median_job))
    print(f"\na typical push ({typical.first_job * ms:.2f} ms), as the emulators saw it (ms after the POST; a GitHub "
          "call is stamped when answered, a Kubernetes one when received):")
    for at, what in typical.timeline:
        print(f"  {at * ms:7.2f}  {what}")
    print(f"dependency floor: {floor:.2f} ms; reaction / floor = {median_job / floor:.2f}x")
    print(f"first Job median {median_job:.2f} ms (target < {TARGET_MEDIAN_MS:.0f} ms: "
          f"{harness.verdict(median_job < TARGET_MEDIAN_MS)}); first check run median "
          f"{harness.median(first_check):.2f} ms ({harness.verdict(harness.median(first_check) < TARGET_MEDIAN_MS)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pushes", type=int, default=60, help="measured pushes (after one warm-up push)")
    parser.add_argument("--history", type=int, default=50,
                        help="unmeasured pushes first, whose finished Jobs stay (Jobs live 7 days after they finish)")
    parser.add_argument("--profile", action="store_true", help="also sample the bot with py-spy during extra pushes")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.pushes, args.history, args.profile)))
