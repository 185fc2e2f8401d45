"""Pull-request builds never hold the branch images' push credential (#15 finding 3).

`/build` (and `/train`, a PR check's Re-run) runs the PR's Dockerfile, whose `RUN` steps can read
whatever Kaniko mounts. So a PR build pushes only to the base branch's `pr_registry`, with the
`FLOPS_PR_REGISTRY_SECRET` credential and its own cache; without a `pr_registry` it is built and
pushed nowhere, holding no registry credential at all.
"""
from __future__ import annotations

from typing import Any

from tests.conftest import NAMESPACE, Bed, wait_for
from tests.samples import TWO_IMAGES
from tests.test_comment_commands import CONFIG, REPO, allow, builds_by_image, done, jobs_of, open_pr, say

NO_PR_REGISTRY = CONFIG.replace("pr_registry: harbor.example.com/flops-pr\n", "")


def secrets_mounted(job: dict[str, Any]) -> set[str]:
    volumes = job["spec"]["template"]["spec"].get("volumes") or []
    return {v["secret"]["secretName"] for v in volumes if "secret" in v}


def kaniko_args(job: dict[str, Any]) -> list[str]:
    return list(job["spec"]["template"]["spec"]["containers"][0]["args"])


async def test_pr_builds_push_to_pr_registry_with_its_own_secret_and_cache(bed: Bed) -> None:
    assert "pr_registry: harbor.example.com/flops-pr" in TWO_IMAGES
    head = open_pr(bed)
    allow(bed)
    [reply] = await say(bed, "/build")
    assert "pushed to `harbor.example.com/flops-pr`" in reply["body"]
    for image, job in builds_by_image(bed).items():
        args = kaniko_args(job)
        assert f"--destination=harbor.example.com/flops-pr/{image}:pr-1-{head[:7]}" in args
        assert "--cache-repo=harbor.example.com/flops-pr/cache" in args and "--no-push" not in args
        assert secrets_mounted(job) == {"registry-credentials-pr"}
        assert bed.settings.registry_secret not in secrets_mounted(job)


async def test_without_pr_registry_a_pr_build_is_checked_and_pushed_nowhere(bed: Bed) -> None:
    head = open_pr(bed, config=NO_PR_REGISTRY)
    allow(bed)
    [reply] = await say(bed, "/build server")
    assert "not pushed: no `pr_registry` is set" in reply["body"]
    [job] = builds_by_image(bed).values()
    args = kaniko_args(job)
    assert "--no-push" in args and "--cache=false" in args
    assert not any(arg.startswith("--cache-repo") for arg in args)
    assert secrets_mounted(job) == set()  # no registry credential for the PR's RUN steps to read
    # only the unpacked source (the init container's presigned fetch): nothing else is mounted
    assert [m["name"] for m in job["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]] == ["workspace"]

    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message="sha256:" + "ab" * 32)
    await wait_for(lambda: len(done(bed, head)) == 1, what="the build report")
    [check] = done(bed, head)
    assert check["name"] == "flops/build: server" and check["conclusion"] == "success"
    assert check["output"]["title"] == "Built, not pushed"
    assert "`pr_registry`" in check["output"]["summary"] and "FLOPS_PR_REGISTRY_SECRET" in check["output"]["summary"]
    assert await bed.deps.artifacts.get_json(f"builds/{REPO}/{head}/server.json") is None  # nothing to run or deploy


async def test_train_that_needs_pr_images_says_pr_registry_is_required(bed: Bed) -> None:
    head = open_pr(bed, config=NO_PR_REGISTRY)
    allow(bed)
    [reply] = await say(bed, "/train")
    assert "`pr_registry` is required for `/train`" in reply["body"]
    assert jobs_of(bed, "build") == [] and jobs_of(bed, "federated-server") == []
    assert await bed.deps.artifacts.get_json(f"pending/{REPO}/{head}/train.json") is None
