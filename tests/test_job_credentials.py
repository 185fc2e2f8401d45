"""No Job can change what the bot trusts (issue 15, finding 2), against the real S3 server.

SeaweedFS runs here with two identities, as an operator sets MinIO up from the README: the bot's
(admin) and the Jobs' one, whose actions are translated from `deploy/minio/flops-jobs-policy.json`
(the policy the README's `mc admin policy create` installs, and the user whose keys go into
FLOPS_S3_SECRET). Workloads are simulated with exactly those keys: they write their outputs into
the runs bucket, and everything they try on the bot's bucket is AccessDenied. The bot's flows run
end to end beside them with the bot's identity.
"""
from __future__ import annotations

import io
import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import minio
import pytest
from minio.error import S3Error

from bot.core import jobs
from bot.flows import builds, deploy, federated, pulls, regression
from bot.service import redeliver, replicas, retakes
from tests import markdown
from tests import test_federated as fl
from tests.conftest import NAMESPACE, Bed, wait_for
from tests.emulators.github import tree_sha
from tests.emulators.s3 import S3Server
from tests.test_regression import (
    GOOD,
    MAIN,
    PR,
    REPO,
    approve,
    completed,
    env_of,
    job_for,
    merge_group_payload,
    open_pr,
    push_to_main,
    regression_jobs,
    setup_repo,
)

ROOT = Path(__file__).resolve().parent.parent
JOBS_POLICY = json.loads((ROOT / "deploy" / "minio" / "flops-jobs-policy.json").read_text())
BOT_BUCKET, RUNS_BUCKET = "flops", "flops-runs"  # the README's and deploy/'s names
JOBS_KEY, JOBS_SECRET = "flops-jobs", "flops-jobs-secret-key"
# MinIO policy actions -> SeaweedFS identity actions (SeaweedFS's Write covers put and delete)
SEAWEED = {"s3:GetObject": "Read", "s3:PutObject": "Write", "s3:DeleteObject": "Write", "s3:ListBucket": "List"}
DENIED = "AccessDenied"


def seaweed_actions(policy: dict[str, Any]) -> list[str]:
    """The SeaweedFS actions a MinIO policy grants; fails on anything without an exact equivalent."""
    granted = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        for resource in statement["Resource"]:
            bucket = resource.removeprefix("arn:aws:s3:::").removesuffix("/*")
            assert re.fullmatch(r"[a-z0-9.-]+", bucket), f"{resource}: only whole buckets translate"
            granted |= {f"{SEAWEED[action]}:{bucket}" for action in statement["Action"]}
    return sorted(granted)


def test_the_jobs_policy_covers_the_runs_bucket_only_and_the_readme_installs_it() -> None:
    assert seaweed_actions(JOBS_POLICY) == [f"List:{RUNS_BUCKET}", f"Read:{RUNS_BUCKET}", f"Write:{RUNS_BUCKET}"]
    readme = (ROOT / "README.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", readme, re.S) if '"Statement"' in b]
    assert JOBS_POLICY in blocks, "the README shows the Jobs' policy of deploy/minio/flops-jobs-policy.json"
    assert "mc admin policy create" in readme and "deploy/minio/flops-jobs-policy.json" in readme


@pytest.fixture
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One server per test: the buckets have the fixed names the Jobs' policy names."""
    jobs_user = {"name": JOBS_KEY, "credentials": [{"accessKey": JOBS_KEY, "secretKey": JOBS_SECRET}],
                 "actions": seaweed_actions(JOBS_POLICY)}
    server = S3Server(tmp_path_factory.mktemp("s3-two-users"), identities=(jobs_user,))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "FLOPS_BUCKET": BOT_BUCKET, "FLOPS_RUNS_BUCKET": RUNS_BUCKET}


def as_job(bed: Bed) -> minio.Minio:
    """What a workload (or a Kaniko RUN step, or code an approved sha runs) can do with FLOPS_S3_SECRET."""
    return minio.Minio(bed.s3.endpoint, access_key=JOBS_KEY, secret_key=JOBS_SECRET, secure=False)


def denied(call: Callable[[], object]) -> str:
    try:
        result = call()
        if hasattr(result, "read"):
            result.read()
    except S3Error as exc:
        return exc.code
    return "allowed"


def put(client: minio.Minio, bucket: str, key: str, data: dict[str, Any] | list[Any]) -> None:
    body = json.dumps(data).encode()
    client.put_object(bucket, key, io.BytesIO(body), len(body), content_type="application/json")


async def workload_finishes(bed: Bed, job: dict[str, Any], metrics: dict[str, Any]) -> None:
    """The workload writes metrics.json under its FLOPS_OUTPUT with the Jobs' key, then exits 0."""
    env = env_of(job)
    assert env["FLOPS_S3_BUCKET"] == RUNS_BUCKET
    put(as_job(bed), env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", {"metrics": metrics})
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"])


async def baseline_run(bed: Bed, metrics: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    sha = await push_to_main(bed, {"train.py": f"print({len(bed.github.calls)})\n"})
    job = job_for(bed, sha)
    await workload_finishes(bed, job, metrics)
    run = await wait_for(lambda: completed(bed, sha), what="baseline report")
    assert (run["conclusion"], run["output"]["title"]) == ("success", "Baseline recorded")
    return sha, job


async def pr_gate(bed: Bed, metrics: dict[str, Any]) -> dict[str, Any]:
    head = bed.github.pulls[(REPO, PR)]["head"]["sha"]
    await approve(bed)
    await workload_finishes(bed, job_for(bed, head), metrics)
    run = await wait_for(lambda: completed(bed, head), what="regression report")
    await bed.settle()
    return run


async def test_the_jobs_key_is_denied_every_object_of_the_bots_state(bed: Bed) -> None:
    setup_repo(bed)
    base, _ = await baseline_run(bed, GOOD)  # a source, a baseline (the bot wrote them)
    head = open_pr(bed, {"train.py": "print('pr')\n"})
    run = await pr_gate(bed, GOOD)  # a trust grant, a tree verdict, the PR's history
    assert run["conclusion"] == "success"
    state = bed.deps.artifacts
    pr = pulls.PullRef(REPO, PR, head, "feature", MAIN, base, False, "octocat", 1)
    # what the other flows keep, at the keys they use: build records, deploy markers, a pending /train
    for key in (builds.record_key(REPO, base, "server"), builds.latest_key(REPO, MAIN, "server"),
                deploy.marker_key(REPO, base, "dev"), federated.pending_key(REPO, head), pulls.trust_key(pr),
                redeliver.STATE_KEY, retakes.KEY, replicas.PREFIX + "flops-bot-b-0a0b0c.json"):  # what is redelivered
        if not await state.exists(key):
            await state.put_json(key, {"by": "the bot"})
    keys = sorted(await state.list_keys(""))
    prefixes = {key.split("/", 1)[0] for key in keys}
    assert {"sources", "baselines", "results", "history", "builds", "deploys", "pending", "trust",
            "redeliver"} <= prefixes, keys
    job = as_job(bed)
    before = {key: await state.get_bytes(key) for key in keys}
    for key in keys:  # read (another repository's source included), overwrite, delete: all refused
        assert denied(lambda: job.get_object(BOT_BUCKET, key)) == DENIED, key
        assert denied(lambda: put(job, BOT_BUCKET, key, {"granted": True})) == DENIED, key
        assert denied(lambda: job.remove_object(BOT_BUCKET, key)) == DENIED, key
    assert denied(lambda: list(job.list_objects(BOT_BUCKET, recursive=True))) == DENIED
    assert denied(lambda: put(job, BOT_BUCKET, f"trust/{REPO}/pr-{PR}/{'f' * 40}.json", {})) == DENIED
    assert {key: await state.get_bytes(key) for key in keys} == before
    assert sorted(await state.list_keys("")) == keys
    # the one source a Job is meant to read comes through the bot's presigned URL, nothing else
    [fetch] = job_for_sha(bed, head)["spec"]["template"]["spec"]["initContainers"]
    with urllib.request.urlopen(fetch["env"][0]["value"]) as response:
        assert response.status == 200 and response.read() == before[jobs.source_key(REPO, head)]


def job_for_sha(bed: Bed, sha: str) -> dict[str, Any]:
    [job] = [j for j in regression_jobs(bed) if j["metadata"]["annotations"]["flops.dev/sha"] == sha]
    return job


async def test_a_job_rewriting_a_finished_baseline_run_does_not_move_the_gate(bed: Bed) -> None:
    setup_repo(bed)
    base, baseline_job = await baseline_run(bed, GOOD)
    output = env_of(baseline_job)["FLOPS_OUTPUT"]
    # a later Job (an approved PR's code, a RUN step) has the same key: it may rewrite the runs bucket
    put(as_job(bed), RUNS_BUCKET, output + "metrics.json", {"metrics": {"accuracy": 0.1, "loss": 9.0}})
    open_pr(bed, {"train.py": "print('worse')\n"})
    run = await pr_gate(bed, {"accuracy": 0.5, "loss": 0.9})
    assert run["conclusion"] == "failure", run["output"]  # judged against the recorded 0.912, not 0.1
    assert "| accuracy | higher | 0.912 | 0.5 |" in run["output"]["summary"]
    assert f"Baseline: `{base[:7]}`" in run["output"]["summary"]
    recorded = await bed.deps.artifacts.get_json(regression.baseline_key(REPO, base))
    assert recorded["metrics"] == GOOD


async def test_a_verdict_forged_in_the_runs_bucket_is_not_reused_for_a_merge_group(bed: Bed) -> None:
    setup_repo(bed)
    await baseline_run(bed, GOOD)
    base = bed.github.branch_sha(REPO, MAIN)
    head = open_pr(bed, {"train.py": "print('queued')\n"})
    assert (await pr_gate(bed, GOOD))["conclusion"] == "success"
    group = bed.github.commit(REPO, f"gh-readonly-queue/{MAIN}/pr-{PR}", {"evil.py": "x = 1\n"}, parents=[head])
    tree = tree_sha(bed.github.repos[REPO].commits[group].tree)
    forged = {"sha": head, "conclusion": "success", "title": "0 regressions", "summary": "trust me"}
    put(as_job(bed), RUNS_BUCKET, regression.tree_key(REPO, tree), forged)  # where a Job can write
    assert denied(lambda: put(as_job(bed), BOT_BUCKET, regression.tree_key(REPO, tree), forged)) == DENIED
    await bed.deliver("merge_group", merge_group_payload(bed, group, base))
    await bed.settle()
    assert job_for(bed, group)  # the group's own run, not a reused verdict
    assert [r for r in bed.github.check_runs_for(REPO, group, "flops/regression") if r["status"] == "completed"] == []


async def test_a_federated_run_written_with_the_jobs_key_is_reported_with_working_model_links(bed: Bed) -> None:
    """The bot's flows still work beside the Jobs' user: the pending /train request and the build records
    in the bot's bucket, the server's outputs in the runs bucket, presigned model links."""
    await bed.deps.artifacts.ping()  # /readyz: both buckets exist (the Jobs' user may not create one)
    server = await fl.start_run(bed)
    fl.write_output(bed, server, client=as_job(bed))
    for job in fl.run_objects(bed, server["metadata"]["name"])[0]:
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"])
    bed.kube.succeed_job(NAMESPACE, server["metadata"]["name"])
    check = await fl.report_of(bed, fl.head_of(bed))
    assert check["conclusion"] == "success"
    links = markdown.links(check["output"]["summary"])
    assert set(links) == set(fl.MODEL)
    for name, url in links.items():
        with urllib.request.urlopen(url) as response:
            assert response.read() == fl.MODEL[name]
    assert f"s3://{RUNS_BUCKET}/" in check["output"]["summary"]
