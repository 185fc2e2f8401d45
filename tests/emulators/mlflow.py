"""An MLflow tracking server's REST API (the part flops-bot and a workload use), over real HTTP.

Why not `mlflow server`: `pip install mlflow` took 100 s here and the server 15 s to answer its first
request (sqlite migrations), over the suite's budget. The shapes below are MLflow's documented REST
API (https://mlflow.org/docs/latest/api_reference/rest-api.html) and were checked against MLflow
3.17.2's server with a sqlite backend: tests/payloads/mlflow/runs-search.json is its recorded answer,
and tests/test_regression_ray.py compares the emulator's answer with it.

    mlflow = MlflowEmulator(); await mlflow.start()
    mlflow.log_run("Codertocat/Hello-World", "flops-regression-...", {"accuracy": 0.91})  # what a workload does
    ... POST {mlflow.url}/api/2.0/mlflow/runs/search
"""
from __future__ import annotations

import re
import time
import uuid
from typing import Any

from aiohttp import web

from tests.emulators.s3 import free_port

P = "/api/2.0/mlflow"
_TERM = re.compile(r"\s*(tags|attributes)\.(`[^`]+`|[A-Za-z0-9_.]+)\s*=\s*'([^']*)'\s*")


class MlflowEmulator:
    def __init__(self) -> None:
        self.url = ""
        self.down = False
        self.padding = 0  # bytes of extra tags on every run searched (an answer too big to read)
        self.requests: list[tuple[str, str]] = []
        self.experiments: dict[str, dict[str, Any]] = {}  # id -> experiment
        self.runs: dict[str, dict[str, Any]] = {}  # run id -> run
        self._runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- what a workload does (through the MLflow client) ------------------------------------------

    def create_experiment(self, name: str) -> str:
        for experiment in self.experiments.values():
            if experiment["name"] == name:
                return str(experiment["experiment_id"])
        stamp = int(time.time() * 1000)
        experiment_id = str(len(self.experiments) + 1)
        self.experiments[experiment_id] = {"experiment_id": experiment_id, "name": name,
                                           "artifact_location": f"mlflow-artifacts:/{experiment_id}",
                                           "lifecycle_stage": "active", "last_update_time": stamp,
                                           "creation_time": stamp, "workspace": "default"}
        return experiment_id

    def log_run(self, experiment: str, run_name: str, metrics: dict[str, float],
                tags: dict[str, str] | None = None) -> str:
        experiment_id = self.create_experiment(experiment)
        run_id, stamp = uuid.uuid4().hex, int(time.time() * 1000)
        all_tags = {**(tags or {}), "mlflow.runName": run_name}
        self.runs[run_id] = {
            "info": {"run_uuid": run_id, "experiment_id": experiment_id, "run_name": run_name, "user_id": "",
                     "status": "FINISHED", "start_time": stamp, "end_time": stamp + 1000,
                     "artifact_uri": f"mlflow-artifacts:/{experiment_id}/{run_id}/artifacts",
                     "lifecycle_stage": "active", "run_id": run_id},
            "data": {"metrics": [{"key": k, "value": v, "timestamp": stamp, "step": 0} for k, v in metrics.items()],
                     "tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
            "inputs": {}, "outputs": {}}
        return run_id

    # --- the REST API ------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path_qs))
        if self.down:
            return web.Response(status=503, text="down")
        route = (request.method, request.path)
        if route == ("GET", f"{P}/experiments/get-by-name"):
            name = request.query.get("experiment_name", "")
            found = [e for e in self.experiments.values() if e["name"] == name]
            if not found:
                return _error(404, "RESOURCE_DOES_NOT_EXIST", f"Could not find experiment with name '{name}'")
            return web.json_response({"experiment": found[0]})
        if route == ("POST", f"{P}/experiments/create"):
            return web.json_response({"experiment_id": self.create_experiment(str((await request.json())["name"]))})
        if route == ("POST", f"{P}/runs/search"):
            return self._search(await request.json())
        return _error(404, "ENDPOINT_NOT_FOUND", "No API route matches this request")

    def _search(self, body: dict[str, Any]) -> web.Response:
        wanted = set(body.get("experiment_ids") or [])
        if not wanted:
            return _error(400, "INVALID_PARAMETER_VALUE", "experiment_ids must be provided")
        terms = [t for t in str(body.get("filter") or "").split(" AND ") if t.strip()]
        parsed = [_TERM.fullmatch(t) for t in terms]
        if not all(parsed):
            return _error(400, "INVALID_PARAMETER_VALUE", f"Invalid filter '{body.get('filter')}'")
        found = [run for run in self.runs.values() if run["info"]["experiment_id"] in wanted
                 and all(_matches(run, m.group(1), m.group(2).strip("`"), m.group(3)) for m in parsed if m)]
        found.sort(key=lambda r: r["info"]["start_time"], reverse=True)
        found = found[: int(body.get("max_results") or 1000)]
        if self.padding:
            found = [{**r, "data": {**r["data"], "tags": r["data"]["tags"] + [{"key": "pad", "value": "x" * self.padding}]}}
                     for r in found]
        return web.json_response({"runs": found} if found else {})


def _matches(run: dict[str, Any], where: str, key: str, value: str) -> bool:
    if where == "attributes":
        return str(run["info"].get({"run_name": "run_name", "status": "status"}.get(key, key))) == value
    return any(t["key"] == key and t["value"] == value for t in run["data"]["tags"])


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error_code": code, "message": message}, status=status)
