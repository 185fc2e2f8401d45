"""#21 Chaos: mixed flows against `python -m bot serve` while it is SIGKILLed at seeded moments and
restarted (same port, same bucket), with GitHub faults injected; tests/test_chaos.py (a few flows)
and benchmarks/bench_chaos.py (50) run this same code.

- The GitHub emulator sends every webhook itself (tests/emulators/deliveries.py), so a delivery
  that meets the bot down is recorded as failed (status 0) and only the bot's redelivery loop can
  bring it back.
- A kill is armed on the emulator (`before_next`) at a seeded GitHub call of the flows - a check run
  created or updated, a comment, a deploy commit - so the bot dies mid-flow; while it is down the
  next flow's first delivery is sent (and fails); then the bot is started again.
- A finisher plays the cluster's workloads: every Job the bot started and annotated with its check
  run finishes as the real one would (Kaniko's digest, metrics.json and JUnit in the runs bucket).
- At the end `audit` counts what a user would notice: check runs not completed or posted twice per
  name and commit, sticky comments twice, Jobs never reported, deliveries never taken.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import random
import re
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tests.conftest import INSTALLATION, NAMESPACE, SECRET, push_payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server, free_port
from tests.serving import serving
from tests.test_as_shipped import (
    CODE,
    CONFIG_REPO,
    CRONJOB,
    DEPLOY,
    FEDERATED,
    IMAGES,
    MAINTAINER,
    REGRESSION,
    TESTS,
    comment_payload,
    digest,
    pr_payload,
)

KINDS = ("push", "review", "train", "tests")
JUNIT = b'<testsuite name="unit" tests="1" failures="0"><testcase classname="t" name="test_ok" time="0.1"/></testsuite>'
MOMENTS = [("POST", r"/check-runs$"), ("PATCH", r"/check-runs/\d+$"), ("POST", r"/issues/\d+/comments$"),
           ("PUT", r"/contents/"), ("GET", r"/contents/\.github/flops\.yml$")]
FAULTS: list[tuple[str, str, int, dict[str, str]]] = [
    ("POST", r"/check-runs$", 502, {}), ("PATCH", r"/check-runs/\d+$", 503, {}),
    ("GET", r"/contents/", 502, {}), ("POST", r"/issues/\d+/comments$", 503, {}),
    ("POST", r"/check-runs$", 403, {"Retry-After": "1"}), ("PATCH", r"/check-runs/\d+$", 429, {"Retry-After": "1"}),
]
SECONDARY = {"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."}


@dataclass
class Plan:
    flows: int = 8
    kills: int = 3
    faults: int = 6
    seed: int = 21
    concurrency: int = 4
    timeout: float = 60.0  # per flow, kills and restarts included


@dataclass
class Figures:
    flows: int = 0
    finished: int = 0
    kills: int = 0
    restarts: int = 0
    faults: int = 0
    refused: int = 0  # deliveries that met the bot down (or not answering 2xx)
    redelivered: int = 0
    lost: int = 0
    doubled: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"flows {self.flows} (finished {self.finished}), kills {self.kills}, restarts {self.restarts}, "
                f"faults {self.faults}, refused deliveries {self.refused}, redelivered {self.redelivered}, "
                f"lost {self.lost}, doubled {self.doubled}, {self.seconds:.1f} s")


def listening_port() -> int:
    """A free port below the ephemeral range (net.ipv4.ip_local_port_range starts at 32768): while
    the bot is down no outgoing connection on this machine can take it, so the restart binds it."""
    for port in random.Random().sample(range(20000, 32000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    return free_port()


class Chaos:
    def __init__(self, tmp: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server, plan: Plan) -> None:
        self.tmp, self.github, self.kube, self.s3, self.plan = tmp, github, kube, s3, plan
        self.rng = random.Random(plan.seed)
        self.figures = Figures(flows=plan.flows)
        self.port = listening_port()
        self.same = {"PORT": str(self.port), "FLOPS_BUCKET": "chaos-" + uuid.uuid4().hex[:10],
                     "FLOPS_REDELIVER_INTERVAL": "2s",
                     # a killed holder's Lease expires in 3 s (15 s in deploy/): the restart reports soon
                     "FLOPS_LEASE_DURATION": "3s", "FLOPS_LEASE_RENEW": "2s", "FLOPS_LEASE_RETRY": "1s"}
        self.bot = SimpleNamespace(github=github)  # what tests/test_as_shipped.py's payload helpers read
        self.kinds = [KINDS[n % len(KINDS)] for n in range(plan.flows)]
        self.repos = [f"acme/chaos-{kind}-{n}" for n, kind in enumerate(self.kinds)]
        self.killed = asyncio.Event()
        self.gate = asyncio.Semaphore(plan.concurrency)
        self.kills_left = plan.kills
        self.pid = 0
        self.finished: set[str] = set()

    # ------------------------------------------------------------------ the run

    async def run(self) -> Figures:
        started = time.monotonic()
        self.set_up()
        self.github.hooks.url, self.github.hooks.secret = f"http://127.0.0.1:{self.port}/webhook", SECRET
        pending, flows = list(range(self.plan.flows)), []
        self.kills_left = self.plan.kills
        finisher = asyncio.create_task(self.finish_jobs())
        try:
            while True:
                async with serving(self.tmp, self.github, self.kube, self.s3, **self.same) as served:
                    self.pid, self.figures.restarts = served.process.pid, self.figures.restarts + (flows != [])
                    killed = await self.one_life(pending, flows)
                    if not killed:
                        await self.redelivered_all()
                        break
                    served.process.wait(timeout=10)
                    if pending:  # one flow held back per kill: its delivery meets the bot down
                        flows.append(asyncio.create_task(self.one_flow(pending.pop(0), alone=True)))
                        await wait_for(lambda: self.refusals() > self.figures.refused, timeout=20,
                                       what="a delivery refused while the bot is down")
                        self.figures.refused = self.refusals()
            for task in flows:
                if isinstance(exc := task.exception(), BaseException):
                    self.figures.problems.append(f"flow failed: {exc!r}")
        finally:
            finisher.cancel()
        self.figures.seconds = time.monotonic() - started
        self.audit()
        return self.figures

    async def one_life(self, pending: list[int], flows: list[asyncio.Task[None]]) -> bool:
        """Run flows until the armed kill fires (True) or all are done (False); one pending flow per
        kill still to come is held back for the outage."""
        self.killed.clear()
        if self.kills_left:
            self.arm_kill()
        self.inject_faults()
        while True:
            while pending and len(pending) > self.kills_left and not self.killed.is_set():
                flows.append(asyncio.create_task(self.one_flow(pending.pop(0))))
            everything = asyncio.gather(*flows, return_exceptions=True)
            killed = asyncio.create_task(self.killed.wait())
            await asyncio.wait({everything, killed}, timeout=self.plan.timeout * 3,
                               return_when=asyncio.FIRST_COMPLETED)
            if self.killed.is_set():
                self.kills_left -= 1
                return True
            killed.cancel()
            if not pending:
                return False
            self.kills_left = 0  # the kill never came (its moment did not recur): the held-back flows run now

    def arm_kill(self) -> None:
        """SIGKILL the bot at a seeded GitHub call: the `skip`-th next match of a seeded moment."""
        method, path = self.rng.choice(MOMENTS)
        left = [self.rng.randint(0, 3)]

        def kill() -> None:
            if left[0] > 0:
                left[0] -= 1
                self.github.before_next(method, path, kill)
                return
            os.kill(self.pid, signal.SIGKILL)
            self.figures.kills += 1
            self.killed.set()

        self.github.before_next(method, path, kill)

    def inject_faults(self) -> None:
        """Seeded faults for this life of the bot: 502/503 bursts, a 403 secondary rate limit and a
        429 with Retry-After, a check run or comment created and then answered 502."""
        share = self.plan.faults // (self.plan.kills + 1) + 1
        for _ in range(min(share, self.plan.faults - self.figures.faults)):
            method, path, status, headers = self.rng.choice(FAULTS)
            if self.rng.random() < 0.2:
                self.github.fail_after_applying(self.rng.choice(["POST"]), r"/check-runs$|/issues/\d+/comments$")
            else:
                self.github.fail_next(method, path, status, headers=headers,
                                      body=SECONDARY if status == 403 else None, times=2 if status >= 500 else 1)
            self.figures.faults += 1

    def refusals(self) -> int:
        return len([d for d in self.github.hooks.deliveries if not 200 <= d.status_code < 300])

    async def redelivered_all(self) -> None:
        """Every GUID that had a failed attempt ends with one answered 2xx (the loop runs every 2 s)."""
        def taken() -> bool:
            return all(any(200 <= a.status_code < 300 for a in self.github.hooks.of(d.guid))
                       for d in self.github.hooks.deliveries)
        try:
            await wait_for(taken, timeout=30, what="every failed delivery redelivered")
        except AssertionError as exc:
            self.figures.problems.append(str(exc))

    # ------------------------------------------------------------------ the flows

    def set_up(self) -> None:
        gh = self.github
        gh.add_repo(CONFIG_REPO, default_branch="main")
        files = {f"dev/{repo.split('/')[1]}.yaml": CRONJOB for repo, kind in zip(self.repos, self.kinds)
                 if kind == "push"}
        allow = "".join(f"  - {{repo: {repo}, branches: [master], paths: [\"dev/{repo.split('/')[1]}.yaml\"]}}\n"
                        for repo, kind in zip(self.repos, self.kinds) if kind == "push")
        gh.commit(CONFIG_REPO, "main", {**files, ".github/flops-deploy.yml": f"version: 1\nallow:\n{allow}"},
                  message="manifests", author="ops-human")
        configs = {"push": IMAGES + DEPLOY, "review": "registry: harbor.example.com/flops\n" + REGRESSION,
                   "train": IMAGES + FEDERATED, "tests": IMAGES + TESTS}
        for repo, kind in zip(self.repos, self.kinds):
            gh.add_repo(repo, default_branch="master")
            config = configs[kind].replace("FILE", f"dev/{repo.split('/')[1]}.yaml")
            gh.commit(repo, "master", {**CODE, ".github/flops.yml": config})
            gh.set_permission(repo, MAINTAINER, "write")
        gh.add_installation(INSTALLATION, "acme", [*self.repos, CONFIG_REPO])

    async def one_flow(self, n: int, *, alone: bool = False) -> None:
        flow: Callable[[str], Awaitable[None]] = getattr(self, "flow_" + self.kinds[n])
        try:
            if alone:  # sent at once (the bot is down): not behind the gate
                await flow(self.repos[n])
            else:
                async with self.gate:
                    await flow(self.repos[n])
        except AssertionError as exc:  # a wait that timed out: what the flow never saw
            self.figures.problems.append(f"{self.repos[n]}: {exc}")
            return
        self.figures.finished += 1

    async def flow_push(self, repo: str) -> None:
        file = f"dev/{repo.split('/')[1]}.yaml"
        data = push_payload(self.github, repo, {"fl/server.py": "print('v2')\n"})
        await self.github.deliver("push", data)
        sha = data["after"]
        for name in ("flops/build: server", "flops/build: client", "flops/deploy: dev"):
            await self.completed(repo, sha, name)
        await self.until(lambda: digest("server", sha).encode() in (self.github.file_at(CONFIG_REPO, "main", file)
                                                                     or b""), "the deploy commit")

    async def flow_review(self, repo: str) -> None:
        data = push_payload(self.github, repo, {"README.md": "# model\n"})
        await self.github.deliver("push", data)
        await self.completed(repo, data["after"], "flops/regression")
        head = self.open_pr(repo, 5)
        review = pr_payload(self.bot, "pull_request_review.submitted", repo, 5)  # type: ignore[arg-type]
        review["review"].update(state="approved", commit_id=head)
        review["review"]["user"]["login"] = MAINTAINER
        await self.github.deliver("pull_request_review", review)
        await self.completed(repo, head, "flops/regression")
        await self.until(lambda: self.stickies(repo, 5, "<!-- flops:regression -->"), "the regression comment")

    async def flow_train(self, repo: str) -> None:
        head = self.open_pr(repo, 6)
        comment = comment_payload(self.bot, repo, 6, "/train rounds=2 clients=2")  # type: ignore[arg-type]
        await self.github.deliver("issue_comment", comment)
        await self.completed(repo, head, "flops/federated")

    async def flow_tests(self, repo: str) -> None:
        head = self.open_pr(repo, 9)
        await self.github.deliver("pull_request", pr_payload(self.bot, "pull_request.opened", repo, 9))  # type: ignore[arg-type]
        await self.completed(repo, head, "flops/test: unit")

    def open_pr(self, repo: str, number: int) -> str:
        base = self.github.branch_sha(repo, "master")
        head = self.github.commit(repo, "feature", {"fl/server.py": "print('faster')\n"}, parents=[base])
        self.github.add_pull(repo, number, head, base_branch="master", head_ref="feature")
        return head

    async def completed(self, repo: str, sha: str, name: str) -> None:
        await self.until(lambda: [r for r in self.github.check_runs_for(repo, sha, name) if r["status"] == "completed"],
                         f"{name} completed on {repo}@{sha[:7]}")

    async def until(self, condition: Callable[[], Any], what: str) -> None:
        await wait_for(condition, timeout=self.plan.timeout, what=what)

    def stickies(self, repo: str, number: int, marker: str) -> list[dict[str, Any]]:
        return [c for c in self.github.comments_on(repo, number) if marker in c["body"]]

    # ------------------------------------------------------------------ the cluster's workloads

    async def finish_jobs(self) -> None:
        """Finish every Job the bot started once it carries its check run, as its workload would."""
        client = self.s3.client()
        if not client.bucket_exists("flops-runs"):  # the runs bucket the operator made (README)
            client.make_bucket("flops-runs")
        while True:
            for job in self.kube.list("jobs", NAMESPACE):
                name = job["metadata"]["name"]
                if name not in self.finished and self.ready(job):
                    self.finished.add(name)
                    try:
                        self.finish(job)
                    except Exception as exc:  # noqa: BLE001 - told in the figures, the run goes on
                        self.figures.problems.append(f"finishing {name}: {exc!r}")
            await asyncio.sleep(0.05)  # a poll of the cluster, as a workload's pace; nothing waits on it

    def ready(self, job: dict[str, Any]) -> bool:
        annotations = job["metadata"]["annotations"]
        if job["metadata"]["labels"].get("flops.dev/kind") == "federated-client":
            return job["metadata"]["labels"].get("flops.dev/run", "") in self.finished
        return "flops.dev/check-run-id" in annotations

    def finish(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        kind, name = meta["labels"].get("flops.dev/kind"), meta["name"]
        env = {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0].get("env", [])}
        if kind == "build":
            self.kube.succeed_job(NAMESPACE, name, message=digest(meta["annotations"]["flops.dev/image"],
                                                                   meta["annotations"]["flops.dev/sha"]))
            return
        if kind == "regression":
            self.put(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", {"metrics": {"accuracy": 0.9}})
        elif kind == "federated-server":
            rounds = [{"round": 1, "metrics": {"accuracy": 0.6}}, {"round": 2, "metrics": {"accuracy": 0.8}}]
            self.put(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json",
                     {"rounds": rounds, "metrics": {"accuracy": 0.8}})
        elif kind == "test":
            key = meta["annotations"]["flops.dev/output"] + "results/junit.xml"
            self.s3.client().put_object("flops-runs", key, io.BytesIO(JUNIT), len(JUNIT))
        self.kube.succeed_job(NAMESPACE, name)

    def put(self, bucket: str, key: str, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.s3.client().put_object(bucket, key, io.BytesIO(body), len(body))

    # ------------------------------------------------------------------ what a user would notice

    def audit(self) -> None:
        problems, doubled, lost = self.figures.problems, 0, 0
        for repo in self.repos:
            runs = [run for rid, run in sorted(self.github.check_runs.items())
                    if self.github._check_repo[rid] == repo]  # noqa: SLF001 - every commit's runs
            for (name, sha), count in Counter((r["name"], r["head_sha"]) for r in runs).items():
                if count > 1:
                    doubled += count - 1
                    titles = [(r["conclusion"], r["output"].get("title"), (r["output"].get("summary") or "")[:300]) for r in runs
                              if (r["name"], r["head_sha"]) == (name, sha)]
                    problems.append(f"{repo}: {count} check runs {name!r} on {sha[:7]}: {titles}")
            problems += [f"{repo}: {r['name']!r} left {r['status']}" for r in runs if r["status"] != "completed"]
            for number in (5, 6, 9):
                markers = Counter(m for c in self.github.comments_on(repo, number)
                                  for m in re.findall(r"<!-- flops:[^>]*-->", c["body"]))
                for marker, count in markers.items():
                    if count > 1:
                        doubled += count - 1
                        problems.append(f"{repo}#{number}: {count} comments {marker}")
        for job in self.kube.list("jobs", NAMESPACE):
            if job["metadata"]["labels"].get("flops.dev/kind") != "federated-client" \
                    and "flops.dev/reported" not in job["metadata"]["annotations"]:
                problems.append(f"Job {job['metadata']['name']} never reported")
        for guid in {d.guid for d in self.github.hooks.deliveries}:
            attempts = self.github.hooks.of(guid)
            if not any(200 <= a.status_code < 300 for a in attempts):
                lost += 1
            elif any(a.redelivery and 200 <= a.status_code < 300 for a in attempts):
                self.figures.redelivered += 1
        self.figures.refused = self.refusals()
        self.figures.lost = lost + (self.figures.flows - self.figures.finished)
        self.figures.doubled = doubled
