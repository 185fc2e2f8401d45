"""The Job of one `tests:` entry on one commit: the command in its image over the commit's source,
and a native sidecar that uploads `$FLOPS_RESULTS` when the command has exited.

The test container holds no credential at all (pull-request code runs in it): the sidecar, an
init container with `restartPolicy: Always` (Kubernetes 1.29+), receives SIGTERM once the test
container has terminated, success or failure, and POSTs every regular file under /flops/results
to `<FLOPS_OUTPUT>results/` with a presigned POST policy that admits only that prefix and a
bounded size per object. The sidecar, not the test, holds the policy: it sends at most
`UPLOAD_FILES` files (empty ones count) and `UPLOAD_LIMIT` bytes in total. The bot reads only
that prefix back, and lists at most `UPLOAD_FILES` keys of it.
"""
from __future__ import annotations

import json
from typing import Any

from bot.core.jobs.contract import (
    CHECK_NAME,
    OUTPUT,
    STOP_GRACE,
    TIMEOUT,
    TRIGGER,
    A,
    Cluster,
    Source,
)
from bot.core.jobs.contract import (
    job_name as _job_name,
)
from bot.core.jobs.specs import Workload, _annotations, _labels, job_body, output_prefix, workload_pod

TEST = "test"
TEST_NAME = A + "test"  # the `tests:` entry's name
RESULTS = "/flops/results"
RESULTS_PREFIX = "results/"  # under FLOPS_OUTPUT
UPLOAD_LIMIT = 50 * 1024 * 1024
UPLOAD_FILES = 500  # files the sidecar uploads from one run, and keys the bot lists back
UPLOAD_GRACE = 120  # seconds the sidecar has, after the command exits, to upload
# The sidecar: blocks SIGTERM and waits for it (sent once the test container terminated: no handler,
# so no race), then uploads every regular file under FLOPS_RESULTS with the presigned POST policy.
# `python -c`, an argv list.
UPLOAD_RESULTS = (
    "import json, os, signal, urllib.request, uuid\n"
    "post = json.loads(os.environ['FLOPS_RESULTS_POST'])\n"
    "root, limit = os.environ['FLOPS_RESULTS'], int(os.environ['FLOPS_RESULTS_LIMIT'])\n"
    "files = int(os.environ['FLOPS_RESULTS_FILES'])\n"
    "def part(boundary, name, value, filename=None):\n"
    "    extra = f'; filename=\"{filename}\"' if filename else ''\n"
    "    return (f'--{boundary}\\r\\nContent-Disposition: form-data; name=\"{name}\"{extra}\\r\\n\\r\\n').encode()"
    " + value + b'\\r\\n'\n"
    "def send(key, data):\n"
    "    boundary = uuid.uuid4().hex\n"
    "    fields = [part(boundary, k, v.encode()) for k, v in post['fields'].items()]\n"
    "    body = b''.join(fields + [part(boundary, 'key', key.encode()),"
    " part(boundary, 'file', data, 'results')]) + f'--{boundary}--\\r\\n'.encode()\n"
    "    request = urllib.request.Request(post['url'], data=body, method='POST',"
    " headers={'Content-Type': 'multipart/form-data; boundary=' + boundary})\n"
    "    with urllib.request.urlopen(request, timeout=60) as response:\n"
    "        response.read()\n"
    "def upload():\n"
    "    sent = count = 0\n"
    "    for folder, _, names in sorted(os.walk(root)):\n"
    "        for name in sorted(names):\n"
    "            path = os.path.join(folder, name)\n"
    "            if os.path.islink(path) or not os.path.isfile(path):\n"
    "                continue\n"
    "            if count >= files:\n"
    "                print('more than', files, 'results files: the rest is not uploaded', flush=True)\n"
    "                return count, sent\n"
    "            count += 1  # every regular file counts, sent or not\n"
    "            size = os.path.getsize(path)\n"
    "            if sent + size > limit:\n"
    "                print('results over the limit, not uploaded:', path, flush=True)\n"
    "                continue\n"
    "            try:\n"
    "                with open(path, 'rb') as handle:\n"
    "                    send(post['prefix'] + os.path.relpath(path, root), handle.read())\n"
    "            except OSError as exc:  # one file that cannot be sent must not lose the others\n"
    "                print('not uploaded:', path, exc, flush=True)\n"
    "                continue\n"
    "            sent += size\n"
    "    return count, sent\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
    "print('waiting for the test command to exit', flush=True)\n"
    "signal.sigwait({signal.SIGTERM})\n"
    "print('results: %d files, %d bytes uploaded' % upload(), flush=True)\n"
)


def check_name(test: str) -> str:
    """The check run of a test: `flops/test: <name>` (branch protection requires it by this name)."""
    return f"flops/test: {test}"


def results_prefix(repo: str, run_id: str) -> str:
    return output_prefix(repo, run_id) + RESULTS_PREFIX


def name_of_test(src: Source, test: str, attempt: str = "", label: str = "") -> str:
    """`pr<n>` / `push` / `queue` keeps a PR's, a push's and a merge group's run of one sha apart."""
    label = label or (f"pr{src.pr}" if src.pr is not None else "push" if src.ref else "queue")
    return _job_name(TEST, f"{test}-{label}", src.sha, src.repo, test, attempt, label)


def job_of_test(src: Source, cluster: Cluster, work: Workload, *, test: str, source_url: str, timeout: int,
             trigger: str, upload: dict[str, Any], attempt: str = "", label: str = "") -> dict[str, Any]:
    """The Job of test `test`: `upload` is the presigned POST (`url`, `fields`, `prefix`)."""
    name = name_of_test(src, test, attempt, label)
    annotations = {**_annotations(src, run_id=name), CHECK_NAME: check_name(test), TEST_NAME: test,
                   TRIGGER: trigger, OUTPUT: output_prefix(src.repo, name), TIMEOUT: str(timeout)}
    init, containers, volumes, extras = workload_pod(src, cluster, name, work, source_url, name="test",
                                                     env={"FLOPS_RESULTS": RESULTS})
    [container] = containers
    # No credential in the test container: the S3 keys every other workload gets are left out.
    container["env"] = [e for e in container["env"] if "valueFrom" not in e]
    container.setdefault("volumeMounts", []).append({"name": "results", "mountPath": RESULTS})
    volumes.append({"name": "results", "emptyDir": {"sizeLimit": "1Gi"}})
    init.append(_uploader(cluster, upload))
    extras["terminationGracePeriodSeconds"] = UPLOAD_GRACE
    return job_body(name, cluster, _labels(TEST, run=name, pr=src.pr), annotations, containers,
                    deadline=timeout + STOP_GRACE, init_containers=init, volumes=volumes, pod_spec=extras)


def _uploader(cluster: Cluster, upload: dict[str, Any]) -> dict[str, Any]:
    return {"name": "upload-results", "image": cluster.fetch_image, "restartPolicy": "Always",
            "command": ["python", "-c", UPLOAD_RESULTS],
            "env": [{"name": "FLOPS_RESULTS", "value": RESULTS},
                    {"name": "FLOPS_RESULTS_LIMIT", "value": str(UPLOAD_LIMIT)},
                    {"name": "FLOPS_RESULTS_FILES", "value": str(UPLOAD_FILES)},
                    {"name": "FLOPS_RESULTS_POST", "value": json.dumps(upload, separators=(",", ":"))}],
            "volumeMounts": [{"name": "results", "mountPath": RESULTS, "readOnly": True}],
            "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}}
