"""Rounds and runs of the bot's k-ary bisection (bot/core/bisect.py) against sequential `git bisect`
(k = 1), on synthetic default-branch histories with one culprit; with exact metrics and with seeds
noise judged by the gate's own noise-aware verdict (bot/core/verdict.py); and correctness over 1,000
random histories. Prints figures (a culprit missed is counted, not raised: with noise it happens).

    .venv/bin/python benchmarks/bench_bisect.py
"""
from __future__ import annotations

import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bot.core import bisect, verdict  # noqa: E402
from bot.core.config import Metric, Tolerance  # noqa: E402

GOOD, BAD = 0.912, 0.861  # accuracy before and after the culprit
SEEDS, SPREAD = 5, 0.01  # seeds per run and their standard deviation (noise runs)
GATE = Metric("accuracy", "higher", Tolerance(0.01))


@dataclass
class Outcome:
    rounds: int
    runs: int
    found: bool


def measure(rng: random.Random, culprit: int, index: int, noise: bool) -> list[float] | float:
    mean = BAD if index >= culprit else GOOD
    return [rng.gauss(mean, SPREAD) for _ in range(SEEDS)] if noise else mean


def search(n: int, k: int, culprit: int, rng: random.Random, noise: bool) -> Outcome:
    """One bisection: the good commit's run is the reference every candidate is judged against."""
    reference = {"accuracy": measure(rng, culprit, -1, noise)}
    known: dict[int, bool] = {}
    rounds = runs = 0
    while not (step := bisect.step(n, known, k)).done:
        rounds += 1
        for index in step.probes:
            runs += 1
            row = verdict.compare(reference, {"accuracy": measure(rng, culprit, index, noise)}, [GATE]).rows[0]
            known[index] = row.verdict in ("regression", "missing")
    return Outcome(rounds, runs, step.culprit == culprit)


def table(noise: bool, trials: int = 200) -> None:
    rng = random.Random(19)
    print(f"\n{'seeds noise' if noise else 'exact metrics'} ({trials} random culprits each; mean / worst)")
    print("|   n | k | rounds | runs | vs git bisect (k=1): rounds | runs | found |")
    print("|----:|--:|-------:|-----:|----------------------------:|-----:|------:|")
    for n in (16, 100, 256):
        base: list[Outcome] = []
        for k in (1, 3, 7):
            culprits = [rng.randrange(n) for _ in range(trials)]
            got = [search(n, k, c, rng, noise) for c in culprits]
            base = got if k == 1 else base
            r, u = statistics.fmean(o.rounds for o in got), statistics.fmean(o.runs for o in got)
            r1, u1 = statistics.fmean(o.rounds for o in base), statistics.fmean(o.runs for o in base)
            print(f"| {n:3} | {k} | {r:4.1f} / {max(o.rounds for o in got):2} | {u:4.1f} / {max(o.runs for o in got):2} "
                  f"| {r / r1:27.2f}x | {u / u1:4.2f}x | {sum(o.found for o in got) / trials:5.1%} |")


def correctness(histories: int = 1000) -> None:
    rng = random.Random(1000)
    for noise in (False, True):
        found = 0
        for _ in range(histories):
            n, k = rng.randint(1, 256), rng.choice((1, 2, 3, 4, 7, 16))
            found += search(n, k, rng.randrange(n), rng, noise).found
        print(f"correctness, {'seeds noise' if noise else 'exact'}: {found}/{histories} culprits found")


if __name__ == "__main__":
    table(noise=False)
    table(noise=True)
    correctness()
