"""Federated training runs: an aggregation server Job, a Service, N client Jobs; one report.

A run uses built images: for `/train`, the builds of the PR head (from `/build`, a push, or built
now, the run waiting in S3 until they are done); for `federated.on_push`, the images the push
rebuilt, the others from the newest build of the branch. The run ends when the server Job ends:
clients still running are then deleted, the roster says how each client fared, and
`flops/federated` shows the per-round table, the final metrics and presigned links to the global
model. A run that outlives `timeout` is stopped by the tracker (the server's log still readable)
and reported `timed_out` with the server's log tail.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.core.config import FederatedConfig, RepoConfig
from bot.core.records import BuildRecord
from bot.core.text import code_block, duration, escape, link, plain, timestamp
from bot.flows import builds, lifecycle
from bot.flows import federated_admission as admission
from bot.flows import kueue as queueing
from bot.flows.builds import Push
from bot.flows.deps import Deps
from bot.flows.diagnosis import diagnose, log_tail
from bot.flows.kueue import elsewhere
from bot.flows.pending import RunRequest, drop_pending, pending_key, read_pending
from bot.flows.pulls import PullRef
from bot.platform import checks, comments, logs
from bot.platform.github import LOOK_FIRST

log = logs.get_logger(__name__)

__all__ = ["KIND", "RunRequest", "after_build", "drop_pending", "on_push", "start_for_pr"]

MODEL_LINK_TTL = timedelta(days=7)
MODEL_LINKS = 20  # files of the model listed with a link; the rest by count
MARKER = "<!-- flops:federated -->"
ROUND_COLUMNS = 12  # metrics shown per round
ROUNDS_SHOWN = 200  # the last rounds of a long run


# --- starting a run -------------------------------------------------------------------------------

async def start_for_pr(gh: GitHubAPI, deps: Deps, cfg: RepoConfig, pr: PullRef, *, rounds: int | None,
                       clients: int | None, trigger: str, attempt: str) -> str:
    """`/train`: run now if the head's images are built, else build the missing ones and run after."""
    fed = cfg.federated
    assert fed is not None
    rounds, clients = rounds or fed.rounds, clients or fed.clients
    if not (1 <= rounds <= fed.max_rounds and 1 <= clients <= fed.max_clients):
        return (f"`rounds` must be 1..{fed.max_rounds} and `clients` 1..{fed.max_clients} "
                f"(`federated.max_rounds` / `max_clients` in `.github/flops.yml`).")
    request = RunRequest.of(fed, repo=pr.repo, sha=pr.head_sha, installation_id=pr.installation_id, pr=pr.number,
                            rounds=rounds, clients=clients, trigger=trigger, attempt=attempt)
    what = f"{rounds} round{'s' if rounds != 1 else ''}, {clients} client{'s' if clients != 1 else ''}"
    refs = await image_refs(deps, request)
    if refs is not None:
        run_id = await launch(gh, deps, request, refs)
        return f"federated run `{run_id}` started ({what}) with the builds of {pr.head_sha[:7]}; " \
               f"`{checks.FEDERATED}` reports it."
    building = await builds_in_progress(deps, request)
    missing = tuple([n for n in request.images if n not in building
                     and await builds.read_record(deps, builds.record_key(request.repo, request.sha, n)) is None])
    if missing and cfg.pr_registry is None:
        return (f"this run needs {', '.join(f'`{n}`' for n in missing)} built from {pr.head_sha[:7]}, and pull-request "
                f"images are pushed only to `pr_registry`, which the base branch's `.github/flops.yml` does not set: "
                f"`pr_registry` is required for `/train` on a pull request.")
    await deps.artifacts.put_json(pending_key(request.repo, request.sha), request.to_json())
    if missing:
        await builds.start_for_pr(gh, deps, cfg, pr, missing, attempt)
    launched = await try_launch(gh, deps, request)  # a build finished meanwhile, or was reused (inputs unchanged)
    if launched is not None:
        return f"federated run `{launched}` started ({what}) with the builds of {pr.head_sha[:7]}; " \
               f"`{checks.FEDERATED}` reports it."
    names = ", ".join(f"`{n}`" for n in sorted(set(missing) | building))
    return f"building {names} for {pr.head_sha[:7]} first; the federated run ({what}) starts when the images are built."


async def on_push(gh: GitHubAPI, deps: Deps, fed: FederatedConfig, push: Push, started: list[str]) -> None:
    """`federated.on_push`: a smoke run of a default-branch commit once the images it rebuilt are
    built; an image this push did not rebuild comes from the branch's newest build."""
    fresh = tuple(n for n in dict.fromkeys((fed.server_image, fed.client_image)) if n in started)
    if not fresh or push.branch is None:
        return
    request = RunRequest.of(fed, repo=push.repo, sha=push.sha, installation_id=push.installation_id, pr=None,
                            rounds=fed.rounds, clients=fed.clients, trigger="push", attempt="", branch=push.branch,
                            fresh=fresh)
    await deps.artifacts.put_json(pending_key(push.repo, push.sha), request.to_json())
    await try_launch(gh, deps, request)


async def after_build(gh: GitHubAPI, deps: Deps, record: BuildRecord) -> None:
    """After-build hook: start the commit's pending run once all of its images are built."""
    request = await read_pending(deps, record.repo, record.sha)
    if request is not None:
        await try_launch(gh, deps, request)


async def try_launch(gh: GitHubAPI, deps: Deps, request: RunRequest) -> str | None:
    refs = await image_refs(deps, request)
    if refs is None:
        return None
    run_id = await launch(gh, deps, request, refs)
    await deps.artifacts.delete(pending_key(request.repo, request.sha))
    return run_id


async def image_refs(deps: Deps, request: RunRequest) -> dict[str, str] | None:
    """Image name -> pull-by-digest reference, or None while one is not built yet."""
    refs = {}
    for name in request.images:
        record = await builds.read_record(deps, builds.record_key(request.repo, request.sha, name))
        if record is None and request.branch and name not in request.fresh:
            record = await builds.read_record(deps, builds.latest_key(request.repo, request.branch, name))
        if record is None:
            return None
        refs[name] = record.reference
    return refs


async def builds_in_progress(deps: Deps, request: RunRequest) -> set[str]:
    """The run's images with a build Job for this commit that has not reported yet."""
    names = set()
    for job in await lifecycle.unreported(deps, jobs.BUILD, repo=request.repo, sha=request.sha):
        ann, state = jobs.annotations_of(job), jobs.outcome(job)
        if ann.get(jobs.IMAGE) in request.images and (not state.finished or state.succeeded):
            names.add(ann[jobs.IMAGE])
    return names


def run_of(request: RunRequest, refs: dict[str, str]) -> jobs.FederatedRun:
    src = jobs.Source(request.repo, request.sha, request.installation_id, ref=request.branch, pr=request.pr)
    return jobs.FederatedRun(
        source=src, port=request.port, rounds=request.rounds, clients=request.clients, timeout=request.timeout,
        trigger=request.trigger, attempt=request.attempt,
        server=jobs.Workload(image=refs[request.server_image], resources=request.resources),
        client=jobs.Workload(image=refs[request.client_image], resources=request.resources))


async def launch(gh: GitHubAPI, deps: Deps, request: RunRequest, refs: dict[str, str]) -> str:
    """Server Job first (its name is the run id: a second launch gets 409 and stops), then the
    Service and clients it owns, then the check run, whose id goes on the server Job. Under a Kueue
    queue the clients start once Kueue admitted the server (`federated_admission`). Launches of one
    run in this process go one at a time (a launch a crash cut short is resumed by one of them)."""
    run = run_of(request, refs)
    async with deps.locks.setdefault("federated:" + run.run_id, asyncio.Lock()):
        return await _launch(gh, deps, request, run)


async def _launch(gh: GitHubAPI, deps: Deps, request: RunRequest, run: jobs.FederatedRun) -> str:
    cluster = jobs.cluster_from(deps.settings)
    src = run.source
    queue = await queueing.queue_for(gh, deps, src.repo, jobs.FEDERATED_SERVER)
    body = jobs.federated_server_job(run, cluster, check=checks.FEDERATED)
    status, title, summary = queueing.queued_check(body, queue, "Federated training running", (
        f"Run `{run.run_id}` (started by {run.trigger}): {run.rounds} rounds, {run.clients} clients, "
        f"timeout {duration(run.timeout)}.\n\n- server: `{run.server.image}` at `{run.address}`\n"
        f"- clients: `{run.client.image}`\n- output: `s3://{cluster.runs_bucket}/"
        f"{jobs.output_prefix(src.repo, run.run_id)}`"))
    if queue:
        body["metadata"]["annotations"].update(admission.pending_clients(run, request.admission_timeout))
        summary += (f"\n\nThe clients start once Kueue admitted the server; a run not fully admitted within "
                    f"{duration(request.admission_timeout)} (`federated.admission_timeout`) is cancelled as a whole.")
    server = await deps.kube.create_job(body)
    resumed = server is None
    if resumed:
        server = await _unfinished_launch(deps, run.run_id)
    if server is None:
        return run.run_id
    await deps.kube.create_network_policy(jobs.federated_network_policy(run, cluster, server))  # before clients
    await deps.kube.create_service(jobs.federated_service(run, cluster, server))
    if not queue:
        await admission.start_clients(deps, run, server, None)
    look = LOOK_FIRST.set(LOOK_FIRST.get() or resumed)  # resumed: the dead process may have made the check run
    try:
        check_id = await checks.create(gh, src.repo, src.sha, checks.FEDERATED, external_id=run.run_id,
                                       status=status, title=title, summary=summary,
                                       details_url=checks.run_page(deps.settings.public_url, run.run_id))
    finally:
        LOOK_FIRST.reset(look)
    await deps.kube.annotate_job(run.run_id, {jobs.CHECK_RUN: str(check_id)})
    log.info("federated run started", extra={"repo": src.repo, "sha": src.sha, "run": run.run_id,
                                             "clients": run.clients, "rounds": run.rounds})
    return run.run_id


async def _unfinished_launch(deps: Deps, run_id: str) -> dict[str, Any] | None:
    """The server Job of a launch that a process dying cut short (no check run yet, created before this
    process started; a launch still going on here is left to finish): the rest of it is done again
    (Service, NetworkPolicy, clients answer 409 where they exist)."""
    server = await deps.kube.get_job(run_id)
    if server is None or jobs.CHECK_RUN in jobs.annotations_of(server):
        return None
    created = server["metadata"].get("creationTimestamp")
    if not created or timestamp(str(created)) >= deps.started - 1:
        return None
    log.info("federated launch resumed", extra={"run": run_id})
    return server


# --- report ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClientOutcome:
    client: int
    job: str
    outcome: str  # "succeeded", "failed: <reason>", "stopped ...", "missing ..."
    running: bool = False  # still running when the server ended: deleted once the run is reported

    @property
    def failed(self) -> bool:
        return not self.outcome.startswith(("succeeded", "stopped"))


async def report(job: dict[str, Any], result: jobs.Outcome, deps: Deps) -> str:
    """Tracker reporter for `flops.dev/kind: federated-server`: the whole run's verdict."""
    ann, run_id = jobs.annotations_of(job), jobs.name_of(job)
    gh = deps.github.for_installation(int(ann[jobs.INSTALLATION]))
    roster = await client_roster(deps, run_id, int(ann.get(jobs.CLIENTS) or 0))
    metrics, problem = await read_metrics(deps, ann[jobs.OUTPUT])
    failed = [c for c in roster if c.failed]
    text = None
    if result.succeeded and metrics is not None and not failed:
        conclusion, reason = "success", ""
        done, asked = len(metrics["rounds"]), int(ann.get(jobs.ROUNDS) or 0)
        title = (f"{done} rounds" if done >= asked else f"{done} of {asked} rounds") + \
            f", {len(roster)} clients" + _final_line(metrics)
    elif result.succeeded and metrics is not None:
        conclusion = "failure"
        reason = "; ".join(f"client {c.client} (`{c.job}`) {c.outcome}" for c in failed)
        title = ", ".join(f"client {c.client}" for c in failed) + " failed"
    else:
        pods = await deps.kube.job_pods(run_id)
        timed_out = result.reason == "DeadlineExceeded"
        conclusion = "timed_out" if timed_out else "failure"
        if result.succeeded:
            reason, diagnosis = problem, None
            title = "The server wrote no valid metrics.json"
        else:
            diagnosis = diagnose(result, pods)
            reason = f"{diagnosis.reason} ({escape(result.message, 500)})" if timed_out and result.message \
                else diagnosis.reason
            title = f"Federated run timed out after {duration(int(ann.get(jobs.TIMEOUT) or 0))}" if timed_out \
                else f"Federated server failed: {plain(diagnosis.reason)}"
        if failed:
            reason += "\n\n**Failed clients:** " + ", ".join(f"{c.client} (`{c.job}`)" for c in failed)
        pod = diagnosis.pod if diagnosis else (pods[-1]["metadata"]["name"] if pods else None)
        tail = await log_tail(deps, pod, "server", pods)
        text = f"Last lines of the server log:\n\n{code_block(tail)}" if tail else await elsewhere(deps, job, pods) or (
            "No server log could be read: when the bot is not running at the timeout, Kubernetes stops the run "
            f"{jobs.STOP_GRACE // 60} min later and deletes its Pods, logs included." if timed_out else None)
    summary = await summarize(deps, ann, metrics, roster, reason)
    await checks.finish(gh, ann, conclusion, title=title[:200], summary=summary, text=text,  # created late: a
                        details_url=checks.run_page(deps.settings.public_url, run_id))  # check made here links too
    if ann.get(jobs.PR):
        await comments.upsert(gh, ann[jobs.REPO], int(ann[jobs.PR]), MARKER,
                              f"{MARKER}\n### {checks.FEDERATED} · `{ann[jobs.SHA][:7]}` · **{conclusion}**: "
                              f"{escape(title)}\n\n{summary}", author=await deps.github.bot_login())
    await end_run(deps, run_id, roster)
    return conclusion


async def read_metrics(deps: Deps, output: str) -> tuple[dict[str, Any] | None, str]:
    """The server's metrics.json if it has the documented shape, else (None, what is wrong)."""
    key = output + "metrics.json"
    try:
        data = await deps.artifacts.runs.get_json(key)
    except ValueError as exc:
        return None, f"`{key}` is not valid JSON ({exc})."
    expected = '`{"rounds": [{"round": 1, "metrics": {...}}, ...], "metrics": {...}}`'
    if data is None:
        return None, f"the server did not write `{key}`; it must write {expected}."
    rounds = data.get("rounds") if isinstance(data, dict) else None
    if not isinstance(rounds, list) or not all(isinstance(r, dict) and isinstance(r.get("metrics"), dict)
                                               for r in rounds) or not isinstance(data.get("metrics", {}), dict):
        return None, f"`{key}` does not have the shape {expected}."
    if not rounds:
        return None, f"`{key}` lists no finished round."
    return data, ""


async def end_run(deps: Deps, run_id: str, roster: list[ClientOutcome]) -> None:
    """After the report (so a retried report sees the same roster): the clients still running and
    the Service and the NetworkPolicy go; the server Job stays, marked reported, until its TTL."""
    for client in roster:
        if client.running:
            await deps.kube.delete_job(client.job)
    await deps.kube.delete_service(run_id)
    await deps.kube.delete_network_policy(run_id)


async def client_roster(deps: Deps, run_id: str, expected: int) -> list[ClientOutcome]:
    """Each client's outcome, from its Job; a client Job that is gone is `missing`."""
    found: dict[int, ClientOutcome] = {}
    for job in await deps.kube.list_jobs(f"{jobs.SELECTOR},{jobs.KIND}={jobs.FEDERATED_CLIENT},{jobs.RUN}={run_id}"):
        name, state = jobs.name_of(job), jobs.outcome(job)
        index = int(jobs.annotations_of(job).get(jobs.CLIENT_ID, "-1"))
        if state.finished and state.succeeded:
            outcome = "succeeded"
        elif state.finished:
            outcome = f"failed: {diagnose(state, await deps.kube.job_pods(name)).reason}"
        else:
            stuck = diagnose(state, await deps.kube.job_pods(name))
            # A container that could not start (image pull, missing Secret) names itself; else it ran.
            outcome = f"failed: never started ({stuck.reason})" if stuck.container and stuck.exit_code is None \
                else "stopped (still running when the run ended)"
        found[index] = ClientOutcome(index, name, outcome, running=not state.finished)
    for index in range(expected):
        if index not in found:
            found[index] = ClientOutcome(index, jobs.federated_client_name(run_id, index),
                                         "missing: its Job was deleted or never created")
    return [found[i] for i in sorted(found)]


async def summarize(deps: Deps, ann: dict[str, str], metrics: dict[str, Any] | None, roster: list[ClientOutcome],
                    reason: str) -> str:
    parts = [f"**Reason:** {reason}"] if reason else []
    if metrics is not None:
        parts.append("### Rounds\n\n" + rounds_table(metrics["rounds"]))
        parts.append("### Final metrics\n\n" + (", ".join(f"**{escape(k)}** {escape(_fmt(v))}" for k, v in
                                                        sorted((metrics.get("metrics") or {}).items())) or "none"))
    if ann.get(jobs.OUTPUT):
        parts.append("### Global model\n\n" + await model_links(deps, ann[jobs.OUTPUT] + "model/"))
    parts.append("### Clients\n\n" + roster_table(roster))
    parts.append(f"Run `{ann[jobs.RUN_ID]}` · {ann.get(jobs.ROUNDS, '?')} rounds asked · started by "
                 f"{ann.get(jobs.TRIGGER, '?')}")
    return "\n\n".join(parts)


def rounds_table(rounds: list[dict[str, Any]]) -> str:
    if not rounds:
        return "No round finished."
    names = list(dict.fromkeys(k for r in rounds for k in r["metrics"]))[:ROUND_COLUMNS]
    header = "| round | " + " | ".join(escape(n, 60) for n in names) + " |\n|---:|" + "---:|" * len(names)
    rows = [f"| {escape(r.get('round', i + 1), 20)} | " + " | ".join(escape(_fmt(r["metrics"].get(n, "")), 60)
                                                                 for n in names) + " |"
            for i, r in list(enumerate(rounds))[-ROUNDS_SHOWN:]]  # only the rows shown are escaped
    return header + "\n" + "\n".join(rows)


async def model_links(deps: Deps, prefix: str) -> str:
    """Presigned download links (they expire; the S3 path does not)."""
    runs = deps.artifacts.runs
    keys, more = await runs.list_page(prefix)
    if not keys:
        return f"No model was written under `{prefix}`."
    expires = (datetime.now(timezone.utc) + MODEL_LINK_TTL).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"- {link(key[len(prefix):], await runs.presigned_get(key, MODEL_LINK_TTL))}"
             for key in keys[:MODEL_LINKS]]
    if len(keys) > MODEL_LINKS:
        lines.append(f"- … and {len(keys) - MODEL_LINKS}{'+' if more else ''} more files")
    return "\n".join(lines) + (f"\n\nLinks expire {expires} ({MODEL_LINK_TTL.days} days); the files stay at "
                               f"`s3://{runs.bucket}/{prefix}`.")


def roster_table(roster: list[ClientOutcome]) -> str:
    if not roster:
        return "No client Jobs were found."
    return "| client | Job | outcome |\n|---:|---|---|\n" + "\n".join(
        f"| {c.client} | `{c.job}` | {c.outcome} |" for c in roster)


def _final_line(metrics: dict[str, Any]) -> str:
    final = metrics.get("metrics") or {}
    shown = [f"{k} {_fmt(v)}" for k, v in sorted(final.items()) if isinstance(v, (int, float))][:3]
    return (" · " + ", ".join(shown)) if shown else ""


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


KIND = lifecycle.Kind(jobs.FEDERATED_SERVER, report, admitted=admission.admitted, waiting=admission.waiting)
