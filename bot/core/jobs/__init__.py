"""Job specs (pure functions from data to `batch/v1` bodies) and the labels/annotations contract.

`contract`: the labels, annotations, names and tags, and reading Jobs back; `specs`: build and
regression Jobs; `tests`: a `tests:` entry's Job; `federated`: a federated run's server, clients and Service;
`ray`: a regression run's KubeRay RayJob (`regression.ray`), made from its Job, with the same contract.

Every Job the bot creates carries:
  labels       app.kubernetes.io/managed-by=flops-bot, flops.dev/kind=<kind>, flops.dev/run=<run id>, and the
               other recommended app.kubernetes.io/ labels (name, instance, version, component, part-of)
  annotations  flops.dev/repo, flops.dev/sha, flops.dev/installation-id, flops.dev/run-id,
               flops.dev/check-run-id (once created), flops.dev/reported (once GitHub accepted the
               final report) and kind-specific ones (flops.dev/image, flops.dev/destination, ...)
Kubernetes is the bot's database: the tracker rebuilds everything it needs from these.
"""
from __future__ import annotations

from bot.core.jobs.contract import (
    BASELINE,
    BISECT_LABEL,
    BUILD,
    CHECK_NAME,
    CHECK_RUN,
    CLIENT_ID,
    CLIENTS,
    DEFAULT_BRANCH,
    DEFAULT_CONTAINER,
    DELIVERY,
    DEPLOY_TARGETS,
    DESTINATION,
    FEDERATED_CLIENT,
    FEDERATED_SERVER,
    FETCH_SOURCE,
    FINAL_CONDITIONS,
    IMAGE,
    INSTALLATION,
    JOB,
    KANIKO_CONTEXT,
    KIND,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    METRICS,
    OUTPUT,
    PR,
    PR_LABEL,
    PUSHED,
    RAYJOB,
    REF,
    REGRESSION,
    REPO,
    REPORTED,
    REPORTED_LABEL,
    REPORTING,
    ROUNDS,
    RUN,
    RUN_ID,
    SELECTOR,
    SHA,
    STOP_GRACE,
    TAG,
    TIMEOUT,
    TRIGGER,
    TTL_AFTER_FINISHED,
    WORKSPACE,
    A,
    BuildRequest,
    Cluster,
    Outcome,
    Source,
    annotations_of,
    api_kind,
    bot_version,
    cluster_from,
    image_tag,
    images_to_build,
    job_name,
    kind_of,
    name_of,
    outcome,
    pr_tag,
    ray_outcome,
    recommended_labels,
    report_identity,
    reporting_holder,
    run_seconds,
    run_state,
    secrets_received,
    source_key,
    tag_parts,
    tag_time,
    unreported,
)
from bot.core.jobs.federated import (
    FederatedRun,
    federated_client_job,
    federated_client_name,
    federated_network_policy,
    federated_server_job,
    federated_service,
    owner_reference,
)
from bot.core.jobs.specs import (
    Workload,
    build_job,
    job_body,
    kaniko_args,
    output_prefix,
    regression_job,
    resources,
    workload_env,
    workload_pod,
)
from bot.core.jobs.tests import (
    RESULTS,
    RESULTS_PREFIX,
    TEST,
    TEST_NAME,
    UPLOAD_FILES,
    UPLOAD_LIMIT,
    check_name,
    job_of_test,
    name_of_test,
    results_prefix,
)

__all__ = ["A", "BASELINE", "BISECT_LABEL", "BUILD", "BuildRequest", "CHECK_NAME", "CHECK_RUN", "CLIENTS", "CLIENT_ID", "Cluster", "DEFAULT_BRANCH", "DEFAULT_CONTAINER", "DELIVERY", "DEPLOY_TARGETS", "DESTINATION", "FEDERATED_CLIENT", "FEDERATED_SERVER", "FETCH_SOURCE", "FINAL_CONDITIONS", "FederatedRun", "IMAGE", "INSTALLATION", "JOB", "KANIKO_CONTEXT", "KIND", "MANAGED_BY", "MANAGED_BY_LABEL", "METRICS", "OUTPUT", "Outcome", "PR", "PR_LABEL", "PUSHED", "RAYJOB", "REF", "REGRESSION", "REPO", "REPORTED", "REPORTED_LABEL", "REPORTING", "RESULTS", "RESULTS_PREFIX", "ROUNDS", "RUN", "RUN_ID", "SELECTOR", "SHA", "STOP_GRACE", "Source", "TAG", "TEST", "TEST_NAME", "TIMEOUT", "TRIGGER", "TTL_AFTER_FINISHED", "UPLOAD_FILES", "UPLOAD_LIMIT", "WORKSPACE", "Workload", "annotations_of", "api_kind", "bot_version", "build_job", "check_name", "cluster_from", "federated_client_job", "federated_client_name", "federated_network_policy", "federated_server_job", "federated_service", "image_tag", "images_to_build", "job_body", "job_name", "job_of_test", "kaniko_args", "kind_of", "name_of", "name_of_test", "outcome", "output_prefix", "owner_reference", "pr_tag", "ray_outcome", "recommended_labels", "regression_job", "report_identity", "reporting_holder", "resources", "results_prefix", "run_seconds", "run_state", "secrets_received", "source_key", "tag_parts", "tag_time", "unreported", "workload_env", "workload_pod"]
