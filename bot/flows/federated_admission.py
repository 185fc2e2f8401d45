"""A federated run under Kueue: its clients start once the server is admitted; a run not fully
admitted within `federated.admission_timeout` is cancelled as a whole (by the tracker, which asks
`waiting` what still waits), so a half-admitted run never holds quota forever.

The queued server Job carries what its clients are made of (`flops.dev/clients-pending`, removed once
they exist): Kubernetes stays the only state, and a restarted bot starts them just the same.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from bot.core import jobs
from bot.core.config import Resources
from bot.core.jobs import kueue
from bot.flows.deps import Deps
from bot.platform import logs

log = logs.get_logger(__name__)

CLIENTS_PENDING = jobs.A + "clients-pending"


def pending_clients(run: jobs.FederatedRun, admission_timeout: int) -> dict[str, str]:
    """The queued server Job's annotations: what its clients are made of, and the run's admission timeout."""
    data = {"run": asdict(run)}
    return {CLIENTS_PENDING: json.dumps(data, separators=(",", ":")), kueue.ADMISSION_TIMEOUT: str(admission_timeout)}


def run_from_json(data: dict[str, Any]) -> jobs.FederatedRun:
    def workload(part: dict[str, Any]) -> jobs.Workload:
        return jobs.Workload(image=part["image"], resources=Resources(**part["resources"]))

    return jobs.FederatedRun(**{**data, "source": jobs.Source(**data["source"]), "server": workload(data["server"]),
                                "client": workload(data["client"])})


async def start_clients(deps: Deps, run: jobs.FederatedRun, server: dict[str, Any], queue: str | None) -> None:
    """The run's client Jobs, owned by the server Job (one that exists is left as it is: 409), queued in
    the server's LocalQueue when it has one."""
    cluster = jobs.cluster_from(deps.settings)
    for index in range(run.clients):
        await deps.kube.create_job(kueue.enqueue(jobs.federated_client_job(run, cluster, index, server), queue))


async def admitted(server: dict[str, Any], deps: Deps) -> None:
    """Kueue admitted the server: its clients are created now (queued too), once."""
    pending = jobs.annotations_of(server).get(CLIENTS_PENDING)
    if not pending:
        return
    run = run_from_json(json.loads(pending)["run"])
    await start_clients(deps, run, server, kueue.queue_of(server))
    await deps.kube.annotate_job(jobs.name_of(server), {CLIENTS_PENDING: None})
    log.info("federated server admitted; clients created", extra={"run": run.run_id, "clients": run.clients})


async def waiting(server: dict[str, Any], deps: Deps) -> str:
    """Which part of the run still waits for Kueue ("" when all of it was admitted)."""
    name, ann = jobs.name_of(server), jobs.annotations_of(server)
    if kueue.suspended(server):
        return f"the server (Job `{name}`) waited for its admission, so no client was started"
    found = {jobs.name_of(job): job for job in await deps.kube.list_jobs(
        f"{jobs.SELECTOR},{jobs.KIND}={jobs.FEDERATED_CLIENT},{jobs.RUN}={name}")}
    names = [jobs.federated_client_name(name, i) for i in range(int(ann.get(jobs.CLIENTS) or 0))]
    waited = [(i, n) for i, n in enumerate(names) if n not in found or kueue.suspended(found[n])]
    if not waited:
        return ""
    listed = ", ".join(f"{i} (`{n}`)" for i, n in waited)
    return (f"the server ran, but client{'s' if len(waited) > 1 else ''} {listed} of {len(names)} "
            f"waited for {'their' if len(waited) > 1 else 'its'} admission")
