"""MLflow's tracking server, read through its REST API: one regression run looked up by its run name.

Two documented calls (https://mlflow.org/docs/latest/api_reference/rest-api.html):
`GET /api/2.0/mlflow/experiments/get-by-name` (the experiment's id) and `POST /api/2.0/mlflow/runs/search`
filtered on the run-name tag (`tags.`mlflow.runName``). Answers are bounded in size and time; any
failure (down, 404, not JSON) is "not found": a report never waits on MLflow or fails because of it.

Anyone who can reach an MLflow server without authentication can log a run under a name that can be
guessed (run ids are deterministic). So a run counts only when it is the only one of its name and
started after its Job was created (`since`, less SKEW for the clocks): a second run of that name, or
one logged before the Job existed, makes the answer "not found" instead of "the newest one".
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.platform import logs

log = logs.get_logger(__name__)

TIMEOUT = 10.0  # seconds for each call
MAX_ANSWER = 1 << 20  # bytes read of an answer
MAX_METRICS = 200
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # experiment and run ids as MLflow makes them (digits, hex uuids)
_RUN_NAME = re.compile(r"[A-Za-z0-9._-]{1,250}")  # the bot's run ids: nothing to quote in a filter
_METRIC = re.compile(r"[A-Za-z0-9_.\-/ ]{1,100}")
SKEW = 60_000  # ms a workload's clock (which stamps the run's start) may be behind the API server's


@dataclass(frozen=True)
class Run:
    """An MLflow run: where its page is, and its latest metrics."""

    experiment_id: str
    run_id: str
    url: str
    metrics: dict[str, float] = field(default_factory=dict)


async def find_run(tracking_uri: str, experiment: str, run_name: str, since: float = 0.0) -> Run | None:
    """The run named `run_name` in `experiment` on the tracking server at `tracking_uri`; None when
    there is none, MLflow cannot be asked, or the name is not the one run's started after `since`
    (seconds since the epoch: when the bot's Job was created)."""
    if not _RUN_NAME.fullmatch(run_name):
        return None
    base = tracking_uri.rstrip("/")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
            found = await _get(session, f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name="
                                        f"{quote(experiment, safe='')}")
            experiment_id = str(((found or {}).get("experiment") or {}).get("experiment_id") or "")
            if not _ID.fullmatch(experiment_id):
                return None
            search = {"experiment_ids": [experiment_id], "filter": f"tags.`mlflow.runName` = '{run_name}'",
                      "max_results": 2, "order_by": ["attributes.start_time DESC"]}
            answer = await _post(session, f"{base}/api/2.0/mlflow/runs/search", search)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("MLflow lookup failed", extra={"tracking_uri": base, "run": run_name, "error": repr(exc)})
        return None
    return _run_of(base, experiment_id, answer, run_name, since)


def _run_of(base: str, experiment_id: str, answer: dict[str, Any] | None, name: str, since: float) -> Run | None:
    runs = (answer or {}).get("runs")
    if not isinstance(runs, list) or not runs or not isinstance(runs[0], dict):
        return None
    info, data = runs[0].get("info") or {}, runs[0].get("data") or {}
    started = int(info["start_time"]) if str(info.get("start_time")).isdigit() else -1  # int64: a number, or text
    if len(runs) > 1 or started < since * 1000 - SKEW:
        log.warning("MLflow run not used: another run has its name, or it started before its Job",
                    extra={"run": name, "runs": len(runs), "start_time": started})
        return None
    run_id = str(info.get("run_id") or info.get("run_uuid") or "")
    if not _ID.fullmatch(run_id):
        return None
    return Run(experiment_id, run_id, f"{base}/#/experiments/{experiment_id}/runs/{run_id}",
               metrics_of(data.get("metrics")))


def metrics_of(value: object) -> dict[str, float]:
    """`data.metrics` (`[{key, value, timestamp, step}]`, the latest value of each) as a name -> value map;
    names the gate could not name, and values that are not finite numbers, are left out."""
    found: dict[str, float] = {}
    for item in value if isinstance(value, list) else []:
        key, number = (item.get("key"), item.get("value")) if isinstance(item, dict) else (None, None)
        if isinstance(key, str) and _METRIC.fullmatch(key) and isinstance(number, (int, float)) \
                and not isinstance(number, bool) and math.isfinite(number) and len(found) < MAX_METRICS:
            found[key] = float(number)
    return found


async def _get(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    async with session.get(url, allow_redirects=False) as response:
        return await _answer(response)


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
    async with session.post(url, json=body, allow_redirects=False) as response:
        return await _answer(response)


async def _answer(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """The JSON object of a 200 answer (at most MAX_ANSWER bytes read); None for any other status."""
    if response.status != 200:
        return None
    raw = bytearray()
    async for chunk in response.content.iter_chunked(1 << 16):
        raw += chunk
        if len(raw) > MAX_ANSWER:
            raise ValueError(f"MLflow answered more than {MAX_ANSWER} bytes")
    data = json.loads(bytes(raw))
    return data if isinstance(data, dict) else None
