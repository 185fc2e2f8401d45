"""RayJob regression runs queued through Kueue (the gap issue 18 left): under the default branch's
`queue: {regression: gpu}` (or FLOPS_DEFAULT_QUEUE) a `regression.ray` run is a RayJob created suspended
with the label `kueue.x-k8s.io/queue-name`, and its `flops/regression` check follows Kueue exactly as a
batch Job's does: queued naming the LocalQueue and Kueue's reason, in progress on admission, preempted ->
requeued, the timeout counted from admission, reported once (across a restart too); `/cancel`, a new
head and a closed PR delete it. Kueue is tests/emulators/kueue.py, KubeRay's operator
tests/emulators/kuberay.py (no cluster, no submitter while suspended), both acting on the emulator."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import INSTALLATION, NAMESPACE, Bed, BedFactory, payload, wait_for
from tests.emulators import crds
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.kuberay import KubeRay
from tests.emulators.kueue import JOB_UID_LABEL, QUEUE_LABEL, Kueue
from tests.emulators.s3 import S3Server
from tests.test_regression import (
    MAIN,
    MAINTAINER,
    PR,
    REPO,
    approve,
    comment,
    completed,
    open_pr,
    pull_json,
    push_to_pr,
    sticky,
    synchronize,
)
from tests.test_regression_ray import COMMAND, CONFIG, rayjob_for, write_metrics

REASON = "couldn't assign flavors to pod set gpu: insufficient unused quota for nvidia.com/gpu in flavor a100"
SHOWN = "couldn't assign flavors to pod set gpu: insufficient unused quota for nvidia\\.com/gpu"  # escaped
RAY_CONFIG = CONFIG[:CONFIG.index("  mlflow:")].format(command=json.dumps(COMMAND))  # no MLflow needed here


def setup_repo(github: GitHubEmulator, queue: str = "queue: {regression: gpu}\n", **changes: str) -> None:
    text = RAY_CONFIG + queue
    for old, new in changes.items():
        text = text.replace(old, new)
    github.add_repo(REPO, default_branch=MAIN)
    github.set_permission(REPO, MAINTAINER, "admin")
    github.commit(REPO, MAIN, {".github/flops.yml": text, "regression.py": "pass\n"})


async def queued_rayjob(bed: Bed, **changes: str) -> tuple[str, str]:
    """A `/regression` on a PR under `queue: {regression: gpu}`: (head sha, RayJob name)."""
    setup_repo(bed.github, **changes)
    head = open_pr(bed, {"regression.py": "print('relu')\n"})
    await comment(bed, "/regression")
    name = rayjob_for(bed, head)["metadata"]["name"]
    KubeRay(bed.kube).observe(name)  # the operator's first look: Suspended, no cluster
    return head, name


def check_of(bed: Bed, sha: str) -> dict[str, Any]:
    return bed.github.check_runs_for(REPO, sha, "flops/regression")[-1]


def patches(github: GitHubEmulator, check_id: object) -> int:
    return len(github.calls_to("PATCH", rf"/repos/{REPO}/check-runs/{check_id}$"))


async def admitted(bed: Bed, head: str, name: str) -> None:
    Kueue(bed.kube).admit(name)
    await wait_for(lambda: check_of(bed, head)["status"] == "in_progress", what="admission")


def succeed(bed: Bed, name: str, accuracy: float = 0.91) -> None:
    kuberay = KubeRay(bed.kube)
    kuberay.run(name)
    write_metrics(bed, kuberay.rayjob(name), {"accuracy": accuracy})
    kuberay.succeed(name, logs="8 seeds done\n")


# --- queued ------------------------------------------------------------------------------------------------

async def test_a_queued_rayjob_is_schema_valid_suspended_labelled_and_its_check_names_kueues_reason(bed: Bed) -> None:
    head, name = await queued_rayjob(bed)
    rayjob = bed.kube.get("rayjobs", NAMESPACE, name)
    crds.validate(rayjob)  # KubeRay v1.7.0's schema, strictly: `spec.suspend` is a RayJob field
    assert rayjob["spec"]["suspend"] is True and rayjob["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    assert rayjob["spec"]["shutdownAfterJobFinishes"] is True  # KubeRay refuses to suspend a RayJob without it
    assert rayjob["metadata"]["annotations"]["flops.dev/queue-state"] == "queued"
    assert bed.kube.list("jobs", NAMESPACE) == [] and bed.kube.list("pods", NAMESPACE) == []
    with pytest.raises(ValueError, match="suspended"):
        KubeRay(bed.kube).run(name)  # no cluster and no submitter while Kueue holds it
    check = check_of(bed, head)
    assert check["status"] == "queued" and check["output"]["title"] == "Queued in Kueue LocalQueue `gpu`"
    waits = f"RayJob `{name}` waits in Kueue LocalQueue `gpu` (waiting for Kueue admission)"
    assert waits in check["output"]["summary"]
    assert "runs `python -m regression" in check["output"]["summary"]  # what it will run, kept

    Kueue(bed.kube).pending(name, REASON)  # Kueue's reason, read from the RayJob's Workload
    await wait_for(lambda: SHOWN in check_of(bed, head)["output"]["summary"], what="Kueue's reason")
    assert check_of(bed, head)["status"] == "queued"
    workload = Kueue(bed.kube).workload(name)
    assert workload["metadata"]["labels"][JOB_UID_LABEL] == rayjob["metadata"]["uid"]
    assert workload["metadata"]["ownerReferences"][0]["kind"] == "RayJob"
    assert [(p["name"], p["count"]) for p in workload["spec"]["podSets"]] == [("head", 1), ("gpu", 4), ("submitter", 1)]
    assert not bed.kube.errors


async def test_admission_moves_the_check_on_and_the_end_is_reported_once_across_a_restart(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    first = await make_bed()
    head, name = await queued_rayjob(first)
    check_id = check_of(first, head)["id"]
    await admitted(first, head, name)
    output = check_of(first, head)["output"]
    assert output["title"] == "Regression test running"
    assert output["summary"].startswith("Admitted by Kueue from LocalQueue `gpu`; its timeout counts from now.")
    assert first.kube.get("rayjobs", NAMESPACE, name)["spec"]["suspend"] is False
    assert KubeRay(first.kube).head_pod(name) is not None  # KubeRay made the cluster once admitted
    await first.settle()
    await first.server.close()  # the bot goes away while the Ray job runs
    succeed(first, name)
    second = await make_bed()
    run = await wait_for(lambda: completed(second, head), what="the report after the restart")
    assert (run["conclusion"], run["output"]["title"]) == ("neutral", "No baseline yet")
    await second.settle()
    before = patches(github, check_id)
    await second.server.close()
    third = await make_bed()  # another restart: nothing is posted again
    await third.settle()
    assert patches(github, check_id) == before
    assert len(github.check_runs_for(REPO, head, "flops/regression")) == 1 and len(sticky(third)) == 1


async def test_a_restart_while_queued_posts_nothing_again_and_still_follows_kueue(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    first = await make_bed()
    head, name = await queued_rayjob(first)
    Kueue(first.kube).pending(name, REASON)
    await wait_for(lambda: SHOWN in check_of(first, head)["output"]["summary"], what="Kueue's reason")
    await first.settle()
    check_id = check_of(first, head)["id"]
    before = patches(github, check_id)
    await first.server.close()
    second = await make_bed()
    await second.settle()
    assert patches(github, check_id) == before  # what the check said is on the RayJob
    await admitted(second, head, name)


async def test_a_preempted_rayjob_is_requeued_its_cluster_deleted_and_reported_once_at_the_end(bed: Bed) -> None:
    head, name = await queued_rayjob(bed)
    check_id, kuberay, kueue = check_of(bed, head)["id"], KubeRay(bed.kube), Kueue(bed.kube)
    await admitted(bed, head, name)
    kuberay.run(name)
    assert bed.kube.list("jobs", NAMESPACE, labels={"ray.io/originated-from-cr-name": name})  # the submitter

    kueue.evict(name)  # Kueue preempts it: suspended again; KubeRay deletes the cluster and the submitter
    await wait_for(lambda: check_of(bed, head)["status"] == "queued", what="requeued")
    output = check_of(bed, head)["output"]
    assert output["title"] == "Preempted, requeued in Kueue LocalQueue `gpu`"
    assert f"Kueue preempted RayJob `{name}`" in output["summary"] and "not a failure" in output["summary"]
    assert bed.kube.list("pods", NAMESPACE) == [] and bed.kube.list("jobs", NAMESPACE) == []
    assert kuberay.rayjob(name)["status"]["jobDeploymentStatus"] == "Suspended"
    await bed.settle()
    assert completed(bed, head) is None

    kueue.admit(name)
    await wait_for(lambda: "again after its preemption" in check_of(bed, head)["output"]["summary"],
                   what="readmission")
    await bed.settle()
    before = patches(bed.github, check_id)
    succeed(bed, name)
    run = await wait_for(lambda: completed(bed, head), what="the report")
    assert run["conclusion"] == "neutral"
    await bed.settle()
    assert patches(bed.github, check_id) == before + 1  # one report, at the end
    assert bed.kube.get("rayjobs", NAMESPACE, name)["metadata"]["annotations"]["flops.dev/reported"] == "neutral"


async def test_the_timeout_counts_from_the_rayjobs_admission_not_from_an_earlier_run(bed: Bed) -> None:
    """KubeRay keeps a preempted RayJob's old `status.startTime` until it starts the new cluster: the bot's
    `regression.timeout` (20m) must not count from it, nor from the creation."""
    head, name = await queued_rayjob(bed)
    kuberay, kueue = KubeRay(bed.kube), Kueue(bed.kube)
    await admitted(bed, head, name)
    kuberay.run(name)
    kueue.evict(name)
    await wait_for(lambda: check_of(bed, head)["status"] == "queued", what="requeued")
    waited = bed.kube.get("rayjobs", NAMESPACE, name)
    waited["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # it waited for months, ran long ago
    waited["status"]["startTime"] = "2026-01-01T00:05:00Z"  # what KubeRay keeps of that run while it is Suspended
    bed.kube.put_object(waited)
    readmitted = bed.kube.get("rayjobs", NAMESPACE, name)
    readmitted["spec"]["suspend"] = False  # Kueue admits it again; KubeRay has not answered yet
    bed.kube.put_object(readmitted)
    await wait_for(lambda: "again after its preemption" in check_of(bed, head)["output"]["summary"],
                   what="readmission")
    await bed.settle()
    assert check_of(bed, head)["status"] == "in_progress"  # not timed out: it has not even started again
    kuberay.initialize(name)  # New -> Initializing: a new cluster, a new startTime
    await bed.settle()
    assert check_of(bed, head)["status"] == "in_progress" and bed.kube.get("rayjobs", NAMESPACE, name) is not None


async def test_a_queued_rayjob_times_out_from_its_admission(bed: Bed) -> None:
    head, name = await queued_rayjob(bed, **{"timeout: 20m": "timeout: 2s"})
    waited = bed.kube.get("rayjobs", NAMESPACE, name)
    waited["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"  # created long before its timeout
    bed.kube.put_object(waited)
    await bed.settle()
    assert check_of(bed, head)["status"] == "queued"  # never timed out while Kueue holds it
    await admitted(bed, head, name)
    run = await wait_for(lambda: completed(bed, head), what="the timeout report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Regression Job timed out")
    await wait_for(lambda: bed.kube.get("rayjobs", NAMESPACE, name) is None, what="the RayJob deleted")


# --- stopping ------------------------------------------------------------------------------------------------

async def test_cancel_deletes_a_queued_rayjob(bed: Bed) -> None:
    head, name = await queued_rayjob(bed)
    Kueue(bed.kube).pending(name, REASON)
    await comment(bed, "/cancel regression")
    assert bed.kube.get("rayjobs", NAMESPACE, name) is None
    [run] = bed.github.check_runs_for(REPO, head, "flops/regression")
    assert run["conclusion"] == "cancelled" and "/cancel" in run["output"]["summary"]


async def test_a_new_head_and_a_closed_pr_delete_the_queued_rayjobs(bed: Bed) -> None:
    setup_repo(bed.github)
    old = open_pr(bed, {"regression.py": "print(3)\n"})
    await approve(bed)
    first = rayjob_for(bed, old)["metadata"]["name"]
    new = push_to_pr(bed, {"regression.py": "print(4)\n"})
    await synchronize(bed, old)
    assert bed.kube.get("rayjobs", NAMESPACE, first) is None
    assert check_of(bed, old)["conclusion"] == "cancelled" and new[:7] in check_of(bed, old)["output"]["summary"]
    await approve(bed)
    second = rayjob_for(bed, new)
    assert second["spec"]["suspend"] is True and second["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    await admitted(bed, new, second["metadata"]["name"])  # its cluster up: the close deletes it too
    bed.github.pulls[(REPO, PR)]["state"] = "closed"
    data = payload("pull_request.closed")
    pull_json(bed, data)
    await bed.deliver("pull_request", data)
    await bed.settle()
    assert bed.kube.list("rayjobs", NAMESPACE) == [] and bed.kube.list("pods", NAMESPACE) == []
    assert check_of(bed, new)["conclusion"] == "cancelled" and "closed" in check_of(bed, new)["output"]["summary"]


# --- where the queue comes from, RBAC --------------------------------------------------------------------------

async def test_flops_default_queue_applies_to_a_rayjob_and_a_pr_cannot_pick_its_queue(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    bed = await make_bed(FLOPS_DEFAULT_QUEUE="team-default")
    setup_repo(github, queue="")
    head = open_pr(bed, {".github/flops.yml": RAY_CONFIG + "queue: premium\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, head)
    assert rayjob["spec"]["suspend"] is True and rayjob["metadata"]["labels"][QUEUE_LABEL] == "team-default"
    assert check_of(bed, head)["output"]["title"] == "Queued in Kueue LocalQueue `team-default`"


async def test_without_a_queue_a_rayjob_starts_at_once(bed: Bed) -> None:
    setup_repo(bed.github, queue="")
    head = open_pr(bed, {"regression.py": "print(5)\n"})
    await comment(bed, "/regression")
    rayjob = rayjob_for(bed, head)
    assert "suspend" not in rayjob["spec"] and QUEUE_LABEL not in rayjob["metadata"]["labels"]
    assert check_of(bed, head)["status"] == "in_progress"


async def test_the_role_grants_every_call_a_queued_rayjob_run_makes(bed: Bed) -> None:
    """deploy/base/rbac.yaml against a queued RayJob's whole life: created suspended, its Workload read,
    admitted, preempted, readmitted, reported. Kueue needs nothing more from the bot."""
    from tests.test_deploy_manifests import assert_role_grants, needed
    head, name = await queued_rayjob(bed)
    kueue = Kueue(bed.kube)
    kueue.pending(name, REASON)
    await wait_for(lambda: SHOWN in check_of(bed, head)["output"]["summary"], what="Kueue's reason")
    await admitted(bed, head, name)
    kueue.evict(name)
    await wait_for(lambda: check_of(bed, head)["status"] == "queued", what="requeued")
    kueue.admit(name)
    succeed(bed, name)
    await wait_for(lambda: completed(bed, head), what="the report")
    await bed.settle()
    used = {(verb, group, resource) for verb, group, resource, _ in needed(bed.kube.requests)}
    assert {("patch", "ray.io", "rayjobs"), ("list", "kueue.x-k8s.io", "workloads")} <= used
    assert not {(v, g, r) for v, g, r in used if g == "kueue.x-k8s.io" and v not in ("get", "list", "watch")}
    assert_role_grants(bed.kube.requests)


# --- as shipped ----------------------------------------------------------------------------------------------

async def test_serve_queues_a_rayjob_in_kueue_and_reports_it_once_admitted(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server) -> None:
    """`python -m bot serve` with the README's environment: `/regression` under `queue: {regression: gpu}` ->
    a suspended RayJob, check queued with Kueue's reason -> admitted -> in progress -> KubeRay ends it -> judged."""
    from tests.serving import serving
    from tests.test_as_shipped import MAINTAINER as COMMENTER
    from tests.test_as_shipped import comment_payload, deliver
    from tests.test_regression_ray import AsShipped
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    setup_repo(github)
    github.set_permission(REPO, COMMENTER, "write")
    base = github.branch_sha(REPO, MAIN)
    head = github.commit(REPO, "feature", {"regression.py": "print('ray')\n"}, parents=[base])
    github.add_pull(REPO, PR, head, base_branch=MAIN, head_ref="feature", user="octocat")
    async with serving(tmp_path, github, kube, s3) as served:
        bot = AsShipped(github, served.url)
        await deliver(bot, "issue_comment", comment_payload(bot, REPO, PR, "/regression"))
        [rayjob] = await wait_for(lambda: kube.list("rayjobs", NAMESPACE), timeout=30, what="the RayJob")
        name = rayjob["metadata"]["name"]
        assert rayjob["spec"]["suspend"] is True and rayjob["metadata"]["labels"][QUEUE_LABEL] == "gpu"
        check = await wait_for(lambda: github.check_runs_for(REPO, head, "flops/regression"), timeout=30,
                               what="its check run")
        assert check[-1]["status"] == "queued" and "LocalQueue `gpu`" in check[-1]["output"]["title"]
        await wait_for(lambda: "flops.dev/check-run-id" in kube.get("rayjobs", NAMESPACE, name)["metadata"][
            "annotations"], timeout=30, what="its check run on the RayJob")
        Kueue(kube).pending(name, REASON)
        KubeRay(kube).observe(name)  # a change of the RayJob: the bot reads its Workload again
        await wait_for(lambda: SHOWN in github.check_runs_for(REPO, head, "flops/regression")[-1]["output"]["summary"],
                       timeout=60, what="Kueue's reason (the bot looks again while it waits)")
        Kueue(kube).admit(name)
        await wait_for(lambda: github.check_runs_for(REPO, head, "flops/regression")[-1]["status"] == "in_progress",
                       timeout=30, what="admitted")
        kuberay = KubeRay(kube)
        kuberay.run(name)
        env = {e["name"]: e.get("value") for e in rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"][
            "spec"]["containers"][0]["env"]}
        data = json.dumps({"metrics": {"accuracy": 0.92}}).encode()
        s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(data),
                               len(data))
        kuberay.succeed(name, logs="8 seeds done\n")
        run = await wait_for(lambda: completed(bot, head), timeout=30, what="the report")
        assert (run["conclusion"], run["output"]["title"]) == ("neutral", "No baseline yet")
        await wait_for(lambda: kube.get("rayjobs", NAMESPACE, name)["metadata"]["annotations"].get(
            "flops.dev/reported"), timeout=30, what="marked reported")
        assert len(github.check_runs_for(REPO, head, "flops/regression")) == 1



async def test_a_queued_rayjob_whose_cluster_is_gone_does_not_claim_it_ran_elsewhere(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    """No Pod left to read (the cluster never got to submit, and KubeRay deleted it after the end while the
    bot was down): that is no MultiKueue run, and the check does not say it is."""
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    first = await make_bed()
    head, name = await queued_rayjob(first)
    await admitted(first, head, name)
    await first.settle()
    await first.server.close()
    kuberay = KubeRay(first.kube)
    kuberay.deadline(name)  # still Initializing: no submitter
    kuberay.shut_down(name)
    assert first.kube.list("pods", NAMESPACE) == []
    bed = await make_bed()
    run = await wait_for(lambda: completed(bed, head), what="the deadline report")
    assert (run["conclusion"], run["output"]["title"]) == ("timed_out", "Regression Job timed out")
    assert "MultiKueue" not in json.dumps(run["output"]) and "worker cluster" not in json.dumps(run["output"])


def test_a_rayjobs_start_is_its_current_runs() -> None:
    from bot.core.jobs.kueue import started_at
    stale = "2026-01-01T00:05:00Z"
    for state in ("", "New", "Suspending", "Suspended"):  # KubeRay keeps an earlier run's startTime meanwhile
        assert started_at({"kind": "RayJob", "status": {"jobDeploymentStatus": state, "startTime": stale}}) is None
    running = {"kind": "RayJob", "status": {"jobDeploymentStatus": "Initializing", "startTime": stale}}
    assert started_at(running) == stale
    assert started_at({"kind": "Job", "status": {"startTime": stale}}) == stale  # the Job controller clears its own
    assert started_at({"kind": "Job", "status": {}}) is None


async def test_more_worker_groups_than_kueue_admits_fail_the_check_and_create_nothing(bed: Bed) -> None:
    groups = "".join(f"      - {{name: g{i}, replicas: 1, resources: {{cpu: \"1\", memory: 1Gi}}}}\n" for i in range(8))
    workers = RAY_CONFIG[RAY_CONFIG.index("    workers:\n") + len("    workers:\n"):]
    setup_repo(bed.github, **{workers: groups})
    head = open_pr(bed, {"regression.py": "print(15)\n"})
    await comment(bed, "/regression")
    run = await wait_for(lambda: completed(bed, head), what="the refusal")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "Too many Ray worker groups for Kueue")
    assert "lists 8 worker groups" in run["output"]["summary"] and "refuses more than 7" in run["output"]["summary"]
    assert bed.kube.list("rayjobs", NAMESPACE) == [] and bed.kube.list("jobs", NAMESPACE) == []
    assert not [r for r in bed.kube.requests if r[0] == "POST" and "/rayjobs" in r[1]]
