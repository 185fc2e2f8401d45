"""Fuzzing the intake (issue 16, Done when): 1,000 signed payloads mutated from the recorded ones
(keys missing, wrong types, nulls, huge strings, unicode) posted to a running bot over real HTTP.

Each mutant must get an answer a client understands (never a 5xx), be counted in `/metrics`, and
leave the bot working: a normal push afterwards still starts its build Job and opens its check run.
The seed is fixed, so a failure replays exactly.
"""
from __future__ import annotations

import asyncio
import copy
import json
import random
import re
from collections import Counter
from typing import Any

from bot.platform import checks
from tests.conftest import NAMESPACE, PAYLOADS, Bed, push_payload

SEED = 16
MUTANTS = 1000
AT_ONCE = 25
REPO = "Codertocat/Hello-World"
CONFIG = "registry: harbor.example.com/flops\nimages:\n  - name: server\n    dockerfile: Dockerfile.server\n"
UNICODE = ["\u202eevil", "\U0001f600" * 50, "\x00nul", "\ud800", "ｍａｉｎ", "e\u0301", "\u200b", "名前"]
INTAKE_OUTCOMES = ("accepted", "ignored", "duplicate", "malformed", "queue_full", "unauthorized")


def recorded() -> list[tuple[str, dict[str, Any]]]:
    """(event, payload) of every recorded delivery: the event is the file name's first part."""
    return [(path.name.split(".")[0], json.loads(path.read_text())) for path in sorted(PAYLOADS.glob("*.json"))]


def wrong_value(rng: random.Random, value: Any) -> Any:
    kinds: list[Any] = [None, 0, -1, 2 ** 70, 1.5, True, "", [], {}, [value], {"x": value},
                        "x" * rng.choice((1_000, 100_000, 1_000_000)), rng.choice(UNICODE),
                        "../../etc/passwd", "refs/heads/" + rng.choice(UNICODE)]
    return rng.choice(kinds)


def containers(node: Any, found: list[Any]) -> list[Any]:
    """Every dict and list inside `node` (itself included), where a mutation can land."""
    if isinstance(node, (dict, list)):
        found.append(node)
        for child in (node.values() if isinstance(node, dict) else node):
            containers(child, found)
    return found


def mutate(rng: random.Random, data: dict[str, Any]) -> dict[str, Any]:
    mutant = copy.deepcopy(data)
    for _ in range(rng.randint(1, 3)):
        target = rng.choice([c for c in containers(mutant, []) if c])
        key = rng.choice(list(target)) if isinstance(target, dict) else rng.randrange(len(target))
        if isinstance(target, dict) and rng.random() < 0.3:
            del target[key]  # a missing key
        elif isinstance(target, dict) and rng.random() < 0.1:
            target[rng.choice(UNICODE)] = wrong_value(rng, None)  # an unexpected key
        else:
            target[key] = wrong_value(rng, target[key])  # a wrong type, a null, a huge or odd string
    return mutant


def of_its_own(data: dict[str, Any], number: int) -> dict[str, Any]:
    """The payload about a pull request of its own: 1,000 pull requests, not one PR's 1,000 events
    (the dispatcher runs one PR's deliveries in order, which would make the test slow, not harder)."""
    data = copy.deepcopy(data)
    if "number" in data:
        data["number"] = number
    for name in ("pull_request", "issue"):
        if isinstance(data.get(name), dict) and "number" in data[name]:
            data[name]["number"] = number
    for pr in (data.get("check_run") or {}).get("pull_requests") or []:
        pr["number"] = number
    return data


def mutants() -> list[tuple[str, bytes]]:
    rng = random.Random(SEED)
    sources = recorded()
    made = []
    for i in range(MUTANTS):
        event, data = rng.choice(sources)
        made.append((event, json.dumps(mutate(rng, of_its_own(data, 1000 + i))).encode()))
    return made


def deliveries_by_outcome(text: str) -> Counter[str]:
    counted: Counter[str] = Counter()
    for outcome, value in re.findall(r'^flops_webhook_deliveries_total\{event="[^"]*",outcome="([^"]+)"\} (\S+)$',
                                     text, re.M):
        counted[outcome] += int(float(value))
    return counted


async def metrics_text(bed: Bed) -> str:
    async with bed.session.get(bed.url("/metrics")) as response:
        return await response.text()


async def test_a_thousand_mutated_signed_payloads_are_all_answered_counted_and_survived(bed: Bed) -> None:
    bed.github.add_repo(REPO, default_branch="master")
    bed.github.commit(REPO, "master", {".github/flops.yml": CONFIG, "Dockerfile.server": "FROM python:3.11\n"})
    made = mutants()
    assert {event for event, _ in made} >= {"push", "pull_request", "issue_comment", "check_run"}
    statuses: Counter[int] = Counter()
    for start in range(0, MUTANTS, AT_ONCE):
        answers = await asyncio.gather(*(bed.deliver(event, body) for event, body in made[start:start + AT_ONCE]))
        statuses.update(answer.status for answer in answers)
    assert set(statuses) <= {200, 202, 400}, statuses  # no 5xx: nothing crashed at the intake
    await bed.settle()
    counted = deliveries_by_outcome(await metrics_text(bed))
    assert sum(counted[outcome] for outcome in INTAKE_OUTCOMES) == MUTANTS, counted  # every mutant counted once
    assert counted["processed"] + counted["failed"] == counted["accepted"], counted  # and each accepted one ended
    assert counted["accepted"] > 100 and counted["malformed"] > 0, counted  # the fuzz reached the handlers

    data = push_payload(bed.github, REPO, {"Dockerfile.server": "FROM python:3.12\n"})
    assert (await bed.deliver("push", data)).status == 202
    await bed.settle()
    jobs = [job for job in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
            if job["metadata"]["annotations"].get("flops.dev/sha") == data["after"]]
    assert len(jobs) == 1
    assert [run["name"] for run in bed.github.check_runs_for(REPO, data["after"])] == [checks.build_name("server")]


def test_the_mutants_are_the_same_every_run() -> None:
    first, second = mutants()[:50], mutants()[:50]
    assert first == second
