"""Federated training runs: an aggregation server Job, a Service, N client Jobs; one report.

The run ends when the server Job ends: clients still running are then deleted, the roster says
how each client fared, and `flops/federated` shows the per-round table, the final metrics and a
presigned link to the global model. A run that outlives `timeout` is stopped by Kubernetes
(activeDeadlineSeconds) and reported `timed_out` with the server's log tail.
"""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from gidgethub.abc import GitHubAPI

from bot import builds, checks, comments, jobs
from bot.config import FederatedConfig, RepoConfig, Resources
from bot.deps import Deps
from bot.pulls import PullRef
from bot.tracker import diagnose, log_tail

log = logging.getLogger(__name__)

MODEL_LINK_TTL = timedelta(days=7)
MARKER = "<!-- flops:federated -->"


def pending_key(repo: str, sha: str) -> str:
    """A run waiting for its images to build (S3: survives restarts)."""
    return f"pending/{repo}/{sha}/train.json"


async def start_for_pr(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, pr: PullRef, *, rounds: int | None,
                       clients: int | None, trigger: str, attempt: str) -> str:
    """`/train`: run now if the head's images are built, else build them and run afterwards."""
    fed = cfg.federated
    assert fed is not None
    request = {"repo": pr.repo, "sha": pr.head_sha, "installation_id": pr.installation_id, "pr": pr.number,
               "rounds": rounds or fed.rounds, "clients": clients or fed.clients, "trigger": trigger,
               "attempt": attempt, "federated": _fed_dict(fed)}
    records = await builds_for(deps, pr.repo, pr.head_sha, fed)
    if records is not None:
        run_id = await launch(gh, deps, request, records)
        return f"federated run `{run_id}` started: {request['rounds']} rounds, {request['clients']} clients."
    await deps.artifacts.put_json(pending_key(pr.repo, pr.head_sha), request)
    names = tuple(sorted({fed.server_image, fed.client_image}))
    await builds.start_for_pr(gh, deps, cfg, pr, names, attempt)
    return (f"building {', '.join(f'`{n}`' for n in names)} for {pr.head_sha[:7]} first; the run "
            f"({request['rounds']} rounds, {request['clients']} clients) starts when they are built.")


async def queue_after_push(deps: Deps, fed: FederatedConfig, repo: str, sha: str, installation_id: int) -> None:
    """`federated.on_push`: a smoke run of a default-branch commit once its images are built."""
    await deps.artifacts.put_json(pending_key(repo, sha), {
        "repo": repo, "sha": sha, "installation_id": installation_id, "pr": None, "rounds": fed.rounds,
        "clients": fed.clients, "trigger": "push", "attempt": "", "federated": _fed_dict(fed)})


async def after_build(gh: GitHubAPI, deps: Deps, record: dict[str, Any]) -> None:
    """After-build hook: start a pending run once both of its images are built."""
    request = await deps.artifacts.get_json(pending_key(record["repo"], record["sha"]))
    if request is None:
        return
    records = await builds_for(deps, record["repo"], record["sha"], _fed_from(request["federated"]))
    if records is None:
        return
    await deps.artifacts.delete(pending_key(record["repo"], record["sha"]))
    await launch(gh, deps, request, records)


async def builds_for(deps: Deps, repo: str, sha: str, fed: FederatedConfig) -> dict[str, dict[str, Any]] | None:
    records = {}
    for image in {fed.server_image, fed.client_image}:
        record = await deps.artifacts.get_json(builds.record_key(repo, sha, image))
        if record is None:
            return None
        records[image] = record
    return records


async def launch(gh: GitHubAPI, deps: Deps, request: dict[str, Any], records: dict[str, dict[str, Any]]) -> str:
    """Server Job (with the check-run id), then the Service and clients owned by it."""
    fed = _fed_from(request["federated"])
    src = jobs.Source(request["repo"], request["sha"], int(request["installation_id"]), pr=request["pr"])
    run = jobs.FederatedRun(
        source=src, port=fed.server_port, rounds=int(request["rounds"]), clients=int(request["clients"]),
        timeout=fed.timeout, trigger=request["trigger"], attempt=request["attempt"],
        server=jobs.Workload(image=records[fed.server_image]["reference"], resources=fed.resources),
        client=jobs.Workload(image=records[fed.client_image]["reference"], resources=fed.resources))
    cluster = jobs.cluster_from(deps.settings)
    server = jobs.federated_server_job(run, cluster)
    if await deps.kube.get_job(run.run_id) is not None:
        return run.run_id
    check_id = await checks.create(
        gh, src.repo, src.sha, checks.FEDERATED, external_id=run.run_id, title="Federated training running",
        summary=f"Run `{run.run_id}`: server `{run.server.image}`, {run.clients} × client `{run.client.image}`, "
                f"{run.rounds} rounds, timeout {run.timeout // 60} min (started by {run.trigger}).")
    server["metadata"]["annotations"][jobs.CHECK_RUN] = str(check_id)
    created = await deps.kube.create_job(server)
    if created is None:
        return run.run_id
    await deps.kube.create_service(jobs.federated_service(run, cluster, created))
    for index in range(run.clients):
        await deps.kube.create_job(jobs.federated_client_job(run, cluster, index, created))
    log.info("federated run started", extra={"repo": src.repo, "sha": src.sha, "run": run.run_id,
                                             "clients": run.clients, "rounds": run.rounds})
    return run.run_id


# --- report ---------------------------------------------------------------------------------------

async def report(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """Tracker reporter for `flops.dev/kind: federated-server`: the whole run's verdict."""
    ann, run_id = jobs.annotations(job), jobs.name_of(job)
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    roster = await stop_clients(deps, run_id)
    await deps.kube.delete_service(run_id)
    metrics = await deps.artifacts.get_json(ann[jobs.OUTPUT] + "metrics.json") if result.succeeded else None
    failed_clients = [c for c in roster if c["outcome"].startswith("failed")]
    if result.succeeded and isinstance(metrics, dict) and isinstance(metrics.get("rounds"), list):
        conclusion = "failure" if failed_clients else "success"
        title = f"{len(metrics['rounds'])} rounds, {len(roster)} clients" + (
            f", {len(failed_clients)} client(s) failed" if failed_clients else "")
        summary = await _success_summary(deps, ann, metrics, roster)
        text = None
    else:
        pods = await deps.kube.job_pods(run_id)
        diagnosis = diagnose(result, pods) if not result.succeeded else None
        conclusion = "timed_out" if result.reason == "DeadlineExceeded" else "failure"
        why = diagnosis.reason if diagnosis else f"the server wrote no valid `{ann[jobs.OUTPUT]}metrics.json`"
        title = f"Federated run {'timed out' if conclusion == 'timed_out' else 'failed'}"
        summary = f"**Reason:** {why}\n\n" + roster_table(roster)
        tail = await log_tail(deps, diagnosis.pod if diagnosis else None, "server", pods)
        text = f"Last lines of the server log:\n\n```\n{tail.rstrip()}\n```" if tail else None
    await checks.complete(gh, ann[jobs.REPO], ann[jobs.CHECK_RUN], conclusion, title=title, summary=summary, text=text)
    if ann.get(jobs.PR):
        await comments.upsert(gh, ann[jobs.REPO], int(ann[jobs.PR]), MARKER,
                             f"{MARKER}\n### flops/federated · `{ann[jobs.SHA][:7]}` · **{conclusion}**\n\n{title}\n\n"
                             f"{summary}")
    return conclusion


async def stop_clients(deps: Deps, run_id: str) -> list[dict[str, str]]:
    """Each client's outcome; the ones still running are deleted (the run is over)."""
    roster = []
    for job in await deps.kube.list_jobs(f"{jobs.SELECTOR},{jobs.KIND}={jobs.FEDERATED_CLIENT},{jobs.RUN}={run_id}"):
        state = jobs.outcome(job)
        if state.finished and state.succeeded:
            outcome = "succeeded"
        elif state.finished:
            pods = await deps.kube.job_pods(jobs.name_of(job))
            outcome = f"failed: {diagnose(state, pods).reason}"
        else:
            await deps.kube.delete_job(jobs.name_of(job))
            outcome = "stopped (still running when the server finished)"
        roster.append({"client": jobs.annotations(job).get(jobs.A + "client-id", "?"), "job": jobs.name_of(job),
                       "outcome": outcome})
    return sorted(roster, key=lambda c: int(c["client"]) if c["client"].isdigit() else 0)


async def _success_summary(deps: Deps, ann: dict[str, str], metrics: dict[str, Any],
                           roster: list[dict[str, str]]) -> str:
    rounds = metrics["rounds"]
    names = sorted({k for r in rounds for k in (r.get("metrics") or {})})
    header = "| round | " + " | ".join(names) + " |\n|---:|" + "---:|" * len(names)
    rows = [f"| {r.get('round', i + 1)} | " + " | ".join(_fmt((r.get("metrics") or {}).get(n)) for n in names) + " |"
            for i, r in enumerate(rounds)]
    final = metrics.get("metrics") or {}
    final_text = ", ".join(f"**{k}** {_fmt(v)}" for k, v in sorted(final.items())) or "—"
    model = await model_links(deps, ann[jobs.OUTPUT] + "model/")
    return (f"### Rounds\n\n{header}\n" + "\n".join(rows) + f"\n\n### Final metrics\n\n{final_text}\n\n"
            f"### Global model\n\n{model}\n\n### Clients\n\n{roster_table(roster)}")


async def model_links(deps: Deps, prefix: str) -> str:
    keys = await deps.artifacts.list_keys(prefix)
    if not keys:
        return f"No model was written under `{prefix}`."
    days = MODEL_LINK_TTL.days
    links = [f"- [{key[len(prefix):]}]({await deps.artifacts.presigned_get(key, MODEL_LINK_TTL)}) "
             f"(link expires in {days} days; `s3://{deps.artifacts.bucket}/{key}` stays)" for key in keys[:10]]
    return "\n".join(links)


def roster_table(roster: list[dict[str, str]]) -> str:
    if not roster:
        return "No client Jobs were found."
    return "| client | Job | outcome |\n|---:|---|---|\n" + "\n".join(
        f"| {c['client']} | `{c['job']}` | {c['outcome']} |" for c in roster)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def _fed_dict(fed: FederatedConfig) -> dict[str, Any]:
    return {"server_image": fed.server_image, "server_port": fed.server_port, "client_image": fed.client_image,
            "timeout": fed.timeout, "resources": {"cpu": fed.resources.cpu, "memory": fed.resources.memory,
                                                  "gpu": fed.resources.gpu}}


def _fed_from(data: dict[str, Any]) -> FederatedConfig:
    """The parts of a FederatedConfig a launch needs, from a pending request."""
    return FederatedConfig(server_image=data["server_image"], server_port=int(data["server_port"]),
                           client_image=data["client_image"], clients=1, rounds=1, timeout=int(data["timeout"]),
                           max_clients=1, max_rounds=1, on_push=False, resources=Resources(**data["resources"]))
