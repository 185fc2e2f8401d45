"""Regression runs on a Ray cluster of their own (`regression.ray`): the RayJob in place of the Job.

`prepare` turns the run's Job body into what is created (a RayJob when `ray:` is configured; the MLflow
env either way); the rest of the regression flow, the tracker, the lifecycle and Kueue's queue
(`bot.flows.kueue`: the same label and `spec.suspend`) treat both alike.
A RayJob where KubeRay is not installed is refused by the API server with a 404: `refusal` says
what to install. A queued RayJob Kueue's webhook would refuse (more worker groups than it admits) is
not sent at all: `unqueueable` says what to change. Its pods are inside deploy/'s network fence;
`create` opens it between the run's own pods (and to KubeRay's operator on the head's dashboard port),
as a federated run does for its clients. Where the log of a failed run is: the submitter Job's Pod
(K8sJobMode), else the head Pod while the cluster is still there.
"""
from __future__ import annotations

from typing import Any

from gidgethub.abc import GitHubAPI
from kubernetes.client import ApiException

from bot.core import jobs
from bot.core.config import RegressionConfig
from bot.core.jobs import kueue, ray
from bot.flows.deps import Deps
from bot.flows.mlflow_runs import add_mlflow
from bot.platform import checks


def prepare(body: dict[str, Any], cfg: RegressionConfig) -> dict[str, Any]:
    """The object to create for the regression Job `body`: itself, or its RayJob."""
    add_mlflow(body, cfg.mlflow)
    if cfg.ray is None:
        return body
    return ray.rayjob_from_job(body, cfg.ray, tuple(cfg.command))


# Kueue's RayJob webhook refuses a queued RayJob with more worker groups (kueue pkg/controller/jobs/rayjob).
KUEUE_WORKER_GROUPS = 7


class NotCreated(Exception):
    """The run was not created, and its check says why: nothing to retry."""


class KubeRayMissing(NotCreated):
    """The cluster serves no RayJobs: KubeRay's operator (its CRD) is not installed."""


async def create(gh: GitHubAPI, deps: Deps, body: dict[str, Any], repo: str, check_id: int) -> dict[str, Any] | None:
    """Create the run's Job or RayJob (and a RayJob's opening in the Jobs' network fence); None when one of
    that name exists. When Kubernetes refuses, check `check_id` fails saying why, and the ApiException is
    raised again (KubeRayMissing for a RayJob where KubeRay is not installed); NotCreated for a RayJob
    Kueue would refuse."""
    if (why := unqueueable(body)) is not None:
        await checks.complete(gh, repo, check_id, "failure", title=why[0], summary=why[1])
        raise NotCreated(jobs.name_of(body))
    try:
        created = await deps.kube.create_job(body)
    except ApiException as exc:
        title, summary = refusal(body, exc)
        await checks.complete(gh, repo, check_id, "failure", title=title, summary=summary)
        if crd_missing(body, exc):
            raise KubeRayMissing(jobs.name_of(body)) from exc
        raise
    if created is not None and ray.is_rayjob(created):
        await deps.kube.create_network_policy(ray.network_policy(created))
    return created


def unqueueable(body: dict[str, Any]) -> tuple[str, str] | None:
    """(title, summary) of the check of a queued RayJob that Kueue's webhook would refuse; None otherwise."""
    queue = kueue.queue_of(body)
    if not ray.is_rayjob(body) or queue is None:
        return None
    groups = len(body["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    if groups <= KUEUE_WORKER_GROUPS:
        return None
    return ("Too many Ray worker groups for Kueue", f"`regression.ray.workers` lists {groups} worker groups, and "
            f"Kueue's RayJob webhook refuses more than {KUEUE_WORKER_GROUPS}, so RayJob `{jobs.name_of(body)}` was not "
            f"created in LocalQueue `{queue}`. Merge worker groups in `.github/flops.yml` (a group's `replicas` are "
            "not limited), or name no `queue` for `regression`, then comment `/regression`.")


def crd_missing(body: dict[str, Any], exc: ApiException) -> bool:
    return ray.is_rayjob(body) and exc.status == 404


def refusal(body: dict[str, Any], exc: ApiException) -> tuple[str, str]:
    """(title, summary) of the check of a run Kubernetes refused to create."""
    name = jobs.name_of(body)
    if crd_missing(body, exc):
        return ("KubeRay is not installed", f"`regression.ray` runs the regression test as a KubeRay RayJob "
                f"(`ray.io/v1`), but this cluster does not serve RayJobs, so `{name}` was not created. Install "
                f"KubeRay's operator (https://docs.ray.io/en/latest/cluster/kubernetes/getting-started.html; "
                f"`kubectl get crd rayjobs.ray.io` shows it), or remove `regression.ray` from `.github/flops.yml`, "
                f"then comment `/regression`.")
    what = "RayJob" if ray.is_rayjob(body) else "Job"
    return (f"Regression {what} not created", f"Kubernetes refused {what} `{name}` (HTTP {exc.status}: {exc.reason}). "
            f"Check the bot's RBAC and the namespace's quota, then comment `/regression`.")


async def pods_of(deps: Deps, job: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pods whose state and log tell why the run failed: a Job's; a RayJob's submitter, else its head."""
    pods = await deps.kube.job_pods(jobs.name_of(job))
    if pods or jobs.api_kind(job) != jobs.RAYJOB:
        return pods
    selector = ray.head_selector(await deps.kube.get_job(jobs.name_of(job), jobs.RAYJOB) or job)
    return await deps.kube.pods(selector) if selector else []


RUN_PODS = 64  # a RayJob run's Pods shown on its page and kept (the head first): a huge cluster stays bounded


async def run_pods(deps: Deps, rayjob: dict[str, Any]) -> list[dict[str, Any]]:
    """The Pods of a RayJob's run (its run page, the logs kept): its submitter Job's (named after the RayJob),
    then its cluster's head and workers, RUN_PODS at most."""
    pods = await deps.kube.job_pods(jobs.name_of(rayjob))
    selector = ray.cluster_selector(rayjob)
    named = {p["metadata"]["name"] for p in pods}
    cluster = [p for p in (await deps.kube.pods(selector) if selector else []) if p["metadata"]["name"] not in named]
    cluster.sort(key=lambda p: ((p["metadata"].get("labels") or {}).get("ray.io/node-type") != "head",
                                p["metadata"]["name"]))
    return (pods + cluster)[:RUN_PODS]
