"""Content-addressed images (`images[].inputs`): unchanged inputs reuse the earlier build with no Job.

On the test bed, over real HTTP: the GitHub emulator lists the commit's tree (git blob ids, as the
trees API does), the build records live in the real S3 server, the deploy bumps the config repo.
"""
from __future__ import annotations

import hashlib
import io
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.core.config import ConfigError, parse
from bot.core.inputs import Inputs, Unhashed, inputs_key, inputs_of
from tests.conftest import NAMESPACE, Bed, payload, push_payload, wait_for
from tests.emulators.github import blob_sha
from tests.emulators.s3 import S3Server
from tests.test_cli import run
from tests.test_comment_commands import CONFIG as PR_CONFIG
from tests.test_comment_commands import FILES as PR_FILES
from tests.test_comment_commands import allow, builds_by_image, done, jobs_of, open_pr, push_to_pr, say
from tests.test_deploy_flow import (
    CODE_FILES,
    CRONJOB,
    DIGEST,
    DIGEST2,
    FIELD,
    REGISTRY,
    REPO,
    build,
    config_file,
    deploy_check,
    push,
    rerun_build,
    set_up,
    tag,
    target,
)

REQUIREMENTS = "numpy==1.26.4\ntorch==2.3.0\n"
CONFIG = f"""\
registry: {REGISTRY}
branches: [master]
images:
  - name: server
    dockerfile: Dockerfile.server
    inputs: ["requirements*.txt", "Dockerfile.server"]
deploy:
{target(field=FIELD)}"""
FILES = {**CODE_FILES, "requirements.txt": REQUIREMENTS}


def inputs_hash(files: dict[str, str]) -> str:
    """The documented hash: sha256 of the sorted `path NUL blob-id LF` lines of the matching files."""
    body = "".join(f"{path}\0{blob_sha(text.encode())}\n" for path, text in sorted(files.items()))
    return hashlib.sha256(body.encode()).hexdigest()


def build_jobs_of(bed: Bed, sha: str) -> list[dict[str, Any]]:
    return [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
            if j["metadata"]["annotations"]["flops.dev/sha"] == sha]


def build_check(bed: Bed, sha: str) -> dict[str, Any]:
    (run,) = bed.github.check_runs_for(REPO, sha, "flops/build: server")
    return run


async def pushed(bed: Bed, files: dict[str, str], when: str) -> dict[str, Any]:
    data = push(bed, files, when=when)
    await bed.deliver("push", data)
    await bed.settle()
    return data


def record(bed: Bed, sha: str) -> Any:
    raw = bed.s3.client().get_object(bed.settings.s3.bucket, f"builds/{REPO}/{sha}/server.json").read()
    return json.loads(raw)


async def test_unchanged_inputs_reuse_the_build_and_deploy_it_while_a_requirements_change_builds(bed: Bed) -> None:
    set_up(bed, CONFIG, {"dev/cronjob.yaml": CRONJOB})
    bed.github.commit(REPO, "master", {"requirements.txt": REQUIREMENTS})
    first = await pushed(bed, {"server/app.py": "print(3)\n"}, "2026-11-22T09:30:00Z")
    (job,) = build_jobs_of(bed, first["after"])
    digest = inputs_hash({"requirements.txt": REQUIREMENTS, "Dockerfile.server": FILES["Dockerfile.server"]})
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--destination={REGISTRY}/server:{tag(first)}" in args  # the usual tag first, what deploys pin
    assert f"--destination={REGISTRY}/server:in-{digest[:12]}" in args
    await build(bed, first, "server", DIGEST)
    first_ref = f"{REGISTRY}/server:{tag(first)}@{DIGEST}"
    assert first_ref in config_file(bed, "dev/cronjob.yaml")

    # Only application code changed: no Job, the build check says whose build it took.
    second = await pushed(bed, {"server/app.py": "print(4)\n"}, "2026-11-22T10:30:00Z")
    assert build_jobs_of(bed, second["after"]) == []
    run = build_check(bed, second["after"])
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert run["output"]["title"] == f"reused, inputs unchanged since {first['after'][:7]}"
    assert run["output"]["summary"].startswith(f"reused, inputs unchanged since {first['after'][:7]}")
    assert DIGEST in run["output"]["summary"]
    assert record(bed, second["after"])["reference"] == first_ref
    assert record(bed, second["after"])["reused_from"] == first["after"]
    assert deploy_check(bed, second["after"])["conclusion"] == "neutral"  # the manifest has that image already

    # requirements.txt changed: a build, a new digest deployed.
    third = await pushed(bed, {"requirements.txt": REQUIREMENTS + "pandas==2.2.2\n"}, "2026-11-22T11:30:00Z")
    (job,) = build_jobs_of(bed, third["after"])
    await build(bed, third, "server", DIGEST2)
    assert f"{REGISTRY}/server:{tag(third)}@{DIGEST2}" in config_file(bed, "dev/cronjob.yaml")

    # Reverted: the inputs of the first commit again, its image reused and deployed with no Job.
    fourth = await pushed(bed, {"requirements.txt": REQUIREMENTS}, "2026-11-22T12:30:00Z")
    assert build_jobs_of(bed, fourth["after"]) == []
    assert build_check(bed, fourth["after"])["output"]["title"] == \
        f"reused, inputs unchanged since {first['after'][:7]}"
    assert deploy_check(bed, fourth["after"])["conclusion"] == "success"
    manifest = config_file(bed, "dev/cronjob.yaml")
    assert first_ref in manifest and DIGEST2 not in manifest


async def test_the_re_run_button_on_a_reused_check_builds_the_image(bed: Bed) -> None:
    set_up(bed, CONFIG, {"dev/cronjob.yaml": CRONJOB})
    first = await pushed(bed, {"requirements.txt": REQUIREMENTS}, "2026-11-22T09:30:00Z")
    await build(bed, first, "server", DIGEST)
    second = await pushed(bed, {"server/app.py": "print(8)\n"}, "2026-11-22T10:30:00Z")
    assert build_jobs_of(bed, second["after"]) == []
    await rerun_build(bed, second, "server")
    (job,) = build_jobs_of(bed, second["after"])
    assert any(":in-" in arg for arg in job["spec"]["template"]["spec"]["containers"][0]["args"])
    await build(bed, second, "server", DIGEST2)
    assert record(bed, second["after"])["digest"] == DIGEST2 and record(bed, second["after"])["reused_from"] == ""
    third = await pushed(bed, {"server/app.py": "print(9)\n"}, "2026-11-22T11:30:00Z")
    assert build_check(bed, third["after"])["output"]["title"] == \
        f"reused, inputs unchanged since {second['after'][:7]}"  # the newest build of these inputs


async def test_a_redelivered_push_reports_the_reuse_once(bed: Bed) -> None:
    set_up(bed, CONFIG, {"dev/cronjob.yaml": CRONJOB})
    first = await pushed(bed, {"requirements.txt": REQUIREMENTS}, "2026-11-22T09:30:00Z")
    await build(bed, first, "server", DIGEST)
    second = await pushed(bed, {"server/app.py": "print(11)\n"}, "2026-11-22T10:30:00Z")
    await bed.deliver("push", second)  # GitHub's redelivery, or a restart replaying it
    await bed.settle()
    assert build_check(bed, second["after"])["output"]["title"].startswith("reused")  # exactly one check
    deploy_check(bed, second["after"])  # and one deploy report


async def test_a_truncated_tree_builds_and_the_check_says_why(bed: Bed) -> None:
    set_up(bed, CONFIG, {"dev/cronjob.yaml": CRONJOB})
    first = await pushed(bed, {"requirements.txt": REQUIREMENTS}, "2026-11-22T09:30:00Z")
    await build(bed, first, "server", DIGEST)
    bed.github.tree_entry_limit = 3  # the trees API answers `truncated: true` past it
    second = await pushed(bed, {"server/app.py": "print(5)\n"}, "2026-11-22T10:30:00Z")
    (job,) = build_jobs_of(bed, second["after"])
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert not any(":in-" in arg for arg in args)  # not hashed: not tagged by its inputs
    run = build_check(bed, second["after"])
    assert run["status"] == "in_progress"
    assert "truncated" in run["output"]["summary"] and "`inputs` could not be hashed" in run["output"]["summary"]


async def test_no_file_matching_the_inputs_builds_every_time(bed: Bed) -> None:
    set_up(bed, CONFIG.replace('"requirements*.txt", "Dockerfile.server"', '"requirement.txt"'),
           {"dev/cronjob.yaml": CRONJOB})
    first = await pushed(bed, {"server/app.py": "print(6)\n"}, "2026-11-22T09:30:00Z")
    await build(bed, first, "server", DIGEST)
    second = await pushed(bed, {"server/app.py": "print(7)\n"}, "2026-11-22T10:30:00Z")
    assert len(build_jobs_of(bed, second["after"])) == 1
    assert "No file of this commit matches `inputs` (`requirement.txt`)" in \
        build_check(bed, second["after"])["output"]["summary"]


def test_inputs_records_are_kept_per_registry_and_per_branch_or_pull_request() -> None:
    digest = "0" * 64
    master = inputs_key(REPO, REGISTRY, "server", digest, ref="master")
    assert inputs_key(REPO, REGISTRY, "server", digest, ref="master", pr=1) != master  # even with one registry
    assert inputs_key(REPO, REGISTRY + "-pr", "server", digest, ref="master") != master
    assert inputs_key(REPO, REGISTRY, "server", digest, ref="dev") != master
    assert inputs_key(REPO, REGISTRY, "server", digest, pr=2) != inputs_key(REPO, REGISTRY, "server", digest, pr=1)


async def test_a_build_of_another_branch_is_never_reused_on_this_one(bed: Bed) -> None:
    """Whoever may push `dev` builds it, but must not put an image on `master`'s deploys: `dev`'s
    build, with the very inputs of master (its changes are elsewhere), is no stand-in for `master`'s."""
    set_up(bed, CONFIG.replace("branches: [master]", "branches: [master, dev]"), {"dev/cronjob.yaml": CRONJOB})
    base = bed.github.commit(REPO, "master", {"requirements.txt": REQUIREMENTS})
    bed.github.commit(REPO, "dev", {"README.md": "dev\n"}, parents=[base])
    dev = push_payload(bed.github, REPO, {"server/app.py": "print('evil')\n"}, branch="dev")
    await bed.deliver("push", dev)
    await bed.settle()
    await build(bed, dev, "server", DIGEST2)
    digest = inputs_hash({"requirements.txt": REQUIREMENTS, "Dockerfile.server": FILES["Dockerfile.server"]})
    assert await bed.deps.artifacts.list_keys(f"builds/{REPO}/inputs/ref/dev/") == \
        [inputs_key(REPO, REGISTRY, "server", digest, ref="dev")]  # dev's build, with master's inputs
    main = await pushed(bed, {"server/app.py": "print(10)\n"}, "2026-11-22T10:30:00Z")
    assert len(build_jobs_of(bed, main["after"])) == 1  # built from master's own files


def test_plan_push_shows_the_reuse_or_the_build(tmp_path: Path, s3: S3Server) -> None:
    data = payload("push")
    data.update(ref="refs/heads/master", after="1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b")
    data["commits"][0]["modified"] = ["server/app.py"]
    files = {"requirements.txt": REQUIREMENTS, "Dockerfile.server": FILES["Dockerfile.server"]}
    tree = {"sha": "f" * 40, "truncated": False, "tree": [
        {"path": path, "mode": "100644", "type": "blob", "sha": blob_sha(text.encode())} for path, text in files.items()
    ] + [{"path": "server", "mode": "040000", "type": "tree", "sha": "e" * 40}]}
    for name, content in (("push.json", data), ("tree.json", tree)):
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "flops.yml").write_text(CONFIG)
    args = ("plan", "push", str(tmp_path / "push.json"), "--config", str(tmp_path / "flops.yml"),
            "--tree", str(tmp_path / "tree.json"))
    bucket = "t-" + uuid.uuid4().hex[:12]
    env = {"MINIO_ENDPOINT": s3.endpoint, "MINIO_ACCESS_KEY": s3.access_key, "MINIO_SECRET_KEY": s3.secret_key,
           "MINIO_SECURE": "false", "FLOPS_BUCKET": bucket}
    built = run(*args, env=env)
    assert built.returncode == 0, built.stderr
    digest = inputs_hash(files)
    assert f"# server: build, tagged in-{digest[:12]} (no build with these inputs yet)" in built.stdout
    (job,) = [d for d in yaml.safe_load_all(built.stdout) if d]
    kaniko = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--destination={REGISTRY}/server:in-{digest[:12]}" in kaniko

    earlier = "0badc0de" + "0" * 32
    old_tag = f"master-20261101120000-{earlier[:7]}"
    record = {"repo": REPO, "sha": earlier, "image": "server", "ref": "master", "tag": old_tag,
              "destination": f"{REGISTRY}/server:{old_tag}", "digest": DIGEST, "job": "flops-build-x"}
    body = json.dumps(record).encode()
    s3.client().put_object(bucket, inputs_key(REPO, REGISTRY, "server", digest, ref="master"), io.BytesIO(body),
                           len(body))
    reused = run(*args, env=env)
    assert reused.returncode == 0, reused.stderr
    assert f"# server: reuse {DIGEST} (inputs unchanged since {earlier[:7]})" in reused.stdout
    assert "# 0 Kaniko Job(s)" in reused.stdout and "kind: Job" not in reused.stdout


async def test_pull_request_builds_reuse_only_pull_request_builds(bed: Bed) -> None:
    config = PR_CONFIG.replace("    dockerfile: Dockerfile.server\n",
                               "    dockerfile: Dockerfile.server\n    inputs: [Dockerfile.server]\n", 1)
    head = open_pr(bed, config=config)
    allow(bed)
    digest = inputs_hash({"Dockerfile.server": PR_FILES["Dockerfile.server"]})
    branch_build = {"repo": REPO, "sha": "c" * 40, "image": "server", "ref": "master", "tag": "master-x",
                    "destination": "harbor.example.com/flops/server:master-x", "digest": DIGEST, "job": "j"}
    await bed.deps.artifacts.put_json(inputs_key(REPO, "harbor.example.com/flops", "server", digest, ref="master"),
                                      branch_build)
    await say(bed, "/build server")  # the branch's build of these inputs is in another registry: built
    [job] = builds_by_image(bed).values()
    assert f"--destination=harbor.example.com/flops-pr/server:in-{digest[:12]}" in \
        job["spec"]["template"]["spec"]["containers"][0]["args"]
    bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=DIGEST2)
    await wait_for(lambda: len(done(bed, head)) == 1, what="the build report")

    second = push_to_pr(bed, fork=False)  # application code only
    [reply] = await say(bed, "/build server")
    assert f"- `/build server`: reused `server`: inputs unchanged since {head[:7]}.\n" in reply["body"]
    assert [j["metadata"]["annotations"]["flops.dev/sha"] for j in jobs_of(bed, "build")] == [head]  # no new Job
    [check] = done(bed, second)
    assert check["output"]["title"] == f"reused, inputs unchanged since {head[:7]}"
    reused = await bed.deps.artifacts.get_json(f"builds/{REPO}/{second}/server.json")
    assert reused["reference"] == f"harbor.example.com/flops-pr/server:pr-1-{head[:7]}@{DIGEST2}"


async def test_train_runs_at_once_with_images_reused_for_the_new_head(bed: Bed) -> None:
    config = PR_CONFIG
    for image in ("server", "client"):
        config = config.replace(f"    dockerfile: Dockerfile.{image}\n",
                                f"    dockerfile: Dockerfile.{image}\n    inputs: [Dockerfile.{image}]\n", 1)
    head = open_pr(bed, config=config)
    allow(bed)
    await say(bed, "/build")
    for job in builds_by_image(bed).values():
        bed.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=DIGEST)
    await wait_for(lambda: len(done(bed, head)) == 2, what="both build reports")

    second = push_to_pr(bed, fork=False)
    [reply] = await say(bed, "/train")
    assert "federated run `" in reply["body"] and "started" in reply["body"], reply["body"]
    assert {j["metadata"]["annotations"]["flops.dev/sha"] for j in jobs_of(bed, "build")} == {head}  # no new build
    [server] = jobs_of(bed, "federated-server")
    assert server["metadata"]["annotations"]["flops.dev/sha"] == second
    image = server["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"harbor.example.com/flops-pr/server:pr-1-{head[:7]}@{DIGEST}"


def test_inputs_take_the_paths_rules_and_limits() -> None:
    base = "registry: r.example.com/x\nimages:\n  - name: runtime\n    dockerfile: Dockerfile\n    inputs: "
    assert parse(base + '["requirements*.txt", "docker/**"]\n').images[0].inputs == ("requirements*.txt", "docker/**")
    for bad, message in (('["!requirements.txt"]', "negated patterns are not supported"),
                         ('["../secrets"]', "leaves the repository"),
                         ('["[z-a]"]', "is not a valid glob"),
                         (json.dumps(["f%d" % i for i in range(101)]), "at most 100"),
                         (json.dumps(["a" * 257]), "256")):
        with pytest.raises(ConfigError) as error:
            parse(base + bad + "\n")
        assert [p.path for p in error.value.problems][0].startswith("images[0].inputs"), bad
        assert message in str(error.value), (bad, str(error.value))


def test_the_hash_covers_the_matching_blobs_only() -> None:
    tree = {"truncated": False, "tree": [
        {"path": "requirements.txt", "type": "blob", "sha": "1" * 40},
        {"path": "requirements-dev.txt", "type": "blob", "sha": "2" * 40},
        {"path": "vendor/lib", "type": "commit", "sha": "3" * 40},  # a submodule: its pinned commit counts
        {"path": "src", "type": "tree", "sha": "4" * 40},
        {"path": "src/app.py", "type": "blob", "sha": "5" * 40}]}
    found = inputs_of(tree, ("requirements*.txt", "vendor/**"))
    assert isinstance(found, Inputs)
    assert [path for path, _ in found.files] == ["requirements-dev.txt", "requirements.txt", "vendor/lib"]
    assert found.tag == "in-" + found.digest[:12] and len(found.digest) == 64
    moved = {**tree, "tree": [*tree["tree"][:4], {"path": "src/app.py", "type": "blob", "sha": "6" * 40}]}
    assert inputs_of(moved, ("requirements*.txt", "vendor/**")) == found  # application code is not an input
    assert isinstance(inputs_of({**tree, "truncated": True}, ("requirements*.txt",)), Unhashed)
