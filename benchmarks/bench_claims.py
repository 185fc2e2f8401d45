"""#21 What the two-replica guarantees cost: the start claim (bot/flows/claims.py) and the replica record
(bot/service/replicas.py), measured against the test bed's Kubernetes emulator and S3 server.

Run: .venv/bin/python benchmarks/bench_claims.py [--claims 200] [--races 5]

Printed: the time a start spends taking and releasing its claim (no contention: one create, one delete),
how long the loser of two simultaneous claimants waits beyond the winner's start (it looks again every
FLOPS_LEASE_RETRY), and the size and write time of a replica record listing 2,000 processed deliveries.
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

from bot.flows import claims  # noqa: E402
from bot.flows.deps import Deps  # noqa: E402
from bot.service import replicas  # noqa: E402

HOLD = 0.2  # seconds the winner of a race holds the claim (its start)


def start(n: int) -> claims.Start:
    return claims.Start("acme/bench", f"pr-{n}", "regression", f"{n:040x}")


async def uncontended(deps: Deps, count: int) -> list[float]:
    took = []
    for n in range(count):
        began = time.perf_counter()
        async with claims.claimed(deps, start(n)):
            pass
        took.append((time.perf_counter() - began) * 1000)
    return took


async def races(deps: Deps, count: int) -> list[float]:
    """Two replicas claim one start at once; the loser's wait until it is in."""
    other = dataclasses.replace(deps, identity="bench-other-000000")
    waits = []
    for n in range(count):
        entered: list[float] = []

        async def claim(who: Deps, key: claims.Start = start(10_000 + n)) -> None:
            async with claims.claimed(who, key):
                entered.append(time.perf_counter())
                if len(entered) == 1:
                    await asyncio.sleep(HOLD)  # the winner's start: the loser must find the claim taken

        began = time.perf_counter()
        await asyncio.gather(claim(deps), claim(other))
        waits.append((max(entered) - began - HOLD) * 1000)
    return waits


async def record_write(deps: Deps) -> tuple[int, float]:
    """A record of the shape `replicas.Heartbeat.write` writes, listing REMEMBERED processed GUIDs."""
    key = replicas.PREFIX + "bench-record.json"
    record = {"identity": deps.identity, "pod": "bench", "written_at": time.time(), "settled_at": time.time(),
              "unfinished": [], "finished": [str(uuid.uuid4()) for _ in range(replicas.REMEMBERED)], "clean": False}
    began = time.perf_counter()
    for _ in range(20):
        await deps.artifacts.put_json(key, record)
    took = (time.perf_counter() - began) * 1000 / 20
    size = len(await deps.artifacts.get_bytes(key) or b"")
    await deps.artifacts.delete(key)
    return size, took


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--races", type=int, default=5)
    args = parser.parse_args()
    async with harness.test_bed("claims") as bed, harness.running_bot(bed, FLOPS_LEASE_RETRY="1s") as bot:
        took = await uncontended(bot.deps, args.claims)
        waits = await races(bot.deps, args.races)
        size, write = await record_write(bot.deps)
    quantiles = statistics.quantiles(took, n=20)
    print(f"start claim, uncontended ({args.claims} claims): p50 {statistics.median(took):.1f} ms, "
          f"p95 {quantiles[18]:.1f} ms (create + delete of a Lease)")
    print(f"two claimants at once ({args.races} races, FLOPS_LEASE_RETRY=1s, the winner's start {HOLD * 1000:.0f} ms): "
          f"the loser is in {statistics.median(waits):.0f} ms (p50), {max(waits):.0f} ms (max) after the winner's end")
    print(f"replica record with {replicas.REMEMBERED} processed GUIDs: {size / 1024:.0f} KiB, "
          f"written in {write:.1f} ms (after a change, or every FLOPS_LEASE_RENEW)")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
