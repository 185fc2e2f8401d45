"""Who may deploy: the default branch's flops.yml names the targets, the config repository consents.

The attacker of these tests has write access to the code repository only: they can push any branch,
with any flops.yml and Dockerfile. The config repository's `.github/flops-deploy.yml` (on its target
branch, behind its own protection) and the code repository's default branch decide what deploys.
"""
from __future__ import annotations

from tests.conftest import NAMESPACE, Bed, push_payload
from tests.test_deploy_flow import (
    CONFIG_REPO,
    CONSENT,
    CRONJOB,
    REPO,
    SERVER,
    build,
    config_file,
    deploy_check,
    flops_yml,
    pushed_and_built,
    redeploy_comment,
    set_up,
    tag,
    target,
)

DEV = "dev/cronjob.yaml"
PROD_SECRET = """\
apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: hunter2-never-shown
"""


def build_jobs(bed: Bed, sha: str) -> list[dict[str, object]]:
    return [job for job in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
            if job["metadata"]["annotations"]["flops.dev/sha"] == sha]


def no_commit_to_config_repo(bed: Bed) -> bool:
    return bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/") == []


def refused_with_the_entry_to_add(bed: Bed, sha: str) -> str:
    """The failed deploy check's summary, which must hold the allow entry master's build needs."""
    check = deploy_check(bed, sha)
    summary = str(check["output"]["summary"])
    assert check["conclusion"] == "failure"
    assert f"  - repo: {REPO}\n    branches: [\"master\"]\n    paths: [\"{DEV}\"]\n" in summary
    return summary


# --- the branch-push attack -------------------------------------------------------------------------

async def test_a_branch_whose_own_flops_yml_lists_it_and_a_deploy_starts_nothing(bed: Bed) -> None:
    """The default branch builds `master` only and deploys nowhere; branch `x` says otherwise."""
    set_up(bed, flops_yml().replace("deploy:\n", ""), {DEV: CRONJOB})
    evil = flops_yml(target()).replace("branches: [master]", "branches: [master, x]")
    bed.github.commit(REPO, "x", {".github/flops.yml": evil}, parents=[bed.github.branch_sha(REPO, "master")])
    data = push_payload(bed.github, REPO, {"Dockerfile.server": "FROM evil\n", "server/app.py": "pwn()\n"}, branch="x")
    await bed.deliver("push", data)
    await bed.settle()

    assert build_jobs(bed, data["after"]) == []
    assert bed.github.check_runs_for(REPO, data["after"], "flops/deploy: dev") == []
    assert no_commit_to_config_repo(bed) and config_file(bed, DEV) == CRONJOB


async def test_a_branch_the_default_branch_builds_deploys_only_its_targets(bed: Bed) -> None:
    """Branch `x` is built (the default branch lists it) with the Dockerfile it names, but the
    deploy target it adds for itself is not the default branch's, so nothing deploys."""
    set_up(bed, flops_yml().replace("deploy:\n", "").replace("[master]", "[master, x]"), {DEV: CRONJOB})
    own = flops_yml(target()).replace("[master]", "[master, x]").replace("Dockerfile.server", "Dockerfile.x")
    bed.github.commit(REPO, "x", {".github/flops.yml": own}, parents=[bed.github.branch_sha(REPO, "master")])
    data = push_payload(bed.github, REPO, {"Dockerfile.x": "FROM python:3.11\n", "server/app.py": "x\n"}, branch="x")
    await bed.deliver("push", data)
    await bed.settle()

    [job] = build_jobs(bed, data["after"])
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(arg.endswith("/Dockerfile.x") for arg in args if arg.startswith("--dockerfile=")), args
    await build(bed, data, "server")
    assert bed.github.check_runs_for(REPO, data["after"], "flops/deploy: dev") == []
    assert no_commit_to_config_repo(bed)


# --- the config repository consents ------------------------------------------------------------------

async def test_a_config_repo_without_a_consent_file_gets_nothing_and_the_check_says_what_to_add(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {DEV: CRONJOB}, consent=None)
    data = await pushed_and_built(bed, {"server/app.py": "print(1)\n"}, "server")

    summary = refused_with_the_entry_to_add(bed, data["after"])
    assert f"`.github/flops-deploy.yml` on `{CONFIG_REPO}@main` does not exist" in summary
    assert "/redeploy dev" in summary
    assert no_commit_to_config_repo(bed) and config_file(bed, DEV) == CRONJOB

    consent = f"version: 1\nallow:\n  - repo: {REPO}\n    paths: [\"dev/**\"]\n"  # default: its default branch
    bed.github.commit(CONFIG_REPO, "main", {".github/flops-deploy.yml": consent}, author="ops-human")
    bed.github.set_permission(REPO, "Codertocat", "write")
    await bed.deliver("issue_comment", redeploy_comment(bed, f"/redeploy dev {data['after'][:7]}"))
    await bed.settle()
    assert f"{SERVER}:{tag(data)}@" in config_file(bed, DEV)


async def test_an_entry_for_other_files_or_branches_is_not_consent(bed: Bed) -> None:
    narrow = f"version: 1\nallow:\n  - repo: {REPO}\n    branches: [release]\n    paths: [\"dev/**\"]\n" \
             f"  - repo: {REPO}\n    paths: [\"staging/**\"]\n"
    set_up(bed, flops_yml(target()), {DEV: CRONJOB}, consent=narrow)
    data = await pushed_and_built(bed, {"server/app.py": "print(2)\n"}, "server")

    summary = refused_with_the_entry_to_add(bed, data["after"])
    assert f"no `allow` entry that lets builds of `master` of `{REPO}` edit `{DEV}`" in summary
    assert no_commit_to_config_repo(bed)


async def test_an_invalid_consent_file_names_its_problems_and_commits_nothing(bed: Bed) -> None:
    broken = "version: 1\nallow:\n  - repo: not-a-repo\n    paths: []\n    branch: [master]\n"
    set_up(bed, flops_yml(target()), {DEV: CRONJOB}, consent=broken)
    data = await pushed_and_built(bed, {"server/app.py": "print(3)\n"}, "server")

    summary = deploy_check(bed, data["after"])["output"]["summary"]
    assert "`.github/flops-deploy.yml`" in summary and "is invalid" in summary
    for key in ("allow[0].repo", "allow[0].paths", "allow[0].branch"):
        assert f"`{key}" in summary, key
    assert "python -m bot check-config .github/flops-deploy.yml" in summary
    assert no_commit_to_config_repo(bed)


# --- `field` moves an image, never reads or writes another value ---------------------------------------

async def test_field_on_a_value_that_is_not_the_image_fails_without_showing_it(bed: Bed) -> None:
    set_up(bed, flops_yml(target(file="prod/secret.yaml", field=".stringData.password")),
           {DEV: CRONJOB, "prod/secret.yaml": PROD_SECRET}, consent=CONSENT)
    data = await pushed_and_built(bed, {"server/app.py": "print(4)\n"}, "server")

    check = deploy_check(bed, data["after"])
    text = str(check["output"])
    assert check["conclusion"] == "failure"
    assert f"does not hold an image of {SERVER}" in check["output"]["summary"]
    assert "hunter2" not in text
    assert no_commit_to_config_repo(bed) and config_file(bed, "prod/secret.yaml") == PROD_SECRET
