"""The user flows the benchmarks drive, on the test bed, the way the tests drive them.

- push: a code repo with two images and one deploy target in a GitOps repo of another installation;
  a push to `master` builds both images (Kaniko Jobs), both succeed, the target is bumped.
- review: a repo with a regression gate; a baseline recorded on `master`, then a maintainer's
  approval of a PR starts the regression Job, whose metrics are judged and reported.
"""
from __future__ import annotations

import io
import json
import time
from typing import Any

import harness
from tests.conftest import Bed as Bot
from tests.conftest import wait_for
from tests.samples import TWO_IMAGES

REPO = harness.REPO
MAIN = "master"  # the recorded payloads' default branch
CONFIG_REPO = "acme-ops/gitops"
CONFIG_INSTALLATION = 78
DIGEST = "sha256:" + "ab" * 32
PUSH_CONFIG = TWO_IMAGES + """\
deploy:
  - name: dev
    repo: acme-ops/gitops
    branch: main
    file: dev/cronjob.yaml
    image: server
    field: .spec.jobTemplate.spec.template.spec.containers[0].image
"""
CRONJOB = """\
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
          containers:
            - name: server
              image: harbor.example.com/flops/server:master-20261101120000-0a0a0a0
"""
REVIEW_CONFIG = """\
registry: harbor.example.com/flops
regression:
  image: harbor.example.com/flops/regression-runtime:py311
  command: ["python", "train.py", "--epochs", "3"]
  resources: {cpu: "2", memory: 4Gi}
  timeout: 20m
  metrics:
    accuracy: {direction: higher, tolerance: 0.01}
    loss: {direction: lower, tolerance: 5%}
"""
PR = 2
MAINTAINER = "Codertocat"
CODE_FILES = {"Dockerfile.server": "FROM python:3.11\n", "server/app.py": "print(1)\n",
              "Dockerfile.client": "FROM python:3.11\n", "client/main.py": "print(2)\n"}


# --- push: two images, one deploy target ----------------------------------------------------------------

def set_up_push(bed: harness.Bed) -> None:
    gh = bed.github
    gh.add_installation(harness.INSTALLATION, "Codertocat", [REPO])
    gh.add_repo(REPO, default_branch=MAIN)
    gh.commit(REPO, MAIN, {**CODE_FILES, ".github/flops.yml": PUSH_CONFIG})
    gh.add_repo(CONFIG_REPO, default_branch="main")
    gh.commit(CONFIG_REPO, "main", {"dev/cronjob.yaml": CRONJOB}, message="initial manifests", author="ops-human")
    gh.add_installation(CONFIG_INSTALLATION, "acme-ops", [CONFIG_REPO])


def push_payload(bed: harness.Bed, files: dict[str, Any]) -> dict[str, Any]:
    """Commit `files` to master and build the push payload GitHub sends (tests/payloads/push.json)."""
    before = bed.github.branch_sha(REPO, MAIN)
    sha = bed.github.commit(REPO, MAIN, files)
    data = harness.payload("push")
    data.update(ref=f"refs/heads/{MAIN}", before=before, after=sha, deleted=False, created=False)
    data["installation"]["id"] = harness.INSTALLATION
    data["repository"]["default_branch"] = MAIN
    data["head_commit"].update(id=sha, timestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    data["commits"] = [{**data["commits"][0], "id": sha, "added": [], "removed": [], "modified": list(files)}]
    return data


def jobs_of(bot: Bot, sha: str, kind: str = "build") -> list[dict[str, Any]]:
    return [j for j in bot.kube.list("jobs", harness.NAMESPACE, labels={"flops.dev/kind": kind})
            if j["metadata"]["annotations"].get("flops.dev/sha") == sha]


def reported(bot: Bot, name: str) -> bool:
    job = bot.kube.get("jobs", harness.NAMESPACE, name)
    return job is not None and "flops.dev/reported" in job["metadata"]["annotations"]


async def finish_builds(bot: Bot, sha: str, timeout: float = 60) -> None:
    """Kaniko succeeds for every build Job of `sha`; wait until each is reported and the deploy ran."""
    names = [j["metadata"]["name"] for j in jobs_of(bot, sha)]
    for name in names:
        bot.kube.succeed_job(harness.NAMESPACE, name, message=DIGEST)
    await wait_for(lambda: all(reported(bot, n) for n in names), timeout, "build reports")
    await bot.settle()


async def push_end_to_end(bot: Bot, bed: harness.Bed, marker: int) -> str:
    """One push through to the deploy: delivery, both builds, their reports, the config-repo bump."""
    data = push_payload(bed, {"server/app.py": f"print({marker})\n", "client/main.py": f"print({marker})\n"})
    await bot.deliver("push", data)
    await bot.settle()
    await finish_builds(bot, data["after"])
    await wait_for(lambda: deploy_done(bot, data["after"]), 30, "deploy check")
    return str(data["after"])


def deploy_done(bot: Bot, sha: str) -> bool:
    runs = bot.github.check_runs_for(REPO, sha, "flops/deploy: dev")
    return bool(runs) and runs[-1]["status"] == "completed"


# --- review: approval -> regression Job -> verdict ------------------------------------------------------

def set_up_review(bed: harness.Bed) -> None:
    gh = bed.github
    gh.add_installation(harness.INSTALLATION, "Codertocat", [REPO])
    gh.add_repo(REPO, default_branch=MAIN)
    gh.set_permission(REPO, MAINTAINER, "admin")
    gh.commit(REPO, MAIN, {".github/flops.yml": REVIEW_CONFIG, "train.py": "print('train')\n"})


async def record_baseline(bot: Bot, bed: harness.Bed) -> str:
    """A default-branch push, its baseline regression Job, the workload's metrics."""
    data = push_payload(bed, {"train.py": "print('baseline')\n"})
    await bot.deliver("push", data)
    await bot.settle()
    [job] = jobs_of(bot, data["after"], "regression")
    await finish_regression(bot, job, {"accuracy": 0.91, "loss": 0.23})
    return str(data["after"])


def open_pr(bed: harness.Bed, files: dict[str, Any], branch: str = "feature") -> str:
    base = bed.github.branch_sha(REPO, MAIN)
    head = bed.github.commit(REPO, branch, files, parents=[base])
    bed.github.add_pull(REPO, PR, head, base_branch=MAIN, head_ref=branch, user="octocat")
    return head


async def approve(bot: Bot) -> str:
    """A maintainer approves the PR's head (tests/payloads/pull_request_review.submitted.json)."""
    data = harness.payload("pull_request_review.submitted")
    pull = bot.github.pulls[(REPO, PR)]
    data["pull_request"].update(number=PR, state=pull["state"])
    data["pull_request"]["head"].update(sha=pull["head"]["sha"], ref=pull["head"]["ref"])
    data["pull_request"]["base"].update(sha=pull["base"]["sha"], ref=MAIN)
    data["installation"]["id"] = harness.INSTALLATION
    data["review"].update(state="approved", commit_id=pull["head"]["sha"])
    data["review"]["user"]["login"] = MAINTAINER
    await bot.deliver("pull_request_review", data)
    await bot.settle()
    return str(pull["head"]["sha"])


async def finish_regression(bot: Bot, job: dict[str, Any], metrics: dict[str, float]) -> None:
    """The workload writes metrics.json under FLOPS_OUTPUT, the Job succeeds; wait for the report."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    body = json.dumps({"metrics": metrics, "links": {}}).encode()
    bot.s3.client().put_object(env["FLOPS_S3_BUCKET"], env["FLOPS_OUTPUT"] + "metrics.json", io.BytesIO(body),
                               len(body), content_type="application/json")
    bot.kube.succeed_job(harness.NAMESPACE, job["metadata"]["name"])
    await wait_for(lambda: reported(bot, job["metadata"]["name"]), 30, "regression report")
    await bot.settle()


async def review_end_to_end(bot: Bot, head: str) -> None:
    """Approval -> the regression Job of `head` -> metrics -> `flops/regression` and the PR comment."""
    await approve(bot)
    [job] = [j for j in jobs_of(bot, head, "regression") if "flops.dev/reported" not in j["metadata"]["annotations"]]
    await finish_regression(bot, job, {"accuracy": 0.915, "loss": 0.229})
