"""#21 Chaos, reduced (benchmarks/bench_chaos.py runs 50 flows): mixed flows (push builds + deploy,
approval + regression, /train, a PR's tests) against `python -m bot serve`, SIGKILLed at seeded
moments mid-flow and restarted on the same port and bucket, with GitHub 502/503 bursts, a 403
secondary rate limit and a 429 (Retry-After) injected. Deliveries sent while it is down fail and
come back through the redelivery loop (FLOPS_REDELIVER_INTERVAL=2s here)."""
from __future__ import annotations

from pathlib import Path

from tests.chaos import Chaos, Plan
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server


async def test_mixed_flows_survive_kills_and_github_faults_with_nothing_lost_or_doubled(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    figures = await Chaos(tmp_path, github, kube, s3, Plan(flows=8, kills=3, faults=6, seed=21)).run()
    print(figures.line())
    print("\n".join(figures.problems))  # what the audit found, if anything
    assert figures.problems == []
    assert (figures.lost, figures.doubled) == (0, 0)
    assert figures.kills == 3 and figures.finished == 8
    assert figures.refused >= 3 and figures.redelivered >= 3  # one delivery at least per outage came back
