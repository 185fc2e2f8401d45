"""What the bot keeps of a run once it finished, so its page outlives its Pods: the run's record and each
container's log, masked as check-run log tails are (`diagnosis.masker`), bounded in size, in the bot's own
bucket (FLOPS_BUCKET: Jobs hold no key to it, so a workload cannot rewrite what its page shows).

    runs/ids/<run id>.json                          the run (bot.core.runs.Run.to_json)
    runs/repos/<owner>/<name>/<created>-<run id>    the same, listed by `/runs?repo=` newest last
    runs/logs/<run id>/<pod>/<container>.log        the container's masked log, its last ARCHIVE_LINES
                                                    lines, at most ARCHIVE_BYTES
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from bot.core import jobs, runs
from bot.flows import rayjobs
from bot.flows.deps import Deps
from bot.flows.diagnosis import masker
from bot.platform import logs
from bot.platform.logs import MASK, Redactor

log = logs.get_logger(__name__)

ARCHIVE_BYTES = 4 * 1024 * 1024
ARCHIVE_LINES = 50_000
LISTED = 200  # records read for one `/runs?repo=` page at most
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}-----")
_PEM_END = re.compile(r"-----END [A-Z0-9 ]{0,40}-----")


def record_key(run_id: str) -> str:
    return f"runs/ids/{run_id}.json"


def index_prefix(repo: str) -> str:
    return f"runs/repos/{repo}/"


def log_key(run_id: str, pod: str, container: str) -> str:
    return f"runs/logs/{run_id}/{pod}/{container}.log"


class LineMasker:
    """`Redactor` for a log read a line at a time: a PEM block spread over lines is masked whole."""

    def __init__(self, redact: Redactor) -> None:
        self._redact = redact
        self._inside = False

    def __call__(self, line: str) -> str:
        if self._inside:
            self._inside = not _PEM_END.search(line)
            return MASK
        if _PEM_BEGIN.search(line) and not _PEM_END.search(line):
            self._inside = True
            return MASK
        return self._redact(line)


async def run_from_cluster(deps: Deps, run_id: str) -> tuple[runs.Run | None, dict[str, dict[str, Any]]]:
    """The run as its Jobs and Pods say now, and its Pods' specs by name (what masks their logs)."""
    selector = f"{jobs.SELECTOR},{jobs.RUN}={run_id}"
    found = await deps.kube.list_jobs(selector) + await deps.kube.list_jobs(selector, kind=jobs.RAYJOB)
    pods = {jobs.name_of(job): await (rayjobs.run_pods(deps, job) if jobs.api_kind(job) == jobs.RAYJOB
                                      else deps.kube.job_pods(jobs.name_of(job))) for job in found}
    specs = {str(p["metadata"]["name"]): p.get("spec") or {} for listed in pods.values() for p in listed}
    return runs.run_of(run_id, found, pods), specs


async def kept_run(deps: Deps, run_id: str) -> runs.Run | None:
    """The record kept when the run finished; None when there is none (or it is not readable)."""
    try:
        data = await deps.artifacts.get_json(record_key(run_id))
        return runs.Run.from_json(data) if isinstance(data, dict) else None
    except ValueError:
        log.warning("run record unreadable", extra={"run": run_id})
        return None


async def keep(deps: Deps, run_id: str, conclusion: str) -> None:
    """Store the finished run's record and its containers' masked logs (the tracker, before it marks the run
    reported; a failure here is logged, never holds the report)."""
    run, specs = await run_from_cluster(deps, run_id)
    if run is None:
        return
    run = dataclasses.replace(run, conclusion=conclusion)
    for job in run.jobs:
        for pod in job.pods:
            redact = await masker(deps, specs.get(pod.name, {}))
            for container in pod.containers:
                text = await deps.kube.whole_log(pod.name, container.name, ARCHIVE_BYTES, ARCHIVE_LINES)
                if text is not None:
                    masked = "\n".join(map(LineMasker(redact), text.split("\n")))
                    await deps.artifacts.put_bytes(log_key(run_id, pod.name, container.name), masked.encode(),
                                                   "text/plain; charset=utf-8")
    record = run.to_json()
    await deps.artifacts.put_json(record_key(run_id), record)
    stamp = re.sub(r"[^0-9]", "", run.created)[:14] or "0"
    await deps.artifacts.put_json(f"{index_prefix(run.repo)}{stamp}-{run_id}.json", record)
    log.info("run kept", extra={"run": run_id, "repo": run.repo, "pods": sum(len(j.pods) for j in run.jobs)})


async def kept_log(deps: Deps, run_id: str, pod: str, container: str) -> str | None:
    data = await deps.artifacts.get_bytes(log_key(run_id, pod, container), ARCHIVE_BYTES + 1024)
    return None if data is None else data.decode("utf-8", "replace")


async def kept_runs(deps: Deps, repo: str) -> list[runs.Run]:
    """The newest LISTED records of `repo`'s finished runs."""
    keys = sorted(await deps.artifacts.list_keys(index_prefix(repo)))[-LISTED:]
    found = []
    for key in keys:
        try:
            data = await deps.artifacts.get_json(key)
            if isinstance(data, dict):
                found.append(runs.Run.from_json(data))
        except (ValueError, TypeError):
            continue
    return found
