"""A workload that prints its whole environment publishes no credential (issue 16, finding 6).

The Jobs' Secrets live in the Kubernetes emulator as an operator creates them (`flops-s3`,
`registry-credentials`); a failed regression Job and a failed Kaniko build print `env` with them,
and every check run and comment the GitHub emulator holds is searched for each credential.
Then the shapes masked without knowing any value, one by one.
"""
from __future__ import annotations

import base64
import json
import time

import pytest

from bot.core import jobs
from bot.platform.logs import Redactor, secret_values
from tests.conftest import NAMESPACE, Bed, wait_for
from tests.test_builds import _completed, by_image, push
from tests.test_regression import approve, completed, job_for, open_pr, setup_repo, sticky

JOB_KEY_ID = "flopsjobs-7f3a9c21"  # not shaped like an AWS key: only reading the Secret finds it
JOB_SECRET = "q8Zr2mVtY5pLw0xN4bHc"
ROBOT, ROBOT_PASSWORD = "robot$flops+ci", "Harb0r-r0b0t-pw"
AUTH = base64.b64encode(f"{ROBOT}:{ROBOT_PASSWORD}".encode()).decode()
DOCKERCONFIG = json.dumps({"auths": {"harbor.example.com": {"auth": AUTH}}})
CREDENTIALS = [JOB_KEY_ID, JOB_SECRET, AUTH, ROBOT_PASSWORD, f"{ROBOT}:{ROBOT_PASSWORD}",
               base64.b64encode(JOB_SECRET.encode()).decode()]


def add_job_secrets(bed: Bed) -> None:
    bed.kube.put_object({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": bed.settings.s3_secret},
                         "stringData": {"AWS_ACCESS_KEY_ID": JOB_KEY_ID, "AWS_SECRET_ACCESS_KEY": JOB_SECRET}})
    bed.kube.put_object({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
                         "metadata": {"name": bed.settings.registry_secret},
                         "stringData": {".dockerconfigjson": DOCKERCONFIG}})


def env_dump(extra: str = "", *, s3: bool = True) -> str:
    """`env`, `cat ~/.docker/config.json` and the odd debug print of a workload, as a pod log. A build
    (`s3=False`) has no S3 key to print: Kaniko gets its source through a presigned URL (#15 finding 2)."""
    s3_lines = [f"AWS_ACCESS_KEY_ID={JOB_KEY_ID}", f"AWS_SECRET_ACCESS_KEY={JOB_SECRET}",
                f"debug: connecting as {JOB_KEY_ID} with {JOB_SECRET}",
                f"b64 {base64.b64encode(JOB_SECRET.encode()).decode()}"] if s3 else []
    return "\n".join([
        "HOSTNAME=flops-job-x", "PATH=/usr/local/bin:/usr/bin", *s3_lines, f"DOCKER_AUTH_CONFIG={DOCKERCONFIG}",
        "FLOPS_S3_BUCKET=flops", extra, "Traceback (most recent call last):", "RuntimeError: boom"]) + "\n"


def published(bed: Bed) -> str:
    """Everything the bot put on GitHub: every check run's output and every comment."""
    runs = [json.dumps(run.get("output") or {}) for run in bed.github.check_runs.values()]
    return "\n".join(runs + [c["body"] for c in bed.github.comments.values()])


async def test_a_regression_job_printing_its_environment_publishes_no_credential(bed: Bed) -> None:
    add_job_secrets(bed)
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "import os; print(os.environ)\n"})
    await approve(bed)
    bed.kube.fail_job(NAMESPACE, job_for(bed, head)["metadata"]["name"], logs=env_dump(), exit_code=1)
    run = await wait_for(lambda: completed(bed, head), what="failure report")
    await bed.settle()
    assert sticky(bed), "the PR comment was posted"
    assert "RuntimeError: boom" in run["output"]["text"] and "FLOPS_S3_BUCKET=flops" in run["output"]["text"]
    text = published(bed)
    for credential in CREDENTIALS:
        assert credential not in text, credential


async def test_a_build_printing_its_registry_auth_publishes_no_credential(bed: Bed) -> None:
    add_job_secrets(bed)
    data = push(bed, {"server/app.py": "print(7)\n"})
    await bed.deliver("push", data)
    await bed.settle()
    name = by_image(bed)["server"]["metadata"]["name"]
    log = env_dump(f"RUN echo {AUTH} | base64 -d  ->  {ROBOT}:{ROBOT_PASSWORD}", s3=False)
    bed.kube.fail_job(NAMESPACE, name, logs=log, exit_code=1)
    run = await wait_for(lambda: _completed(bed, data["after"], "flops/build: server"), what="failure report")
    await bed.settle()
    assert "RuntimeError: boom" in run["output"]["text"]
    for credential in CREDENTIALS:
        assert credential not in published(bed), credential
    secrets_read = {c for c in bed.kube.requests if "/secrets/" in c[1]}
    # the build receives the registry Secret only: no S3 credential (its source is a presigned URL)
    assert {target.rsplit("/", 1)[1] for _, target in secrets_read} == {bed.settings.registry_secret}


async def test_a_secret_the_bot_cannot_read_still_leaves_shapes_masked(bed: Bed) -> None:
    """No Secret in the namespace (404): the report still goes out, the assignments masked by shape
    (a bare value printed on its own can only be masked by reading the Secret)."""
    setup_repo(bed)
    head = open_pr(bed, {"train.py": "print(1)\n"})
    await approve(bed)
    bed.kube.fail_job(NAMESPACE, job_for(bed, head)["metadata"]["name"], logs=env_dump(), exit_code=1)
    run = await wait_for(lambda: completed(bed, head), what="failure report")
    text = run["output"]["text"]
    assert "AWS_SECRET_ACCESS_KEY=***" in text and "AWS_ACCESS_KEY_ID=***" in text and AUTH not in text


def test_the_secrets_a_pod_receives_are_read_from_its_spec() -> None:
    spec = {"containers": [{"name": "c", "env": [
        {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "C", "value": "plain"}], "envFrom": [{"secretRef": {"name": "all-of-it"}}]}],
        "volumes": [{"name": "r", "secret": {"secretName": "registry", "items": [{"key": ".dockerconfigjson",
                                                                                    "path": "config.json"}]}},
                    {"name": "p", "projected": {"sources": [{"secret": {"name": "projected"}}]}}],
        "imagePullSecrets": [{"name": "pull"}]}
    assert jobs.secrets_received(spec) == {"s3": {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"},
                                           "all-of-it": None, "registry": {".dockerconfigjson"},
                                           "projected": None, "pull": None}


def test_a_dockerconfigjson_yields_its_auth_its_password_and_what_auth_encodes() -> None:
    values = secret_values({".dockerconfigjson": DOCKERCONFIG})
    assert {AUTH, f"{ROBOT}:{ROBOT_PASSWORD}", ROBOT_PASSWORD, DOCKERCONFIG} <= set(values)


SHAPES = [
    ("AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
    ("key ASIAY34FZKBOKMUTVV7A in use", "ASIAY34FZKBOKMUTVV7A"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "wJalrXUtnFEMI"),
    ("DB_PASSWORD=hunter2hunter2", "hunter2"),
    ('{"password": "hunter2hunter2", "user": "bob"}', "hunter2"),
    ("password: 'hunter2hunter2'", "hunter2"),
    ("client_secret = xyzzy-plugh-42", "xyzzy"),
    ("api_key: abcdef0123456789", "abcdef0123456789"),
    ("?token=abc123def456&page=2", "abc123def456"),
    ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.sig", "eyJhbGciOi"),
    ("curl -H 'Authorization: Basic Ym9iOmh1bnRlcjI='", "Ym9iOmh1bnRlcjI="),
    ("proxy-authorization: Negotiate YIIabc", "YIIabc"),
    ("git clone https://bob:hunter2hunter2@git.example.com/x.git", "hunter2"),
    ("pip install --index-url https://__token__:pypi-AgEIcHlwaS5vcmc@pypi.example/simple", "pypi-AgEI"),
    ('{"auths":{"harbor.example.com":{"auth":"cm9ib3Q6cGFzcw=="}}}', "cm9ib3Q6cGFzcw=="),
    ("GITHUB_TOKEN=ghs_16C7e42F292c6912E7710c838347Ae178B4a", "ghs_16C7e"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----", "b3Blbn"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA75", "MIIEpAIB"),  # cut by the tail's end
    ("MIIEpAIBAAKCAQEA75abcdefgh\nQ2xhc3NpYyBrZXkgYm9keQ==\n-----END RSA PRIVATE KEY-----", "MIIEpAIB"),  # tail starts inside
]


@pytest.mark.parametrize(("line", "secret"), SHAPES)
def test_credential_shapes_are_masked_without_knowing_the_value(line: str, secret: str) -> None:
    masked = Redactor()(line)
    assert secret not in masked and "***" in masked


@pytest.mark.parametrize("line", ["epoch 3: accuracy=0.91 loss=0.23", "the author: Ada", "12 tokens/s",
                                  "authentication failed, retrying", "https://mlflow.example.com/#/runs/1"])
def test_ordinary_lines_are_left_alone(line: str) -> None:
    assert Redactor()(line) == line


def test_masking_a_hostile_100k_line_is_fast() -> None:
    hostile = "a" * 100_000 + "password=" * 5_000 + "-----BEGIN X-----" * 1000 + ("A" * 70 + "\n") * 2000
    started = time.perf_counter()
    Redactor(["some-secret-value"])(hostile + "-----END X-----")
    assert time.perf_counter() - started < 1.0
