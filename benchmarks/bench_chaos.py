"""#21 Chaos: N mixed flows against `python -m bot serve` while it is SIGKILLed at seeded moments
mid-flow and restarted (same port, same bucket), with GitHub faults injected.

Run: .venv/bin/python benchmarks/bench_chaos.py [--flows 50] [--kills 8] [--faults 16] [--seed 21]

The flows (push builds + deploy to a consenting config repo, approval + regression, `/train`, a
pull request's tests) and the chaos are tests/chaos.py, the code tests/test_chaos.py runs with 8
flows. Every webhook is sent by the GitHub emulator, so deliveries that meet the bot down fail
there (status 0) and only the bot's redelivery loop (FLOPS_REDELIVER_INTERVAL=2s) brings them
back. Printed: flows, kills, faults, deliveries refused and redelivered, lost and doubled (both
must be 0), and every problem the audit found. The same-run baseline is the same flows on a bot
never killed and a GitHub without faults: the ratio is what the chaos cost in wall time.
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import harness

from tests.chaos import Chaos, Figures, Plan


async def one_run(plan: Plan) -> Figures:
    kept = Path(tempfile.mkdtemp(prefix="flops-chaos-log-"))  # the bot's log outlives the test bed
    async with harness.test_bed("chaos") as bed:
        figures = await Chaos(kept, bed.github, bed.kube, bed.s3, plan).run()
    print(f"  the bot's log: {kept / 'bot.log'}")
    return figures


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flows", type=int, default=50)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--faults", type=int, default=16)
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    timeout = 60.0 + 4 * args.flows  # per flow: its turn behind the others, restarts included
    print(harness.machine())
    baseline = None
    if not args.no_baseline:
        baseline = await one_run(Plan(flows=args.flows, kills=0, faults=0, seed=args.seed,
                                      concurrency=args.concurrency, timeout=timeout))
        print("baseline (no kills, no faults):", baseline.line())
    chaos = await one_run(Plan(flows=args.flows, kills=args.kills, faults=args.faults, seed=args.seed,
                               concurrency=args.concurrency, timeout=timeout))
    print("chaos:", chaos.line())
    for problem in chaos.problems:
        print("  problem:", problem)
    if baseline is not None and baseline.seconds:
        print(f"wall time chaos/baseline: {chaos.seconds / baseline.seconds:.2f}x")
    return 0 if (chaos.lost, chaos.doubled, chaos.problems) == (0, 0, []) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
