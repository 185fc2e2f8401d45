"""A RayJob regression run's page from `python -m bot serve` as shipped (README environment), over HTTP: the
RayJob, its Ray cluster's head Pod and its submitter Pod, a masked live log line, and the run in `/runs`."""
from __future__ import annotations

import re
from pathlib import Path

import aiohttp

from tests.conftest import INSTALLATION, NAMESPACE, SECRET, payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.kuberay import SUBMITTER, KubeRay
from tests.emulators.mlflow import MlflowEmulator
from tests.emulators.s3 import S3Server
from tests.serving import serving
from tests.test_regression import MAIN, MAINTAINER, PR, REPO
from tests.test_regression_ray import flops_yml, mlflow  # noqa: F401 (the fixture)
from tests.test_run_pages_browser import deliver


async def test_a_served_rayjob_run_page_shows_its_cluster_and_live_log(
        tmp_path: Path, github: GitHubEmulator, kube: KubeEmulator, s3: S3Server,
        mlflow: MlflowEmulator) -> None:  # noqa: F811
    github.add_installation(INSTALLATION, MAINTAINER, [REPO])
    github.add_repo(REPO, default_branch=MAIN, private=False)
    github.set_permission(REPO, MAINTAINER, "admin")
    base = github.commit(REPO, MAIN, {".github/flops.yml": flops_yml(mlflow), "regression.py": "pass\n"})
    head = github.commit(REPO, "feature", {"regression.py": "print(3)\n"}, parents=[base])
    github.add_pull(REPO, PR, head, base_branch=MAIN, head_ref="feature", user="octocat")
    data = payload("issue_comment.created")
    data["issue"].update(number=PR, pull_request={"url": f"{github.url}/repos/{REPO}/pulls/{PR}"})
    data["comment"].update(body="/regression", id=github.add_comment(REPO, PR, "/regression", user=MAINTAINER)["id"])
    data["comment"]["user"]["login"] = MAINTAINER
    data["installation"]["id"] = INSTALLATION
    async with serving(tmp_path, github, kube, s3) as served, aiohttp.ClientSession() as session:
        await deliver(served, "issue_comment", data)
        [rayjob] = await wait_for(lambda: kube.list("rayjobs", NAMESPACE), timeout=30, what="the RayJob")
        name, run_id = rayjob["metadata"]["name"], rayjob["metadata"]["labels"]["flops.dev/run"]
        kuberay = KubeRay(kube)
        kuberay.run(name)
        head_pod = kuberay.head_pod(name)
        assert head_pod is not None
        [submitter] = kube.list("pods", NAMESPACE, labels={"job-name": name})
        async with session.get(f"{served.url}/runs/{run_id}") as response:
            assert response.status == 200
            page = await response.text()
        assert f"RayJob <code>{name}</code>" in page and "Running / RUNNING" in page
        assert head_pod["metadata"]["name"] in page and submitter["metadata"]["name"] in page
        [live] = [p for p in re.findall(r'data-live="([^"]+)"', page) if f"/containers/{SUBMITTER}/live" in p]
        kube.append_log(NAMESPACE, submitter["metadata"]["name"], SUBMITTER, f"seed 1 key={SECRET}\n")
        async with session.get(served.url + live, timeout=aiohttp.ClientTimeout(total=10)) as stream:
            assert stream.status == 200
            seen = ""
            async for raw in stream.content:
                if raw.startswith(b"data: seed 1"):
                    seen = raw.decode().strip()
                    break
        assert seen == "data: seed 1 key=***"
        async with session.get(f"{served.url}/runs", params={"repo": REPO}) as listing:
            assert run_id in await listing.text()
