"""`regression.mlflow`: the MLflow env of every regression container, and the run found again after it.

Each container of the run (the Job's, or every Ray container of a RayJob) gets `MLFLOW_TRACKING_URI`,
`MLFLOW_EXPERIMENT_NAME` (`{repo}` expanded), `MLFLOW_RUN_NAME` (the run id) and `MLFLOW_TAGS`, a JSON
object of the tags the workload puts on its MLflow run (`flops.run`, `flops.sha`, `flops.pr`). The
tracking server and experiment are kept on the Job (`flops.dev/mlflow-uri`, `flops.dev/mlflow-experiment`)
for the report, which reads no config.

Where the bot sends its requests is the default branch's `regression.mlflow` (`trusted_mlflow`), never a
PR base's other than the default branch: anyone with write access can open a PR into a branch whose
flops.yml they wrote, and the bot's requests go out from where the bot sits in the cluster.

When the run reports, `metrics.json` wins: the gate reads its `metrics`, and MLflow is only asked for
the link when `links` has no MLflow one. Without a `metrics.json`, the MLflow run's latest metrics
are the gate's input, and its page the link.
"""
from __future__ import annotations

import json
from typing import Any

from gidgethub.abc import GitHubAPI

from bot.core import jobs
from bot.core.config import ConfigError, MlflowConfig, RegressionConfig, RepoConfig
from bot.core.text import timestamp
from bot.platform import checks, logs, mlflow

log = logs.get_logger(__name__)

URI, EXPERIMENT = jobs.A + "mlflow-uri", jobs.A + "mlflow-experiment"
LINK = "MLflow run"


async def trusted_mlflow(gh: GitHubAPI, repo: str, cfg: RegressionConfig,
                         trusted: RepoConfig | None) -> MlflowConfig | None:
    """The `regression.mlflow` of a run configured by `cfg`: the default branch's (`trusted`, read at its
    head when the caller holds none), and only when `cfg` asks for MLflow at all."""
    if cfg.mlflow is None:
        return None
    if trusted is None:
        try:
            trusted = await checks.fetch_config(gh, repo, None)
        except ConfigError:
            return None  # its own pushes report the problems; this run goes without MLflow
    return trusted.regression.mlflow if trusted is not None and trusted.regression is not None else None


def add_mlflow(body: dict[str, Any], cfg: MlflowConfig | None) -> None:
    """The MLflow env on every workload container of Job `body` (not the source fetcher), and where to
    look the run up on its annotations."""
    if cfg is None:
        return
    ann = body["metadata"]["annotations"]
    run, experiment = ann[jobs.RUN_ID], cfg.experiment_for(ann[jobs.REPO])
    tags = {"flops.run": run, "flops.sha": ann[jobs.SHA], **({"flops.pr": ann[jobs.PR]} if jobs.PR in ann else {})}
    env = {"MLFLOW_TRACKING_URI": cfg.tracking_uri, "MLFLOW_EXPERIMENT_NAME": experiment, "MLFLOW_RUN_NAME": run,
           "MLFLOW_TAGS": json.dumps(tags, separators=(",", ":"))}
    for container in body["spec"]["template"]["spec"]["containers"]:
        container["env"] = [e for e in container.get("env") or [] if e["name"] not in env] + \
            [{"name": k, "value": v} for k, v in env.items()]
    ann.update({URI: cfg.tracking_uri, EXPERIMENT: experiment})


async def with_mlflow(job: dict[str, Any], written: Any) -> Any:
    """`written` (metrics.json, None when absent) with what the run's MLflow run adds: the link when it
    has none, the metrics when there is no metrics.json. Unchanged without `regression.mlflow`, and
    when the run's name is not one run's started after the Job (`mlflow.find_run`)."""
    ann = jobs.annotations_of(job)
    if URI not in ann or (written is not None and not isinstance(written, dict)):
        return written
    links = written.get("links") if isinstance(written, dict) else None
    if isinstance(links, dict) and any("mlflow" in str(key).lower() for key in links):
        return written
    created = job["metadata"].get("creationTimestamp")
    run = await mlflow.find_run(ann[URI], ann.get(EXPERIMENT, ""), ann[jobs.RUN_ID],
                                since=timestamp(str(created)) if created else 0.0)
    if run is None:
        return written
    log.info("MLflow run found", extra={"run": ann[jobs.RUN_ID], "mlflow_run": run.run_id})
    if written is None:
        return {"metrics": run.metrics, "links": {LINK: run.url}} if run.metrics else None
    return {**written, "links": {**(links if isinstance(links, dict) else {}), LINK: run.url}}
