"""API economy: how many GitHub calls each flow costs, cold and with a warm installation token.

Run: .venv/bin/python benchmarks/bench_api_economy.py

On the test bed (GitHub emulator, Kubernetes emulator, SeaweedFS), counted from the emulator's own
record of every call it answered (`GitHubEmulator.calls`):
- push: a push to master building 2 images (both succeed) with 1 deploy target in a GitOps repo of
  another installation, end to end (config read, checks, source tarball, reports, the manifest bump,
  the deploy check). Cold = a freshly started bot (no token, no installation lookup cached);
  warm = the next push, same bot.
- review: a maintainer's approval of a PR through the regression report (permission check, config from
  the base branch, the Job, the verdict, the check run and the sticky comment). Cold = a freshly started
  bot; warm = a second approval (new PR head) on the same bot.
The calls are deterministic, so no repetition is needed; the baseline is the same flow cold.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import flows  # noqa: E402
import harness  # noqa: E402

TARGET_PUSH_WARM = 9


def since(calls: list[Any], mark: int) -> list[Any]:
    return list(calls[mark:])


def rest(calls: list[Any]) -> list[Any]:
    """The REST API calls: the tarball's redirect target (codeload, GitHub's file host) is a download,
    not an API call, and is not counted against the rate limit."""
    return [c for c in calls if not c.path.startswith("/_codeload/")]


def describe(calls: list[Any]) -> str:
    lines = []
    for i, call in enumerate(calls, 1):
        who = "app JWT" if call.installation_id is None else f"installation {call.installation_id}"
        note = "  [download from codeload, not a REST call]" if call not in rest([call]) else ""
        lines.append(f"    {i:>2}. {call.method:<6} {call.path}  -> {call.status}  ({who}){note}")
    return "\n".join(lines)


async def push_flow() -> tuple[list[Any], list[Any]]:
    async with harness.test_bed("economy-push") as bed:
        flows.set_up_push(bed)
        async with harness.running_bot(bed) as bot:
            mark = len(bed.github.calls)
            await flows.push_end_to_end(bot, bed, 1)
            cold = since(bed.github.calls, mark)
            mark = len(bed.github.calls)
            await flows.push_end_to_end(bot, bed, 2)
            warm = since(bed.github.calls, mark)
    return cold, warm


async def review_flow() -> tuple[list[Any], list[Any]]:
    async with harness.test_bed("economy-review") as bed:
        flows.set_up_review(bed)
        async with harness.running_bot(bed) as bot:
            await flows.record_baseline(bot, bed)
        head = flows.open_pr(bed, {"train.py": "print('relu')\n"})
        async with harness.running_bot(bed) as bot:  # a fresh bot: nothing cached
            mark = len(bed.github.calls)
            await flows.review_end_to_end(bot, head)
            cold = since(bed.github.calls, mark)
            head = bed.github.commit(flows.REPO, "feature", {"train.py": "print('gelu')\n"})
            mark = len(bed.github.calls)
            await flows.review_end_to_end(bot, head)
            warm = since(bed.github.calls, mark)
    return cold, warm


def report(name: str, cold: list[Any], warm: list[Any], target: int | None) -> None:
    print(f"\n{name}: {len(rest(cold))} REST calls cold, {len(rest(warm))} warm "
          f"(warm/cold {len(rest(warm)) / len(rest(cold)):.2f}x; with the tarball downloads "
          f"{len(cold)} and {len(warm)} requests)" + (
              f"; target <= {target} warm: {harness.verdict(len(rest(warm)) <= target)}" if target else ""))
    print("  cold:")
    print(describe(cold))
    print("  warm:")
    print(describe(warm))


async def main() -> int:
    print(f"machine: {harness.machine()}")
    push_cold, push_warm = await push_flow()
    review_cold, review_warm = await review_flow()
    report("push (2 images + 1 deploy target, end to end)", push_cold, push_warm, TARGET_PUSH_WARM)
    report("approved review through the regression report", review_cold, review_warm, None)
    return 0


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    sys.exit(asyncio.run(main()))
