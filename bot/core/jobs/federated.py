"""The federated run's specs: the server Job, the client Jobs it owns, their Service and NetworkPolicy."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bot.core.jobs.contract import (
    CHECK_NAME,
    CLIENT_ID,
    CLIENTS,
    FEDERATED_CLIENT,
    FEDERATED_SERVER,
    KIND,
    OUTPUT,
    ROUNDS,
    RUN,
    STOP_GRACE,
    TIMEOUT,
    TRIGGER,
    Cluster,
    Source,
    job_name,
)
from bot.core.jobs.specs import Workload, _annotations, _labels, job_body, output_prefix, workload_pod


@dataclass(frozen=True)
class FederatedRun:
    source: Source
    server: Workload
    client: Workload
    port: int
    rounds: int
    clients: int
    timeout: int
    trigger: str
    attempt: str = ""

    @property
    def run_id(self) -> str:
        label = f"pr{self.source.pr}" if self.source.pr is not None else "push"
        return job_name("fl", label, self.source.sha, self.source.repo, self.attempt, str(self.rounds),
                        str(self.clients))[:55].rstrip("-")

    @property
    def address(self) -> str:
        return f"{self.run_id}:{self.port}"


def federated_server_job(run: FederatedRun, cluster: Cluster, *, check: str) -> dict[str, Any]:
    """The aggregation server: its end is the run's end. The bot stops it at `timeout` (the
    tracker, so the server's log can still be read); Kubernetes only STOP_GRACE later."""
    src, name = run.source, run.run_id
    annotations = {**_annotations(src, run_id=name), CHECK_NAME: check, TRIGGER: run.trigger,
                   OUTPUT: output_prefix(src.repo, name), ROUNDS: str(run.rounds), CLIENTS: str(run.clients),
                   TIMEOUT: str(run.timeout)}
    env = _fl_env(run)
    init, containers, volumes, extras = workload_pod(src, cluster, name, run.server, None, name="server", env=env,
                                                     ports=[{"name": "fl", "containerPort": run.port}])
    return job_body(name, cluster, _labels(FEDERATED_SERVER, run=name, pr=src.pr), annotations, containers,
                    deadline=run.timeout + STOP_GRACE, volumes=volumes, pod_spec=extras)


def federated_client_job(run: FederatedRun, cluster: Cluster, index: int, owner: dict[str, Any]) -> dict[str, Any]:
    """Client `index` (FL_CLIENT_ID, 0..N-1), owned by the server Job: deleting the server deletes it."""
    src, name = run.source, federated_client_name(run.run_id, index)
    annotations = {**_annotations(src, run_id=run.run_id), CLIENT_ID: str(index)}
    env = {**_fl_env(run), "FL_CLIENT_ID": str(index)}
    init, containers, volumes, extras = workload_pod(src, cluster, run.run_id, run.client, None, name="client",
                                                     env=env)
    labels = _labels(FEDERATED_CLIENT, run=run.run_id, pr=src.pr, instance=name)
    body = job_body(name, cluster, labels, annotations, containers, deadline=run.timeout + STOP_GRACE, volumes=volumes,
                    pod_spec=extras)
    body["metadata"]["ownerReferences"] = [owner_reference(owner)]
    return body


def federated_client_name(run_id: str, index: int) -> str:
    return f"{run_id}-c{index}"


def federated_service(run: FederatedRun, cluster: Cluster, owner: dict[str, Any]) -> dict[str, Any]:
    """A stable DNS name for the server: `<run id>:<port>` inside the namespace."""
    labels = _labels(FEDERATED_SERVER, run=run.run_id, pr=run.source.pr)
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": run.run_id, "namespace": cluster.namespace, "labels": labels,
                         "ownerReferences": [owner_reference(owner)]},
            "spec": {"selector": {RUN: run.run_id, KIND: FEDERATED_SERVER},
                     "ports": [{"name": "fl", "port": run.port, "targetPort": run.port, "protocol": "TCP"}]}}


def federated_network_policy(run: FederatedRun, cluster: Cluster, owner: dict[str, Any]) -> dict[str, Any]:
    """The run's own opening in deploy/'s fence (which denies Job pods all ingress, and all egress but
    DNS, S3 and the registry): this run's clients reach this run's server on its port, nothing else
    does. It selects exactly the run's pods (the server's and the clients' share the run label); the
    server Job owns it, and the bot deletes it with the Service when the run ends."""
    server = {RUN: run.run_id, KIND: FEDERATED_SERVER}
    port = [{"protocol": "TCP", "port": run.port}]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": run.run_id, "namespace": cluster.namespace,
                         "labels": _labels(FEDERATED_SERVER, run=run.run_id, pr=run.source.pr),
                         "ownerReferences": [owner_reference(owner)]},
            "spec": {"podSelector": {"matchLabels": {RUN: run.run_id}}, "policyTypes": ["Ingress", "Egress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {RUN: run.run_id, KIND: FEDERATED_CLIENT}}}],
                                  "ports": port}],
                     "egress": [{"to": [{"podSelector": {"matchLabels": server}}], "ports": port}]}}


def owner_reference(job: dict[str, Any]) -> dict[str, Any]:
    """Deleting the server Job deletes the run's clients, Service and NetworkPolicy (garbage collection)."""
    return {"apiVersion": "batch/v1", "kind": "Job", "name": job["metadata"]["name"], "uid": job["metadata"]["uid"],
            "blockOwnerDeletion": False, "controller": False}


def _fl_env(run: FederatedRun) -> dict[str, str]:
    return {"FL_SERVER_ADDRESS": run.address, "FL_ROUNDS": str(run.rounds), "FL_NUM_CLIENTS": str(run.clients),
            "FL_PORT": str(run.port)}
