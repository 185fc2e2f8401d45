"""The run pages in a real browser (headless Chromium, tests/browser.py) against `python -m bot serve` as
shipped: sign in through the GitHub emulator's OAuth pages, watch a running build's log grow live, see a
private repository refused to a user without access. The screenshot of the page is checked not blank;
with FLOPS_UPDATE_SCREENSHOT=1 it is also written to docs/run-page.png, the README's (a plain test run
leaves the working tree as it was)."""
from __future__ import annotations

import asyncio
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import kubernetes.client
from PIL import Image
from playwright.async_api import Browser, Page, expect

from tests.browser import chromium
from tests.conftest import INSTALLATION, NAMESPACE, push_payload, sign, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator
from tests.emulators.s3 import S3Server, free_port
from tests.serving import Served, serving

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "run-page.png"
REPO = "Codertocat/Hello-World"
CLIENT_ID, CLIENT_SECRET = "Iv1.browser00001", "oauth-client-secret-browser"
CONFIG = "registry: harbor.example.com/flops\nbranches: [master]\nimages:\n  - name: server\n" \
         "    dockerfile: Dockerfile\n"


async def deliver(served: Served, event: str, data: dict[str, Any]) -> None:
    body = json.dumps(data).encode()
    headers = {"X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()), "Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body)}
    async with aiohttp.ClientSession() as session:
        async with session.post(served.url + "/webhook", data=body, headers=headers) as response:
            assert response.status == 202, await response.text()


async def running_build(served: Served, github: GitHubEmulator, kube: KubeEmulator) -> dict[str, Any]:
    github.add_repo(REPO, default_branch="master")
    github.commit(REPO, "master", {".github/flops.yml": CONFIG, "Dockerfile": "FROM python:3.11\n"})
    await deliver(served, "push", push_payload(github, REPO, {"app.py": "print(1)\n"}))
    [job] = await wait_for(lambda: kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"}), timeout=30,
                           what="the build Job")
    kube.start_job(NAMESPACE, job["metadata"]["name"])
    return job


async def signed_in_page(browser: Browser, github: GitHubEmulator, login: str, url: str) -> tuple[Page, int]:
    """A fresh browser profile opens `url`: to /login, GitHub's authorize page, back; the final status."""
    github.oauth.signed_in = login
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    response = await page.goto(url)
    assert response is not None
    assert page.url == url, page.url  # the sign-in came back where it started
    return page, response.status


def distinct_colours(png: bytes) -> int:
    with Image.open(io.BytesIO(png)) as image:
        return len(image.convert("RGB").getcolors(maxcolors=1 << 24) or [])


async def test_a_running_build_in_chromium_live_log_and_refusal(tmp_path: Path, github: GitHubEmulator,
                                                                kube: KubeEmulator, s3: S3Server) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    github.add_repo(REPO, default_branch="master")  # private
    github.set_permission(REPO, "reader", "read")
    port = free_port()
    async with serving(tmp_path, github, kube, s3, PORT=str(port), FLOPS_PUBLIC_URL=f"http://127.0.0.1:{port}",
                       GITHUB_CLIENT_ID=CLIENT_ID, GITHUB_CLIENT_SECRET=CLIENT_SECRET) as served:
        job = await running_build(served, github, kube)
        [pod] = kube.list("pods", NAMESPACE, labels={"job-name": job["metadata"]["name"]})
        pod_name = pod["metadata"]["name"]
        kube.append_log(NAMESPACE, pod_name, "kaniko", "INFO Retrieving image manifest python:3.11\n"
                                                       "INFO Unpacking rootfs as cmd RUN requires it\n")
        url = f"{served.url}/runs/{job['metadata']['labels']['flops.dev/run']}"
        async with chromium() as browser:
            page, status = await signed_in_page(browser, github, "reader", url)
            assert status == 200
            await expect(page.locator("header")).to_contain_text("Signed in as reader")
            log = page.locator("pre[data-live$='/containers/kaniko/live']")
            await expect(log).to_contain_text("Unpacking rootfs", timeout=5000)
            line = f"INFO Taking snapshot of full filesystem {uuid.uuid4().hex[:8]}"
            kube.append_log(NAMESPACE, pod_name, "kaniko", line + "\n")
            await expect(log).to_contain_text(line, timeout=2000)  # live: within 2 s of the pod printing it
            png = await page.screenshot(full_page=True)
            assert distinct_colours(png) > 50, "the screenshot is blank"
            if os.environ.get("FLOPS_UPDATE_SCREENSHOT") == "1":
                SCREENSHOT.write_bytes(png)

            refused, status = await signed_in_page(browser, github, "stranger", url)
            assert status == 404  # as for a run that does not exist: run ids cannot be probed
            await expect(refused.locator(".refused")).to_contain_text("No such run, or stranger cannot read")
            await expect(refused.locator("pre.log")).to_have_count(0)

            await kept_after_the_pod_is_gone(page, served, kube, job, line)


async def kept_after_the_pod_is_gone(page: Page, served: Served, kube: KubeEmulator, job: dict[str, Any],
                                     line: str) -> None:
    """The build finishes, is reported, its Job is deleted (as its TTL does): the page shows the kept log."""
    name = job["metadata"]["name"]
    kube.succeed_job(NAMESPACE, name, message="sha256:" + "ab" * 32, logs=f"{line}\nINFO Pushed image\n")
    await wait_for(lambda: "flops.dev/reported" in kube.get("jobs", NAMESPACE, name)["metadata"]["annotations"],
                   timeout=30, what="the build reported")
    batch = kubernetes.client.BatchV1Api(kubernetes.client.ApiClient(kube.client_configuration()))
    await asyncio.to_thread(batch.delete_namespaced_job, name, NAMESPACE, propagation_policy="Background")
    await page.reload()
    await expect(page.locator("main")).to_contain_text("this is what the bot kept")
    await expect(page.locator("pre[data-live$='/containers/kaniko/live']")).to_contain_text("INFO Pushed image")
    await page.goto(f"{served.url}/runs?repo={REPO}&kind=build&conclusion=success")
    await expect(page.locator("table")).to_contain_text(name)
