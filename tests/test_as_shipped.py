"""The product as users run it: `python -m bot serve` as its own process, with exactly the
environment the README documents (every defaulted variable left unset, `LOG_LEVEL` included),
against the test bed's GitHub and Kubernetes emulators and the real S3 server, over real HTTP.

Each main flow runs once, and each test asserts what a user sees on GitHub (check runs, comments,
the config repo's commits). Every line the process writes must be one JSON object, and no flow may
log an error: that is how a crash in a log call (issue 14) or anywhere else shows up here.
"""
from __future__ import annotations

import asyncio
import copy
import io
import json
import os
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests import conventions, dashboard, markdown
from tests.conftest import APP_ID, INSTALLATION, NAMESPACE, SECRET, payload, push_payload, sign, wait_for
from tests.emulators.github import GitHubEmulator, Symlink, make_app_key
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server, free_port
from tests.test_junit import PYTEST
from tests.test_masking import AUTH, CREDENTIALS, DOCKERCONFIG, JOB_KEY_ID, JOB_SECRET, env_dump

pytestmark = pytest.mark.asyncio(loop_scope="module")

CONFIG_REPO = "acme/fl-config"
REGISTRY = "harbor.example.com/flops"
MAINTAINER = "ada-maintainer"
FIELD = ".spec.jobTemplate.spec.template.spec.containers[0].image"
CRONJOB = f"""\
apiVersion: batch/v1
kind: CronJob
metadata:
  name: fl-server
spec:
  schedule: "*/5 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          imagePullSecrets: [{{name: harbor}}]
          containers:
            - name: server
              image: {REGISTRY}/server:20261101-120000
"""
IMAGES = """\
registry: harbor.example.com/flops
pr_registry: harbor.example.com/flops-pr
images:
  - name: server
    dockerfile: Dockerfile.server
  - name: client
    dockerfile: Dockerfile.client
"""
DEPLOY = f"""\
deploy:
  - name: dev
    repo: {CONFIG_REPO}
    branch: main
    file: FILE
    image: server
    field: {FIELD}
"""
REGRESSION = """\
regression:
  image: harbor.example.com/flops/runtime:py311
  command: ["python", "-m", "regression"]
  metrics:
    accuracy: {direction: higher, tolerance: 0.01}
"""
FEDERATED = """\
federated:
  server: {image: server, port: 8080}
  client: {image: client}
  clients: 2
  rounds: 2
"""
TESTS = f"""\
tests:
  - name: unit
    image: {REGISTRY}/runtime:py311
    command: ["pytest", "-q", "--junitxml=/flops/results/junit.xml"]
"""
CODE = {"Dockerfile.server": "FROM python:3.11\n", "Dockerfile.client": "FROM python:3.11\n",
        "fl/server.py": "print('server')\n", "fl/client.py": "print('client')\n"}


@dataclass
class Shipped:
    """The bot process and the servers it talks to."""

    github: GitHubEmulator
    kube: KubeEmulator
    s3: S3Server
    url: str
    log: Path
    process: subprocess.Popen[bytes]

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def readme_environment(tmp: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server, port: int) -> dict[str, str]:
    """README, 'Configuration (environment)': the required variables and the ones this machine
    needs (a kubeconfig outside a cluster, plain-HTTP S3, a free port); every default unset."""
    key = tmp / "app.pem"
    key.write_bytes(make_app_key()[0])
    kube.write_kubeconfig(tmp / "kubeconfig")
    return {"PATH": os.environ["PATH"], "HOME": str(tmp),
            "GITHUB_APP_ID": str(APP_ID), "GITHUB_PRIVATE_KEY_PATH": str(key), "GITHUB_WEBHOOK_SECRET": SECRET,
            "GITHUB_API_URL": github.url, "KUBECONFIG": str(tmp / "kubeconfig"),
            "MINIO_ENDPOINT": s3.endpoint, "MINIO_ACCESS_KEY": s3.access_key, "MINIO_SECRET_KEY": s3.secret_key,
            "MINIO_SECURE": "false", "PORT": str(port)}


@asynccontextmanager
async def started(tmp: Path, env: dict[str, str], port: int) -> AsyncIterator[subprocess.Popen[bytes]]:
    """`python -m bot serve` with exactly `env`, its output appended to `tmp/bot.log`: yielded once
    /readyz answers 200; on the way out stopped as Kubernetes stops it (SIGTERM, then its drain)."""
    log = tmp / "bot.log"
    with open(log, "ab") as sink:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp, stdin=subprocess.DEVNULL,
                                   stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        async with aiohttp.ClientSession() as session:
            async def ready() -> bool:
                assert process.poll() is None, f"the bot exited:\n{log.read_text()}"
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except aiohttp.ClientError:
                    return False

            await wait_for(ready, timeout=30, what="python -m bot serve ready")
        yield process
    finally:
        process.terminate()
        # in a thread: the emulators share this loop and must answer what the bot finishes while it drains
        await asyncio.to_thread(process.wait, 40)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shipped(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> AsyncIterator[Shipped]:
    tmp = tmp_path_factory.mktemp("shipped")
    github = GitHubEmulator(app_id=APP_ID, public_key_pem=make_app_key()[1])
    await github.start()
    kube = KubeEmulator()
    await kube.start()
    port = free_port()
    try:
        async with started(tmp, readme_environment(tmp, github, kube, s3, port), port) as process:
            yield Shipped(github, kube, s3, f"http://127.0.0.1:{port}", tmp / "bot.log", process)
    finally:
        await kube.stop()
        await github.stop()


@pytest.fixture(autouse=True)
def logs_stay_clean(shipped: Shipped) -> Iterator[None]:
    """What the process wrote during the test: one JSON object per line, no error, no secret."""
    start = len(shipped.log_lines())
    yield
    lines = shipped.log_lines()[start:]
    entries = [json.loads(line) for line in lines]  # a line that is not JSON fails here
    assert all(isinstance(entry, dict) for entry in entries)
    errors = [entry for entry in entries if entry["level"] in ("error", "critical")]
    assert not errors, errors
    assert not [line for line in lines if SECRET in line or "BEGIN RSA PRIVATE KEY" in line]


async def deliver(bot: Shipped, event: str, data: dict[str, Any]) -> None:
    body = json.dumps(data).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body), "User-Agent": "GitHub-Hookshot/e2e"}
    async with aiohttp.ClientSession() as session, session.post(bot.url + "/webhook", data=body,
                                                                headers=headers) as response:
        assert response.status == 202, await response.text()


def code_repo(bot: Shipped, repo: str, config: str) -> str:
    """A code repository on `master` with its flops.yml, covered by the App's installation."""
    bot.github.add_repo(repo, default_branch="master")
    sha = bot.github.commit(repo, "master", {**CODE, ".github/flops.yml": config})
    repos = bot.github.installations[INSTALLATION].repos if INSTALLATION in bot.github.installations else []
    bot.github.add_installation(INSTALLATION, "acme", [*repos, repo, CONFIG_REPO])
    bot.github.set_permission(repo, MAINTAINER, "write")
    return sha


def config_repo(bot: Shipped, file: str, source: str) -> None:
    """The config repository with `file`, consenting to deploys of `source`'s master builds to it."""
    bot.github.add_repo(CONFIG_REPO, default_branch="main")
    consent = f"version: 1\nallow:\n  - {{repo: {source}, branches: [master], paths: [\"{file}\"]}}\n"
    bot.github.commit(CONFIG_REPO, "main", {file: CRONJOB, ".github/flops-deploy.yml": consent},
                      message="manifests", author="ops-human")


def jobs_of(bot: Shipped, kind: str, sha: str) -> list[dict[str, Any]]:
    return [job for job in bot.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": kind})
            if job["metadata"]["annotations"].get("flops.dev/sha") == sha]


def digest(image: str, sha: str) -> str:
    return "sha256:" + (image + sha).encode().hex()[:64].ljust(64, "0")


async def build(bot: Shipped, sha: str, images: tuple[str, ...] = ("server", "client")) -> dict[str, dict[str, Any]]:
    """Wait for the Kaniko Jobs of `sha`, then finish them as Kaniko does (digest as termination message)."""
    found = await wait_for(lambda: (jobs := {j["metadata"]["annotations"]["flops.dev/image"]: j
                                             for j in jobs_of(bot, "build", sha)}) and set(jobs) == set(images) and jobs,
                           timeout=20, what=f"build Jobs of {sha[:7]}")
    for image, job in found.items():
        bot.kube.succeed_job(NAMESPACE, job["metadata"]["name"], message=digest(image, sha))
    for image in images:
        await completed(bot, found[image]["metadata"]["annotations"]["flops.dev/repo"], sha, f"flops/build: {image}")
    return found


async def completed(bot: Shipped, repo: str, sha: str, name: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        runs = [r for r in bot.github.check_runs_for(repo, sha, name) if r["status"] == "completed"]
        return runs[-1] if runs else None
    return await wait_for(done, timeout=20, what=f"{name} completed on {sha[:7]}")  # type: ignore[no-any-return]


def env_of(job: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}


def write_output(bot: Shipped, job: dict[str, Any], document: dict[str, Any]) -> None:
    """What the workload writes: `<FLOPS_OUTPUT>metrics.json` in the runs bucket (the default, `flops-runs`)."""
    env = env_of(job)
    body = json.dumps(document).encode()
    bot.s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(body),
                               len(body))


async def finish_run(bot: Shipped, kind: str, sha: str, document: dict[str, Any]) -> dict[str, Any]:
    [job] = await wait_for(lambda: jobs_of(bot, kind, sha), timeout=20, what=f"{kind} Job of {sha[:7]}")
    await wait_for(lambda: "flops.dev/check-run-id" in bot.kube.get("jobs", NAMESPACE, job["metadata"]["name"])
                   ["metadata"]["annotations"], timeout=20, what="its check run")
    write_output(bot, job, document)
    bot.kube.succeed_job(NAMESPACE, job["metadata"]["name"])
    return job


def pr_payload(bot: Shipped, name: str, repo: str, number: int) -> dict[str, Any]:
    """The recorded payload, its pull request the emulated one (GitHub sends the same object)."""
    data = payload(name)
    data["pull_request"] = copy.deepcopy(bot.github.pulls[(repo, number)])
    data["repository"].update(full_name=repo, default_branch="master")
    data["installation"]["id"] = INSTALLATION
    return data


def comment_payload(bot: Shipped, repo: str, number: int, body: str, *, on_pr: bool = True) -> dict[str, Any]:
    data = payload("issue_comment.created")
    written = bot.github.add_comment(repo, number, body, user=MAINTAINER)
    data["issue"]["number"] = number
    if on_pr:
        data["issue"]["pull_request"] = {"url": f"{bot.github.url}/repos/{repo}/pulls/{number}"}
    else:
        data["issue"].pop("pull_request", None)
    data["comment"].update(id=written["id"], body=body)
    data["comment"]["user"].update(login=MAINTAINER, type="User")
    data["repository"].update(full_name=repo, default_branch="master")
    data["installation"]["id"] = INSTALLATION
    return data


def open_pr(bot: Shipped, repo: str, number: int) -> str:
    base = bot.github.branch_sha(repo, "master")
    head = bot.github.commit(repo, "feature", {"fl/server.py": "print('faster')\n"}, parents=[base])
    bot.github.add_pull(repo, number, head, base_branch="master", head_ref="feature")
    return head


async def approve(bot: Shipped, repo: str, number: int, head: str) -> None:
    """A maintainer approves the PR's head: what runs the regression gate."""
    review = pr_payload(bot, "pull_request_review.submitted", repo, number)
    review["review"].update(state="approved", commit_id=head)
    review["review"]["user"]["login"] = MAINTAINER
    await deliver(bot, "pull_request_review", review)


def deployed(bot: Shipped, file: str) -> str:
    return (bot.github.file_at(CONFIG_REPO, "main", file) or b"").decode()


async def test_push_builds_in_kaniko_reports_and_commits_the_image_to_the_config_repo(shipped: Shipped) -> None:
    repo, file = "acme/fl-push", "dev/push.yaml"
    config_repo(shipped, file, repo)
    code_repo(shipped, repo, IMAGES + DEPLOY.replace("FILE", file) + REGRESSION)
    data = push_payload(shipped.github, repo, {"fl/server.py": "print('v2')\n"})
    sha = data["after"]
    await deliver(shipped, "push", data)

    jobs = await build(shipped, sha)
    for image, job in jobs.items():
        check = await completed(shipped, repo, sha, f"flops/build: {image}")
        assert check["conclusion"] == "success" and digest(image, sha) in check["output"]["summary"]
        assert job["spec"]["template"]["spec"]["containers"][0]["image"].startswith("ghcr.io/osscontainertools/kaniko")
    deploy = await completed(shipped, repo, sha, "flops/deploy: dev")
    assert deploy["conclusion"] == "success", deploy["output"]
    tag = jobs["server"]["metadata"]["annotations"]["flops.dev/tag"]
    assert f"image: {REGISTRY}/server:{tag}@{digest('server', sha)}" in deployed(shipped, file)

    await finish_run(shipped, "regression", sha, {"metrics": {"accuracy": 0.91}})  # the default branch's baseline
    baseline = await completed(shipped, repo, sha, "flops/regression")
    assert (baseline["conclusion"], baseline["output"]["title"]) == ("success", "Baseline recorded")


async def test_a_failed_build_shows_why_and_the_end_of_its_log(shipped: Shipped) -> None:
    repo = "acme/fl-broken"
    code_repo(shipped, repo, IMAGES)
    data = push_payload(shipped.github, repo, {"Dockerfile.server": "FROM python:3.11\nCOPY missing /\n"})
    sha = data["after"]
    await deliver(shipped, "push", data)
    jobs = await wait_for(lambda: {j["metadata"]["annotations"]["flops.dev/image"]: j
                                   for j in jobs_of(shipped, "build", sha)}, timeout=20, what="build Jobs")
    log = "INFO[0001] Retrieving image manifest python:3.11\nerror building image: COPY failed: missing: no such file\n"
    shipped.kube.fail_job(NAMESPACE, jobs["server"]["metadata"]["name"], logs=log)
    check = await completed(shipped, repo, sha, "flops/build: server")
    assert check["conclusion"] == "failure"
    assert "exited with code 1" in check["output"]["title"]
    assert "COPY failed: missing: no such file" in check["output"]["text"]


async def test_an_approval_runs_the_regression_gate_and_posts_the_verdict_and_comment(shipped: Shipped) -> None:
    repo, number = "acme/fl-review", 5
    base = code_repo(shipped, repo, IMAGES + REGRESSION)
    await deliver(shipped, "push", push_payload(shipped.github, repo, {"README.md": "# model\n"}))
    base = shipped.github.branch_sha(repo, "master")
    await finish_run(shipped, "regression", base, {"metrics": {"accuracy": 0.90}})
    assert (await completed(shipped, repo, base, "flops/regression"))["output"]["title"] == "Baseline recorded"

    head = open_pr(shipped, repo, number)
    await approve(shipped, repo, number, head)
    await finish_run(shipped, "regression", head, {"metrics": {"accuracy": 0.905}})

    verdict = await completed(shipped, repo, head, "flops/regression")
    assert (verdict["conclusion"], verdict["output"]["title"]) == ("success", "0 regressions / 1 metric")
    assert f"Baseline: `{base[:7]}` (the merge-base)" in verdict["output"]["summary"]
    sticky = await wait_for(lambda: [c for c in shipped.github.comments_on(repo, number)
                                     if "<!-- flops:regression -->" in c["body"]], timeout=20, what="sticky comment")
    assert len(sticky) == 1 and "**success**" in sticky[0]["body"] and "0.905" in sticky[0]["body"]


async def test_jobs_write_the_runs_bucket_and_a_rewritten_baseline_run_moves_no_gate(shipped: Shipped) -> None:
    """Issue 15, finding 2: builds get their source from a presigned URL and no S3 key; workloads write
    `flops-runs` (FLOPS_RUNS_BUCKET's default); the baseline is the bot's copy, not the run's file."""
    repo, number = "acme/fl-forged-baseline", 8
    code_repo(shipped, repo, IMAGES + REGRESSION)
    data = push_payload(shipped.github, repo, {"train.py": "print('base')\n"})
    await deliver(shipped, "push", data)
    base = data["after"]
    for job in (await build(shipped, base)).values():
        pod = job["spec"]["template"]["spec"]
        assert not [e for c in pod["containers"] for e in c.get("env", []) if e["name"].startswith("AWS_")]
        [fetch] = pod["initContainers"]
        with urllib.request.urlopen(fetch["env"][0]["value"]) as response:  # what the init container unpacks
            assert response.status == 200 and response.read()
    baseline = await finish_run(shipped, "regression", base, {"metrics": {"accuracy": 0.90}})
    assert env_of(baseline)["FLOPS_S3_BUCKET"] == "flops-runs"
    assert (await completed(shipped, repo, base, "flops/regression"))["output"]["title"] == "Baseline recorded"
    write_output(shipped, baseline, {"metrics": {"accuracy": 0.1}})  # a later Job rewrites the finished run

    head = open_pr(shipped, repo, number)
    await approve(shipped, repo, number, head)
    await finish_run(shipped, "regression", head, {"metrics": {"accuracy": 0.5}})
    verdict = await completed(shipped, repo, head, "flops/regression")
    assert verdict["conclusion"] == "failure" and "| accuracy | higher | 0.9 | 0.5 |" in verdict["output"]["summary"]


async def test_train_builds_the_images_then_runs_server_service_and_clients(shipped: Shipped) -> None:
    repo, number = "acme/fl-train", 6
    code_repo(shipped, repo, IMAGES + FEDERATED)
    head = open_pr(shipped, repo, number)
    await deliver(shipped, "issue_comment", comment_payload(shipped, repo, number, "/train rounds=2 clients=2"))
    await build(shipped, head)

    rounds = [{"round": 1, "metrics": {"accuracy": 0.61}}, {"round": 2, "metrics": {"accuracy": 0.84}}]
    server = await finish_run(shipped, "federated-server", head, {"rounds": rounds, "metrics": {"accuracy": 0.84}})
    run = server["metadata"]["name"]
    clients = [j for j in shipped.kube.list("jobs", NAMESPACE, labels={"flops.dev/run": run})
               if j["metadata"]["labels"]["flops.dev/kind"] == "federated-client"]
    assert len(clients) == 2 and all(env_of(c)["FL_SERVER_ADDRESS"] == f"{run}:8080" for c in clients)
    for client in clients:
        shipped.kube.succeed_job(NAMESPACE, client["metadata"]["name"])
    check = await completed(shipped, repo, head, "flops/federated")
    assert check["conclusion"] == "success" and check["output"]["title"].startswith("2 rounds, 2 clients")
    await wait_for(lambda: not [s for s in shipped.kube.list("services", NAMESPACE) if s["metadata"]["name"] == run],
                   timeout=20, what="the run's Service removed")
    assert ("POST", f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/networkpolicies") in shipped.kube.requests
    await wait_for(lambda: shipped.kube.get("networkpolicies", NAMESPACE, run) is None, timeout=20,
                   what="the run's NetworkPolicy removed")
    assert any("flops/federated" in c["body"] for c in shipped.github.comments_on(repo, number))


async def test_redeploy_puts_an_older_build_back_on_the_config_repo(shipped: Shipped) -> None:
    repo, file = "acme/fl-rollback", "dev/rollback.yaml"
    config_repo(shipped, file, repo)
    code_repo(shipped, repo, IMAGES + DEPLOY.replace("FILE", file))
    shas = []
    for version, when in (("v1", "2026-11-22T09:30:00Z"), ("v2", "2026-11-22T10:30:00Z")):
        data = push_payload(shipped.github, repo, {"fl/server.py": f"print('{version}')\n"}, when=when)
        await deliver(shipped, "push", data)
        await build(shipped, data["after"])
        assert (await completed(shipped, repo, data["after"], "flops/deploy: dev"))["conclusion"] == "success"
        shas.append(data["after"])
    assert digest("server", shas[1]) in deployed(shipped, file)

    await deliver(shipped, "issue_comment", comment_payload(shipped, repo, 1, f"/redeploy dev {shas[0][:7]}",
                                                            on_pr=False))
    await wait_for(lambda: digest("server", shas[0]) in deployed(shipped, file), timeout=20, what="rollback commit")

    def rollback_check() -> dict[str, Any] | None:  # posted after the commit: wait for it, do not race it
        runs = [r for r in shipped.github.check_runs_for(repo, shas[0], "flops/deploy: dev")
                if r["status"] == "completed" and f"@{MAINTAINER}" in r["output"]["summary"]]
        return runs[-1] if runs else None

    assert (await wait_for(rollback_check, timeout=20, what="the /redeploy check"))["conclusion"] == "success"


async def test_an_image_whose_inputs_are_unchanged_is_reused_with_no_job_and_deployed(shipped: Shipped) -> None:
    repo, file = "acme/fl-inputs", "dev/inputs.yaml"
    config_repo(shipped, file, repo)
    inputs = '    inputs: ["Dockerfile.server", "requirements*.txt"]\n'
    config = IMAGES.replace("    dockerfile: Dockerfile.server\n", "    dockerfile: Dockerfile.server\n" + inputs)
    code_repo(shipped, repo, config + DEPLOY.replace("FILE", file))
    shas = []
    both = ("server", "client")
    for files, when, images in (({"fl/server.py": "print('v1')\n"}, "2026-11-22T09:30:00Z", both),
                                ({"Dockerfile.server": "FROM python:3.12\n"}, "2026-11-22T10:30:00Z", both),
                                ({"Dockerfile.server": CODE["Dockerfile.server"], "fl/client.py": "print(3)\n"},
                                 "2026-11-22T11:30:00Z", ("client",))):
        data = push_payload(shipped.github, repo, files, when=when)
        await deliver(shipped, "push", data)
        await build(shipped, data["after"], images)  # the third builds only the client
        shas.append(data["after"])
    reused = await completed(shipped, repo, shas[2], "flops/build: server")
    assert (reused["conclusion"], reused["output"]["title"]) == \
        ("success", f"reused, inputs unchanged since {shas[0][:7]}")  # the Dockerfile is back to the first one
    assert [j["metadata"]["annotations"]["flops.dev/image"] for j in jobs_of(shipped, "build", shas[2])] == ["client"]
    assert (await completed(shipped, repo, shas[2], "flops/deploy: dev"))["conclusion"] == "success"
    [first] = [j for j in jobs_of(shipped, "build", shas[0])
               if j["metadata"]["annotations"]["flops.dev/image"] == "server"]
    tag = first["metadata"]["annotations"]["flops.dev/tag"]
    assert f"image: {REGISTRY}/server:{tag}@{digest('server', shas[0])}" in deployed(shipped, file)  # bumped back


async def test_hostile_globs_links_and_hidden_commands_change_nothing_users_rely_on(shipped: Shipped) -> None:
    """Issue #16, findings 4, 9, 10: a glob that backtracked for days still picks the right image at
    once, a symlink out of the tree is left out of the source and named on the build check, and a
    command hidden in an HTML comment opened mid-line runs nothing."""
    repo, number = "acme/fl-hostile", 8
    bait = "a*a*a*a*a*a*a*a*b"
    config = (IMAGES.replace("Dockerfile.server\n", f"Dockerfile.server\n    paths: [\"{bait}\", fl/**]\n")
              .replace("Dockerfile.client\n", f"Dockerfile.client\n    paths: [\"{bait}\"]\n"))
    code_repo(shipped, repo, config)
    data = push_payload(shipped.github, repo, {"a" * 250: "x\n", "fl/server.py": "print('v3')\n",
                                               "fl/passwd": Symlink(b"/etc/passwd")})
    await deliver(shipped, "push", data)
    await build(shipped, data["after"], images=("server",))  # `fl/**` matched; the bait matched nothing
    check = await completed(shipped, repo, data["after"], "flops/build: server")
    assert check["conclusion"] == "success"
    assert "1 symlink(s) left out of the source" in check["output"]["summary"]
    assert "`fl/passwd`" in check["output"]["summary"]

    open_pr(shipped, repo, number)
    await deliver(shipped, "issue_comment", comment_payload(shipped, repo, number, "Thanks! <!-- later\n/build\n-->"))
    await deliver(shipped, "issue_comment", comment_payload(shipped, repo, number, "/help"))  # same PR: in order
    replies = await wait_for(lambda: [c for c in shipped.github.comments_on(repo, number)
                                      if c["user"]["type"] == "Bot"], timeout=20, what="the /help reply")
    assert len(replies) == 1 and "/regression" in replies[0]["body"]
    head = shipped.github.pulls[(repo, number)]["head"]["sha"]
    assert jobs_of(shipped, "build", head) == []


async def test_a_build_printing_its_environment_and_registry_auth_publishes_no_credential(shipped: Shipped) -> None:
    """Issue 16, finding 6: the tail is masked with the Jobs' Secrets, read by name from the cluster."""
    shipped.kube.put_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "flops-s3"},
                             "stringData": {"AWS_ACCESS_KEY_ID": JOB_KEY_ID, "AWS_SECRET_ACCESS_KEY": JOB_SECRET}})
    shipped.kube.put_object({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                             "metadata": {"name": "registry-credentials"},
                             "stringData": {".dockerconfigjson": DOCKERCONFIG}})
    repo = "acme/fl-leaky"
    code_repo(shipped, repo, IMAGES)
    data = push_payload(shipped.github, repo, {"Dockerfile.server": "FROM python:3.11\nRUN env && false\n"})
    await deliver(shipped, "push", data)
    jobs = await wait_for(lambda: {j["metadata"]["annotations"]["flops.dev/image"]: j
                                   for j in jobs_of(shipped, "build", data["after"])}, timeout=20, what="build Jobs")
    shipped.kube.fail_job(NAMESPACE, jobs["server"]["metadata"]["name"], logs=env_dump(f"auth {AUTH}", s3=False))
    check = await completed(shipped, repo, data["after"], "flops/build: server")
    assert "RuntimeError: boom" in check["output"]["text"]
    for credential in CREDENTIALS:
        assert credential not in json.dumps(check["output"]), credential


async def test_a_workload_faking_an_approval_in_metrics_json_shows_it_as_text(shipped: Shipped) -> None:
    """Issue 16, finding 5: metric names, link keys and URLs from metrics.json never become markdown."""
    repo = "acme/fl-fake-approval"
    code_repo(shipped, repo, IMAGES + REGRESSION)
    data = push_payload(shipped.github, repo, {"README.md": "# model\n"})
    await deliver(shipped, "push", data)
    await finish_run(shipped, "regression", data["after"], {
        "metrics": {"accuracy": 0.9, "**Approved by @acme/security**": 1},
        "links": {"](http://evil)": "https://ok.example/x", "docs": "javascript:alert(1)"}})
    summary = (await completed(shipped, repo, data["after"], "flops/regression"))["output"]["summary"]
    assert "<strong>Approved" not in markdown.html(summary) and "@acme" not in markdown.text(summary)
    assert markdown.links(summary) == {"](http://evil)": "https://ok.example/x"}


def fork_queued_ahead(shipped: Shipped, repo: str) -> tuple[str, str, str, str]:
    """PR #9's merge group built on fork PR #8, queued ahead of it and never approved: (base, the fork's
    head, the fork's queue ref name, the group's head)."""
    base = code_repo(shipped, repo, IMAGES + REGRESSION)
    fork_head = shipped.github.commit(repo, "fork-feature", {"fl/server.py": "print('mine')\n"}, parents=[base])
    shipped.github.add_pull(repo, 8, fork_head, base_branch="master", head_ref="fork-feature",
                            head_repo=f"mallory/{repo.split('/')[1]}", user="mallory")
    own_head = open_pr(shipped, repo, 9)
    queue = "gh-readonly-queue/master"
    ahead = shipped.github.commit(repo, f"{queue}/pr-8-{fork_head}", {"q": "8\n"}, parents=[base, fork_head])
    group = shipped.github.commit(repo, f"{queue}/pr-9-{own_head}", {"q": "9\n"}, parents=[ahead, own_head])
    return base, ahead, f"{queue}/pr-8-{fork_head}", group


async def check_merge_group(shipped: Shipped, repo: str, base: str, group: str) -> dict[str, Any]:
    """GitHub's `merge_group checks_requested` for `group`, and the `flops/regression` check it ends with."""
    data = payload("merge_group.checks_requested")
    head_ref = next(name for name, sha in shipped.github.repos[repo].branches.items() if sha == group)
    data["merge_group"].update(head_sha=group, base_sha=base, base_ref="refs/heads/master",
                               head_ref=f"refs/heads/{head_ref}")
    data["merge_group"]["head_commit"]["id"] = group
    data["repository"].update(full_name=repo, default_branch="master")
    data["installation"]["id"] = INSTALLATION
    await deliver(shipped, "merge_group", data)
    return await completed(shipped, repo, group, "flops/regression")


async def test_a_merge_group_holding_an_unapproved_fork_pr_runs_nothing(shipped: Shipped) -> None:
    """Issue 15: the queue's group of PR #9 contains fork PR #8, queued ahead of it and never approved."""
    repo = "acme/fl-queue"
    base, _, _, group = fork_queued_ahead(shipped, repo)
    check = await check_merge_group(shipped, repo, base, group)
    assert (check["conclusion"], check["output"]["title"]) == ("failure", "Not run: #8 lacks approval")
    assert jobs_of(shipped, "regression", group) == []


async def test_a_stale_merge_group_built_on_a_dequeued_fork_pr_runs_nothing(shipped: Shipped) -> None:
    """Fork PR #8 left the queue (its ref is gone); the group GitHub built for #9 on top of it is checked."""
    repo = "acme/fl-stale-queue"
    base, ahead, fork_ref, group = fork_queued_ahead(shipped, repo)
    del shipped.github.repos[repo].branches[fork_ref]  # #8 dequeued
    check = await check_merge_group(shipped, repo, base, group)
    assert (check["conclusion"], check["output"]["title"]) == ("failure", "Not run: commits of no queued pull request")
    assert f"`{ahead[:7]}`" in check["output"]["summary"] and jobs_of(shipped, "regression", group) == []


async def test_a_pull_request_runs_its_tests_and_gets_the_junit_report_on_its_check(shipped: Shipped) -> None:
    repo, number = "acme/fl-tests", 9
    code_repo(shipped, repo, IMAGES + TESTS)
    head = open_pr(shipped, repo, number)
    await deliver(shipped, "pull_request", pr_payload(shipped, "pull_request.opened", repo, number))
    [job] = await wait_for(lambda: jobs_of(shipped, "test", head), timeout=20, what="the test Job")
    await wait_for(lambda: "flops.dev/check-run-id" in shipped.kube.get("jobs", NAMESPACE, job["metadata"]["name"])
                   ["metadata"]["annotations"], timeout=20, what="its check run")
    # what the Job's sidecar uploads once pytest exited: $FLOPS_RESULTS -> <FLOPS_OUTPUT>results/
    results = job["metadata"]["annotations"]["flops.dev/output"] + "results/junit.xml"
    shipped.s3.client().put_object("flops-runs", results, io.BytesIO(PYTEST), len(PYTEST))
    shipped.kube.fail_job(NAMESPACE, job["metadata"]["name"], exit_code=1, container="test")
    run = await completed(shipped, repo, head, "flops/test: unit")
    assert (run["conclusion"], run["output"]["title"]) == ("failure", "2 failed, 2 passed, 1 skipped in 3m12s")
    assert run["output"]["annotations_count"] == 2 and "test\\_converges" in run["output"]["summary"]


async def test_the_grafana_dashboard_queries_only_metrics_the_running_bot_exports(shipped: Shipped) -> None:
    """Issue 25 part 4: every PromQL expression of deploy/components/grafana-dashboard parses and names
    a series this process serves on /metrics, after the flows above ran (a renamed metric fails here)."""
    async with aiohttp.ClientSession() as session, session.get(shipped.url + "/metrics") as response:
        assert response.status == 200
        page = await response.text()
    exported = dashboard.exported(page)
    for expr in dashboard.expressions(dashboard.dashboard()):
        names = dashboard.metric_names(expr)
        assert names and names <= exported, f"{expr} uses {sorted(names - exported)}, not on /metrics"
    # the flows above moved what the dashboard shows
    assert 'flops_jobs_finished_total{kind="build",result="success"}' in page
    assert 'flops_run_duration_seconds_count{kind="regression"}' in page
    assert 'flops_regression_verdicts_total{verdict=' in page
    assert "flops_github_rate_limit_remaining " in page


async def test_every_job_and_service_the_process_created_keeps_the_kubernetes_conventions(shipped: Shipped) -> None:
    """Issue 25 part 3, on what the flows above made: recommended labels with the installed version,
    the default container, and the Pod Security level deploy/ gives the namespace."""
    created = shipped.kube.list("jobs", NAMESPACE)
    assert {job["metadata"]["labels"]["flops.dev/kind"] for job in created} >= {
        "build", "regression", "federated-server", "federated-client", "test"}
    for job in created:
        conventions.assert_bot_job(job)


async def test_a_regression_under_a_kueue_queue_waits_queued_until_admitted(shipped: Shipped) -> None:
    """Issue #25: `queue:` in the default branch's flops.yml; Kueue (tests/emulators/kueue.py) admits the Job."""
    from tests.emulators.kueue import QUEUE_LABEL, Kueue

    repo, number = "acme/fl-kueue", 9
    code_repo(shipped, repo, IMAGES + REGRESSION + "queue: {regression: gpu}\n")
    head = open_pr(shipped, repo, number)
    await approve(shipped, repo, number, head)
    [job] = await wait_for(lambda: jobs_of(shipped, "regression", head), timeout=20, what="the regression Job")
    assert job["spec"]["suspend"] is True and job["metadata"]["labels"][QUEUE_LABEL] == "gpu"
    check = await wait_for(lambda: shipped.github.check_runs_for(repo, head, "flops/regression"), timeout=20,
                           what="its check run")
    assert check[-1]["status"] == "queued" and "LocalQueue `gpu`" in check[-1]["output"]["title"]
    Kueue(shipped.kube).admit(job["metadata"]["name"])
    await wait_for(lambda: shipped.github.check_runs_for(repo, head, "flops/regression")[-1]["status"] == "in_progress",
                   timeout=20, what="admitted")
    shipped.kube.start_job(NAMESPACE, job["metadata"]["name"])
    await finish_run(shipped, "regression", head, {"metrics": {"accuracy": 0.9}})
    verdict = await completed(shipped, repo, head, "flops/regression")
    assert verdict["conclusion"] == "neutral" and verdict["output"]["title"] == "No baseline yet"
    await wait_for(lambda: [c for c in shipped.github.comments_on(repo, number) if "<!-- flops:regression -->"
                            in c["body"]], timeout=20, what="the sticky comment (the report's last step)")
