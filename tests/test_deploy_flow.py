"""Builds succeed -> the config repo's manifests are bumped -> `flops/deploy: <target>` on the source commit.

On the test bed, over real HTTP: the code repo and the GitOps config repo are separate repositories
of the GitHub emulator, in separate installations of the App (as when the config repo belongs to
another organisation). Kaniko's digest arrives as the build Pod's termination message.
"""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import INSTALLATION, NAMESPACE, Bed, payload, push_payload, wait_for

REPO = "Codertocat/Hello-World"
CONFIG_REPO = "acme-ops/gitops"
CONFIG_INSTALLATION = 78
REGISTRY = "harbor.example.com/flops"
SERVER = f"{REGISTRY}/server"
CLIENT = f"{REGISTRY}/client"
FIELD = ".spec.jobTemplate.spec.template.spec.containers[0].image"
DIGEST = "sha256:" + "ab" * 32
DIGEST2 = "sha256:" + "cd" * 32

# The seed pipeline's global server: a batch/v1 CronJob, bumped by `yq -i '<FIELD> = ...'` until now.
CRONJOB = """\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: fl-server
  namespace: fl
spec:
  schedule: "*/5 * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          imagePullSecrets:
            - name: harbor
          containers:
            - name: server
              image: harbor.example.com/flops/server:20261101-120000
              ports:
                - containerPort: 8080
"""

# Comments, an anchor shared through aliases, quoting, flow style, several documents.
STACK = """\
# FL stack for dev; reviewed by the platform team
---
apiVersion: v1
kind: Service
metadata:
  name: fl-server   # stable DNS name for the clients
spec:
  ports: [{port: 8080, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: fl-client
  labels: &labels
    app: fl-client
spec:
  selector:
    matchLabels: *labels
  template:
    metadata:
      labels: *labels
    spec:
      containers:
        - name: client
          image: 'harbor.example.com/flops/client:master-20261101120000-0c0c0c0'  # pinned by hand

---
apiVersion: batch/v1
kind: CronJob
metadata: {name: fl-server}
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          imagePullSecrets: [{name: harbor}]
          initContainers:
            - name: migrate
              image: &server "harbor.example.com/flops/server:master-20261101120000-0a0a0a0"
          containers:
            - name: server
              image: *server
              ports:
                - containerPort: 8080    # aggregation endpoint
"""

KUSTOMIZATION = """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - cronjob.yaml
images:
  - name: harbor.example.com/flops/server
    newTag: master-20261101120000-0a0a0a0   # bumped by flops-bot
  - name: harbor.example.com/flops/client
    newTag: v1
"""

Files = dict[str, str | bytes | None]
CODE_FILES: Files = {"Dockerfile.server": "FROM python:3.11\n", "server/app.py": "print(1)\n",
              "Dockerfile.client": "FROM python:3.11\n", "client/main.py": "print(2)\n"}


def flops_yml(*targets: str) -> str:
    return f"""\
registry: {REGISTRY}
branches: [master]
images:
  - name: server
    dockerfile: Dockerfile.server
    paths: ["server/**"]
  - name: client
    dockerfile: Dockerfile.client
    paths: ["client/**"]
deploy:
""" + "".join(targets)


def target(name: str = "dev", file: str = "dev/cronjob.yaml", *, images: str = "image: server",
           field: str | None = FIELD, mode: str | None = None) -> str:
    text = f"  - name: {name}\n    repo: {CONFIG_REPO}\n    branch: main\n    file: {file}\n    {images}\n"
    if field:
        text += f"    field: {field}\n"
    if mode:
        text += f"    mode: {mode}\n"
    return text


# The config repository's consent: builds of the code repo's master may edit its dev/ and prod/ files.
CONSENT = f"""\
version: 1
allow:
  - repo: {REPO}
    branches: [master]
    paths: ["dev/**", "prod/**", "*.yaml", "**/*.yml"]
"""


def set_up(bed: Bed, config: str, manifests: Files, *, installed: bool = True, consent: str | None = CONSENT) -> None:
    """The code repo with its .github/flops.yml, and the config repo (own installation) with `manifests`
    and (unless None) `consent` as its .github/flops-deploy.yml."""
    bed.github.add_repo(REPO, default_branch="master")
    bed.github.commit(REPO, "master", {**CODE_FILES, ".github/flops.yml": config})
    bed.github.add_repo(CONFIG_REPO, default_branch="main")
    files = {**manifests, ".github/flops-deploy.yml": consent} if consent is not None else manifests
    bed.github.commit(CONFIG_REPO, "main", files, message="initial manifests", author="ops-human")
    if installed:
        bed.github.add_installation(CONFIG_INSTALLATION, "acme-ops", [CONFIG_REPO])


def push(bed: Bed, files: Files, *, when: str = "2026-11-22T09:30:00Z") -> dict[str, Any]:
    """Commit `files` to the code repo and build the push payload GitHub would send."""
    return push_payload(bed.github, REPO, files, when=when)


def tag(data: dict[str, Any]) -> str:
    stamp = data["head_commit"]["timestamp"].replace("-", "").replace(":", "").replace("T", "").rstrip("Z")
    return f"master-{stamp}-{data['after'][:7]}"


def build_job(bed: Bed, sha: str, image: str) -> dict[str, Any]:
    jobs = [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
            if j["metadata"]["annotations"]["flops.dev/sha"] == sha
            and j["metadata"]["annotations"]["flops.dev/image"] == image
            and "flops.dev/reported" not in j["metadata"]["annotations"]]
    assert len(jobs) == 1, f"expected one unreported build Job of {image}@{sha[:7]}, found {len(jobs)}"
    return jobs[0]


async def build(bed: Bed, data: dict[str, Any], image: str, digest: str = DIGEST) -> None:
    """Kaniko finishes: exit 0, the digest as termination message; wait until the bot reported it
    (its check run completed and the Job marked reported: the after-build deploy ran before that)."""
    job = build_job(bed, data["after"], image)
    name, check_id = job["metadata"]["name"], int(job["metadata"]["annotations"]["flops.dev/check-run-id"])
    bed.kube.succeed_job(NAMESPACE, name, message=digest)
    await wait_for(lambda: "flops.dev/reported" in (bed.kube.get("jobs", NAMESPACE, name) or {})["metadata"]
                   ["annotations"], what=f"build report of {image}")
    assert bed.github.check_runs[check_id]["conclusion"] == "success"
    await bed.settle()


async def pushed_and_built(bed: Bed, files: Files, *images: str, **kw: str) -> dict[str, Any]:
    data = push(bed, files, **kw)
    await bed.deliver("push", data)
    await bed.settle()
    for image in images:
        await build(bed, data, image)
    return data


async def rerun_build(bed: Bed, data: dict[str, Any], image: str) -> None:
    """The Re-run button on the commit's latest `flops/build: <image>` check (recorded payload)."""
    last = bed.github.check_runs_for(REPO, data["after"], f"flops/build: {image}")[-1]
    rerun = payload("check_run.rerequested")
    rerun["check_run"].update(id=last["id"], name=last["name"], head_sha=data["after"])
    rerun["check_run"]["check_suite"]["head_branch"] = "master"
    rerun["installation"]["id"] = INSTALLATION
    rerun["repository"]["full_name"] = REPO
    await bed.deliver("check_run", rerun)
    await bed.settle()


def deploy_check(bed: Bed, sha: str, name: str = "dev") -> dict[str, Any]:
    runs = bed.github.check_runs_for(REPO, sha, f"flops/deploy: {name}")
    assert len(runs) == 1, f"expected one deploy check on {sha[:7]}, found {len(runs)}"
    assert runs[0]["status"] == "completed"
    return runs[0]


def config_file(bed: Bed, path: str, ref: str = "main") -> str:
    data = bed.github.file_at(CONFIG_REPO, ref, path)
    assert data is not None
    return data.decode()


def head_commit(bed: Bed, branch: str = "main") -> Any:
    repo = bed.github.repos[CONFIG_REPO]
    return repo.commits[repo.branches[branch]]


def changed_lines(old: str, new: str) -> list[tuple[str, str]]:
    """(old line, new line) pairs that differ; the texts must have the same number of lines."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    assert len(a) == len(b), "lines were added or removed"
    return [(x, y) for x, y in zip(a, b) if x != y]


# --- the seed's CronJob, commit message, installation -----------------------------------------------

async def test_cronjob_image_is_bumped_with_a_one_line_commit_on_the_config_repo(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB, "prod/cronjob.yaml": CRONJOB})
    before = bed.github.file_at(CONFIG_REPO, "main", "dev/cronjob.yaml")
    data = await pushed_and_built(bed, {"server/app.py": "print(3)\n"}, "server")
    sha7 = data["after"][:7]
    reference = f"{SERVER}:{tag(data)}@{DIGEST}"

    after = bed.github.file_at(CONFIG_REPO, "main", "dev/cronjob.yaml")
    assert before is not None and after is not None
    assert after == before.replace(b"harbor.example.com/flops/server:20261101-120000", reference.encode())
    assert changed_lines(before.decode(), after.decode()) == [
        ("              image: harbor.example.com/flops/server:20261101-120000\n",
         f"              image: {reference}\n")]
    for kept in (b"restartPolicy: OnFailure", b"- containerPort: 8080", b"- name: harbor", b'"*/5 * * * *"'):
        assert kept in after
    assert bed.github.file_at(CONFIG_REPO, "main", "prod/cronjob.yaml") == CRONJOB.encode()

    commit = head_commit(bed)
    assert commit.message.splitlines()[0] == (
        f"deploy(dev): server {REPO}@{sha7} -> harbor.example.com/flops/server:master-20261122093000-{sha7}")
    assert f"Image: {reference}" in commit.message
    assert commit.committer == bed.github.bot_login
    [put] = bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/dev/cronjob.yaml$")
    assert put.installation_id == CONFIG_INSTALLATION and put.status == 200

    check = deploy_check(bed, data["after"])
    assert check["conclusion"] == "success"
    assert check["details_url"] == f"https://github.com/{CONFIG_REPO}/commit/{commit.sha}"
    assert commit.sha in check["output"]["summary"] and reference in check["output"]["summary"]


async def test_a_file_with_comments_anchors_and_several_documents_changes_only_the_image(bed: Bed) -> None:
    set_up(bed, flops_yml(target(file="dev/stack.yaml", field=None)), {"dev/stack.yaml": STACK})
    data = await pushed_and_built(bed, {"server/app.py": "print(4)\n"}, "server")
    reference = f"{SERVER}:{tag(data)}@{DIGEST}"

    after = config_file(bed, "dev/stack.yaml")
    assert after == STACK.replace("harbor.example.com/flops/server:master-20261101120000-0a0a0a0", reference)
    assert changed_lines(STACK, after) == [
        ('              image: &server "harbor.example.com/flops/server:master-20261101120000-0a0a0a0"\n',
         f'              image: &server "{reference}"\n')]  # the anchor; `image: *server` follows it
    assert "client:master-20261101120000-0c0c0c0'  # pinned by hand" in after
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


async def test_a_manifest_saved_with_bom_and_crlf_keeps_both(bed: Bed) -> None:
    windows = ("\ufeff" + CRONJOB.replace("\n", "\r\n")).encode()
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": windows})
    data = await pushed_and_built(bed, {"server/app.py": "print(27)\n"}, "server")

    after = bed.github.file_at(CONFIG_REPO, "main", "dev/cronjob.yaml")
    assert after == windows.replace(f"{SERVER}:20261101-120000".encode(), f"{SERVER}:{tag(data)}@{DIGEST}".encode())
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


async def test_a_file_name_with_url_characters_is_the_file_edited(bed: Bed) -> None:
    name = "dev/fl server#1 {blue}.yaml"
    set_up(bed, flops_yml(target(file=f'"{name}"')), {name: CRONJOB, "dev/fl server": "not this one\n"})
    data = await pushed_and_built(bed, {"server/app.py": "print(32)\n"}, "server")

    assert f"{SERVER}:{tag(data)}@{DIGEST}" in config_file(bed, name)
    assert config_file(bed, "dev/fl server") == "not this one\n"
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


async def test_kustomization_images_entry_gets_tag_and_digest(bed: Bed) -> None:
    set_up(bed, flops_yml(target(file="dev/kustomization.yaml", field=None)), {"dev/kustomization.yaml": KUSTOMIZATION})
    data = await pushed_and_built(bed, {"server/app.py": "print(5)\n"}, "server")

    assert config_file(bed, "dev/kustomization.yaml") == f"""\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - cronjob.yaml
images:
  - name: harbor.example.com/flops/server
    newTag: {tag(data)}   # bumped by flops-bot
    digest: {DIGEST}
  - name: harbor.example.com/flops/client
    newTag: v1
"""
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


# --- when: every image of the target, newest wins, once ---------------------------------------------

async def test_a_target_of_two_images_deploys_once_after_both_built(bed: Bed) -> None:
    set_up(bed, flops_yml(target(file="dev/stack.yaml", images="images: [server, client]", field=None)),
           {"dev/stack.yaml": STACK})
    data = push(bed, {"server/app.py": "print(6)\n", "client/main.py": "print(7)\n"})
    await bed.deliver("push", data)
    await bed.settle()

    await build(bed, data, "server")
    assert bed.github.check_runs_for(REPO, data["after"], "flops/deploy: dev") == []
    assert config_file(bed, "dev/stack.yaml") == STACK

    await build(bed, data, "client", DIGEST2)
    sha7 = data["after"][:7]
    after = config_file(bed, "dev/stack.yaml")
    assert [new.strip() for _, new in changed_lines(STACK, after)] == [
        f"image: '{CLIENT}:{tag(data)}@{DIGEST2}'  # pinned by hand",
        f'image: &server "{SERVER}:{tag(data)}@{DIGEST}"']
    assert head_commit(bed).message.splitlines()[0] == (
        f"deploy(dev): server {REPO}@{sha7} -> {SERVER}:{tag(data)}, client {REPO}@{sha7} -> {CLIENT}:{tag(data)}")
    assert len(bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/")) == 1
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


async def test_an_older_build_finishing_last_keeps_the_newer_image(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    old = push(bed, {"server/app.py": "print(8)\n"}, when="2026-11-22T09:30:00Z")
    await bed.deliver("push", old)
    await bed.settle()
    new = await pushed_and_built(bed, {"server/app.py": "print(9)\n"}, "server", when="2026-11-22T10:45:00Z")
    deployed = config_file(bed, "dev/cronjob.yaml")
    assert f"{SERVER}:{tag(new)}@{DIGEST}" in deployed

    # The older commit's build (superseded by the newer push) is re-run and finishes last.
    [cancelled] = bed.github.check_runs_for(REPO, old["after"], "flops/build: server")
    assert cancelled["conclusion"] == "cancelled"
    await rerun_build(bed, old, "server")
    await build(bed, old, "server", DIGEST2)

    assert config_file(bed, "dev/cronjob.yaml") == deployed
    check = deploy_check(bed, old["after"])
    assert check["conclusion"] == "neutral"
    assert "newer" in check["output"]["title"]
    assert f"{SERVER}:{tag(new)}@{DIGEST}" in check["output"]["summary"]
    assert f"/redeploy dev {old['after'][:7]}" in check["output"]["summary"]
    assert len(bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/")) == 1


@pytest.mark.parametrize("forced", [False, True])
async def test_a_fast_forward_push_over_the_deployed_commit_needs_no_ancestry_lookup(bed: Bed, forced: bool) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    first = await pushed_and_built(bed, {"server/app.py": "print(31)\n"}, "server", when="2026-11-22T09:30:00Z")
    second = push(bed, {"server/app.py": "print(32)\n"}, when="2026-11-22T10:45:00Z")  # its `before` is `first`
    second["forced"] = forced
    await bed.deliver("push", second)
    await bed.settle()
    await build(bed, second, "server")
    assert f"{SERVER}:{tag(second)}@{DIGEST}" in config_file(bed, "dev/cronjob.yaml")
    asked = bed.github.calls_to("GET", rf"^/repos/{REPO}/compare/{second['after']}\.\.\.{first['after'][:7]}$")
    assert len(asked) == (1 if forced else 0)  # a force-push may have rewritten history: then ask


async def test_without_ancestry_the_sortable_tag_decides(bed: Bed) -> None:
    # The file names a build of a commit the code repo does not know (force-pushed away), tagged later.
    later = f"{SERVER}:master-20261230000000-feedbee@{DIGEST2}"
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB.replace(f"{SERVER}:20261101-120000", later)})
    data = await pushed_and_built(bed, {"server/app.py": "print(10)\n"}, "server")
    assert later in config_file(bed, "dev/cronjob.yaml")
    assert deploy_check(bed, data["after"])["conclusion"] == "neutral"


async def test_a_build_reported_again_never_deploys_twice(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    data = await pushed_and_built(bed, {"server/app.py": "print(11)\n"}, "server")
    deployed = config_file(bed, "dev/cronjob.yaml")

    await rerun_build(bed, data, "server")  # the Re-run button: the same commit built and reported again
    await build(bed, data, "server", DIGEST2)

    assert config_file(bed, "dev/cronjob.yaml") == deployed
    assert len(bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/")) == 1
    assert deploy_check(bed, data["after"])["conclusion"] == "success"  # still the one report


async def test_a_deploy_reported_failed_whose_commit_landed_says_so_when_built_again(bed: Bed) -> None:
    """GitHub applied the config commit but answered 403: the check says the deploy failed. `/redeploy`
    finds nothing to change; that failed check is not the report of a deploy done, so the outcome is
    reported (before, any completed check on the commit silenced a 'nothing to change')."""
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    bed.github.fail_after_applying("PUT", rf"^/repos/{CONFIG_REPO}/contents/dev/cronjob.yaml$", 403)
    data = await pushed_and_built(bed, {"server/app.py": "print(12)\n"}, "server")
    [failed] = bed.github.check_runs_for(REPO, data["after"], "flops/deploy: dev")
    assert (failed["conclusion"], failed["output"]["title"]) == ("failure", "Deploy to dev failed")
    deployed = config_file(bed, "dev/cronjob.yaml")
    assert f"@{DIGEST}" in deployed

    bed.github.set_permission(REPO, "Codertocat", "write")
    await bed.deliver("issue_comment", redeploy_comment(bed, f"/redeploy dev {data['after'][:7]}"))
    await bed.settle()

    assert config_file(bed, "dev/cronjob.yaml") == deployed
    last = bed.github.check_runs_for(REPO, data["after"], "flops/deploy: dev")[-1]
    assert (last["conclusion"], last["output"]["title"]) == ("neutral", "dev: nothing to change")


async def test_pull_request_mode_keeps_the_newer_build_of_the_open_pull_request(bed: Bed) -> None:
    set_up(bed, flops_yml(target("prod", "prod/cronjob.yaml", mode="pull_request")), {"prod/cronjob.yaml": CRONJOB})
    old = push(bed, {"server/app.py": "print(21)\n"})
    await bed.deliver("push", old)
    await bed.settle()
    new = await pushed_and_built(bed, {"server/app.py": "print(22)\n"}, "server", when="2026-11-22T10:45:00Z")
    proposed = config_file(bed, "prod/cronjob.yaml", "flops/deploy-prod")
    assert f"{SERVER}:{tag(new)}@{DIGEST}" in proposed

    await rerun_build(bed, old, "server")
    await build(bed, old, "server", DIGEST2)

    assert config_file(bed, "prod/cronjob.yaml", "flops/deploy-prod") == proposed
    check = deploy_check(bed, old["after"], "prod")
    assert check["conclusion"] == "neutral" and f"{SERVER}:{tag(new)}@{DIGEST}" in check["output"]["summary"]


# --- conflicts: re-read, re-decide, retry ------------------------------------------------------------

async def test_a_concurrent_commit_to_the_file_is_kept_and_the_bump_retried(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    human = CRONJOB.replace('"*/5 * * * *"', '"*/10 * * * *"')
    bed.github.before_next("PUT", rf"^/repos/{CONFIG_REPO}/contents/",
                           lambda: bed.github.commit(CONFIG_REPO, "main", {"dev/cronjob.yaml": human},
                                                     message="slower schedule", author="ops-human"))
    data = await pushed_and_built(bed, {"server/app.py": "print(12)\n"}, "server")

    puts = bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/dev/cronjob.yaml$")
    assert [p.status for p in puts] == [409, 200]
    after = config_file(bed, "dev/cronjob.yaml")
    assert after == human.replace(f"{SERVER}:20261101-120000", f"{SERVER}:{tag(data)}@{DIGEST}")
    [parent] = head_commit(bed).parents  # the bump sits on top of the human's commit
    assert bed.github.repos[CONFIG_REPO].commits[parent].message == "slower schedule"
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


async def test_a_422_sha_mismatch_is_retried_like_a_409(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    bed.github.fail_next("PUT", rf"^/repos/{CONFIG_REPO}/contents/", 422,
                         body={"message": "dev/cronjob.yaml does not match 0123abc", "documentation_url": "x"})
    data = await pushed_and_built(bed, {"server/app.py": "print(33)\n"}, "server")

    assert [p.status for p in bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/")] == [422, 200]
    assert f"{SERVER}:{tag(data)}@{DIGEST}" in config_file(bed, "dev/cronjob.yaml")
    assert deploy_check(bed, data["after"])["conclusion"] == "success"


async def test_a_racing_newer_deploy_wins_after_the_conflict(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    data = push(bed, {"server/app.py": "print(13)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    newer_sha = bed.github.commit(REPO, "master", {"server/app.py": "print(14)\n"})  # a child of data["after"]
    newer = f"{SERVER}:master-20261122110000-{newer_sha[:7]}@{DIGEST2}"
    bed.github.before_next("PUT", rf"^/repos/{CONFIG_REPO}/contents/",
                           lambda: bed.github.commit(CONFIG_REPO, "main", {
                               "dev/cronjob.yaml": CRONJOB.replace(f"{SERVER}:20261101-120000", newer)}))
    await build(bed, data, "server")

    assert [p.status for p in bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/contents/")] == [409]
    assert newer in config_file(bed, "dev/cronjob.yaml")
    check = deploy_check(bed, data["after"])
    assert check["conclusion"] == "neutral" and newer in check["output"]["summary"]


# --- failures say what to do ---------------------------------------------------------------------

async def test_a_field_that_does_not_exist_fails_the_check(bed: Bed) -> None:
    missing = ".spec.jobTemplate.spec.template.spec.containers[1].image"
    set_up(bed, flops_yml(target(field=missing)), {"dev/cronjob.yaml": CRONJOB})
    data = await pushed_and_built(bed, {"server/app.py": "print(15)\n"}, "server")

    check = deploy_check(bed, data["after"])
    assert check["conclusion"] == "failure"
    summary = check["output"]["summary"]
    assert f"`{missing}` does not exist in dev/cronjob.yaml" in summary
    assert "has 1 item(s), no `[1]`" in summary and "check `field`" in summary
    assert config_file(bed, "dev/cronjob.yaml") == CRONJOB
    assert bed.github.calls_to("PUT", rf"^/repos/{CONFIG_REPO}/") == []


async def test_one_field_for_two_images_is_refused_by_the_config_check_before_anything_builds(bed: Bed) -> None:
    set_up(bed, flops_yml(target(images="images: [server, client]")), {"dev/cronjob.yaml": CRONJOB})
    data = push(bed, {"server/app.py": "print(34)\n", "client/main.py": "print(35)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    [check] = bed.github.check_runs_for(REPO, data["after"], "flops/config")
    assert check["conclusion"] == "failure"
    assert "`deploy[0].field`" in check["output"]["summary"] and "drop `field`" in check["output"]["summary"]
    assert bed.kube.list("jobs", NAMESPACE) == []  # one image would have been written over the other
    assert config_file(bed, "dev/cronjob.yaml") == CRONJOB


async def test_app_not_installed_on_the_config_repo_fails_with_what_to_do(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB}, installed=False)
    data = await pushed_and_built(bed, {"server/app.py": "print(16)\n"}, "server")

    check = deploy_check(bed, data["after"])
    assert check["conclusion"] == "failure"
    summary = check["output"]["summary"]
    assert f"not installed on `{CONFIG_REPO}`" in summary
    assert f"Install the App on `{CONFIG_REPO}`" in summary and "/redeploy dev" in summary
    assert config_file(bed, "dev/cronjob.yaml") == CRONJOB


# --- pull-request mode ---------------------------------------------------------------------------

async def test_pull_request_mode_opens_then_updates_one_pull_request(bed: Bed) -> None:
    set_up(bed, flops_yml(target("prod", "prod/cronjob.yaml", mode="pull_request")), {"prod/cronjob.yaml": CRONJOB})
    first = await pushed_and_built(bed, {"server/app.py": "print(17)\n"}, "server")

    [(key, pull)] = [(k, p) for k, p in bed.github.pulls.items() if k[0] == CONFIG_REPO]
    assert pull["state"] == "open" and pull["base"]["ref"] == "main" and pull["head"]["ref"] == "flops/deploy-prod"
    assert pull["title"] == f"deploy(prod): server {REPO}@{first['after'][:7]} -> {SERVER}:{tag(first)}"
    assert config_file(bed, "prod/cronjob.yaml") == CRONJOB  # nothing lands before the merge
    proposed = config_file(bed, "prod/cronjob.yaml", "flops/deploy-prod")
    assert changed_lines(CRONJOB, proposed) == [
        ("              image: harbor.example.com/flops/server:20261101-120000\n",
         f"              image: {SERVER}:{tag(first)}@{DIGEST}\n")]
    check = deploy_check(bed, first["after"], "prod")
    assert check["conclusion"] == "success" and check["details_url"] == pull["html_url"]

    second = await pushed_and_built(bed, {"server/app.py": "print(18)\n"}, "server", when="2026-11-22T11:00:00Z")
    assert [k for k in bed.github.pulls if k[0] == CONFIG_REPO] == [key]
    pull = bed.github.pulls[key]
    assert pull["state"] == "open"
    assert pull["title"] == f"deploy(prod): server {REPO}@{second['after'][:7]} -> {SERVER}:{tag(second)}"
    proposed = config_file(bed, "prod/cronjob.yaml", "flops/deploy-prod")
    assert [new for _, new in changed_lines(CRONJOB, proposed)] == [
        f"              image: {SERVER}:{tag(second)}@{DIGEST}\n"]
    assert config_file(bed, "prod/cronjob.yaml") == CRONJOB
    assert deploy_check(bed, second["after"], "prod")["details_url"] == pull["html_url"]


# --- /redeploy ------------------------------------------------------------------------------------

async def test_redeploy_rolls_back_to_an_older_build_and_says_so(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    old = await pushed_and_built(bed, {"server/app.py": "print(19)\n"}, "server")
    new = await pushed_and_built(bed, {"server/app.py": "print(20)\n"}, "server", when="2026-11-22T10:00:00Z")
    assert f"{SERVER}:{tag(new)}@{DIGEST}" in config_file(bed, "dev/cronjob.yaml")

    bed.github.set_permission(REPO, "Codertocat", "write")
    body = f"The new server diverges; rolling back.\n/redeploy dev {old['after'][:7]}"
    await bed.deliver("issue_comment", redeploy_comment(bed, body))
    await bed.settle()

    rolled = f"{SERVER}:{tag(old)}@{DIGEST}"
    after = config_file(bed, "dev/cronjob.yaml")
    assert changed_lines(CRONJOB, after) == [
        ("              image: harbor.example.com/flops/server:20261101-120000\n", f"              image: {rolled}\n")]
    message = head_commit(bed).message
    assert message.splitlines()[0] == f"deploy(dev): server {REPO}@{old['after'][:7]} -> {SERVER}:{tag(old)}"
    assert "Rollback" in message and f"{SERVER}:{tag(new)}@{DIGEST}" in message and "@Codertocat" in message

    [reply] = [c for c in bed.github.comments_on(REPO, 1) if c["user"]["type"] == "Bot"]
    assert reply["body"].startswith("@Codertocat")
    assert "**success** · Deployed to dev" in reply["body"] and head_commit(bed).sha in reply["body"]
    runs = bed.github.check_runs_for(REPO, old["after"], "flops/deploy: dev")
    assert [r["conclusion"] for r in runs] == ["success", "success"]  # the push's deploy, then the rollback


async def test_redeploy_needs_a_build_of_that_commit(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    unbuilt = bed.github.commit(REPO, "master", {"README.md": "docs\n"})
    bed.github.set_permission(REPO, "Codertocat", "admin")
    await bed.deliver("issue_comment", redeploy_comment(bed, f"/redeploy dev {unbuilt[:7]}"))
    await bed.settle()

    [reply] = [c for c in bed.github.comments_on(REPO, 1) if c["user"]["type"] == "Bot"]
    assert "**failure** · Not built" in reply["body"] and unbuilt[:7] in reply["body"]
    assert config_file(bed, "dev/cronjob.yaml") == CRONJOB


async def test_a_push_building_one_image_of_a_two_image_target_deploys_it_with_the_other_images_last_build(
        bed: Bed) -> None:
    set_up(bed, flops_yml(target(file="dev/stack.yaml", images="images: [server, client]", field=None)),
           {"dev/stack.yaml": STACK})
    both = await pushed_and_built(bed, {"server/app.py": "print(23)\n", "client/main.py": "print(24)\n"},
                                  "server", "client")
    deployed = config_file(bed, "dev/stack.yaml")
    only_client = push(bed, {"client/main.py": "print(25)\n"}, when="2026-11-22T12:00:00Z")  # path filters: no server
    await bed.deliver("push", only_client)
    await bed.settle()
    await build(bed, only_client, "client", DIGEST2)

    after = config_file(bed, "dev/stack.yaml")
    assert changed_lines(deployed, after) == [
        (f"          image: '{CLIENT}:{tag(both)}@{DIGEST}'  # pinned by hand\n",
         f"          image: '{CLIENT}:{tag(only_client)}@{DIGEST2}'  # pinned by hand\n")]
    assert head_commit(bed).message.splitlines()[0] == (
        f"deploy(dev): client {REPO}@{only_client['after'][:7]} -> {CLIENT}:{tag(only_client)}")
    assert deploy_check(bed, only_client["after"])["conclusion"] == "success"


async def test_a_target_whose_other_image_was_never_built_says_it_waits(bed: Bed) -> None:
    set_up(bed, flops_yml(target(file="dev/stack.yaml", images="images: [server, client]", field=None)),
           {"dev/stack.yaml": STACK})
    data = await pushed_and_built(bed, {"client/main.py": "print(26)\n"}, "client")

    check = deploy_check(bed, data["after"])
    assert check["conclusion"] == "neutral" and "waiting for a first build of server" in check["output"]["title"]
    assert "`server` has no successful build on `master`" in check["output"]["summary"]
    assert config_file(bed, "dev/stack.yaml") == STACK


def redeploy_comment(bed: Bed, body: str, user: str = "Codertocat") -> dict[str, Any]:
    """The recorded issue_comment.created payload, for a comment `user` wrote on issue 1."""
    comment = bed.github.add_comment(REPO, 1, body, user=user)
    data = payload("issue_comment.created")
    data["comment"].update(id=comment["id"], body=body)
    data["comment"]["user"]["login"] = user
    data["installation"]["id"] = INSTALLATION
    return data


async def test_redeploy_without_a_sha_returns_to_the_latest_build(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    old = await pushed_and_built(bed, {"server/app.py": "print(28)\n"}, "server")
    new = await pushed_and_built(bed, {"server/app.py": "print(29)\n"}, "server", when="2026-11-22T10:00:00Z")
    bed.github.set_permission(REPO, "Codertocat", "maintain")
    await bed.deliver("issue_comment", redeploy_comment(bed, f"/redeploy dev {old['after'][:7]}"))
    await bed.settle()
    assert f"{SERVER}:{tag(old)}@{DIGEST}" in config_file(bed, "dev/cronjob.yaml")

    await bed.deliver("issue_comment", redeploy_comment(bed, "/redeploy dev"))
    await bed.settle()
    assert f"{SERVER}:{tag(new)}@{DIGEST}" in config_file(bed, "dev/cronjob.yaml")
    message = head_commit(bed).message
    assert message.startswith(f"deploy(dev): server {REPO}@{new['after'][:7]} -> ") and "Rollback" not in message


async def test_redeploy_by_someone_without_write_access_changes_nothing(bed: Bed) -> None:
    set_up(bed, flops_yml(target()), {"dev/cronjob.yaml": CRONJOB})
    old = await pushed_and_built(bed, {"server/app.py": "print(30)\n"}, "server")
    await pushed_and_built(bed, {"server/app.py": "print(31)\n"}, "server", when="2026-11-22T10:00:00Z")
    deployed = config_file(bed, "dev/cronjob.yaml")
    bed.github.set_permission(REPO, "drive-by", "triage")
    await bed.deliver("issue_comment", redeploy_comment(bed, f"/redeploy dev {old['after'][:7]}", user="drive-by"))
    await bed.settle()

    assert config_file(bed, "dev/cronjob.yaml") == deployed
    [reply] = [c for c in bed.github.comments_on(REPO, 1) if c["user"]["type"] == "Bot"]
    assert "need write access" in reply["body"]
