"""What the run pages rely on, checked at the emulators' edges: `pods/log?follow=true` streams as the kubelet
streams it (official client, unchanged), github.com's OAuth web flow and user tokens answer as GitHub
documents them, and the sign-in settings are checked."""
from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import kubernetes.client
import pytest

from bot.platform.settings import SettingsError, from_env
from tests.conftest import INSTALLATION, wait_for
from tests.emulators.github import GitHubEmulator
from tests.emulators.kube import KubeEmulator

JOB = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "follow-me"},
       "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}}


async def test_a_followed_log_streams_each_new_line_and_ends_when_the_container_does(kube: KubeEmulator) -> None:
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(kube.client_configuration()))
    kubernetes.client.BatchV1Api(core.api_client).create_namespaced_job("flops", JOB)
    kube.start_job("flops", "follow-me")
    [pod] = kube.list("pods", "flops", labels={"job-name": "follow-me"})
    name = pod["metadata"]["name"]
    kube.append_log("flops", name, "main", "before\n")
    got: list[bytes] = []

    def read() -> None:
        response = core.read_namespaced_pod_log(name, "flops", container="main", follow=True, _preload_content=False)
        for chunk in response.stream(1024):
            got.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    await wait_for(lambda: b"".join(got) == b"before\n", what="what was printed before")
    kube.append_log("flops", name, "main", "during\n")
    await wait_for(lambda: b"".join(got).endswith(b"during\n"), what="a line printed while followed")
    assert reader.is_alive() and kube.log_followers == 1
    kube.succeed_job("flops", "follow-me", logs="before\nduring\nlast\n")
    await asyncio.to_thread(reader.join, 10)
    assert not reader.is_alive() and b"".join(got) == b"before\nduring\nlast\n"
    assert kube.log_followers == 0


async def oauth_code(session: aiohttp.ClientSession, github: GitHubEmulator, client_id: str) -> str:
    async with session.get(f"{github.url}/login/oauth/authorize", allow_redirects=False,
                           params={"client_id": client_id, "redirect_uri": "https://bot.example/auth/callback",
                                   "state": "s1"}) as response:
        assert response.status == 302
        query = parse_qs(urlsplit(response.headers["Location"]).query)
    assert query["state"] == ["s1"]
    return query["code"][0]


async def exchange(session: aiohttp.ClientSession, github: GitHubEmulator, **form: str) -> dict[str, Any]:
    async with session.post(f"{github.url}/login/oauth/access_token", data=form,
                            headers={"Accept": "application/json"}) as response:
        assert response.status == 200  # GitHub answers errors of this endpoint with 200 too
        data: dict[str, Any] = await response.json()
        return data


async def test_oauth_web_flow_and_user_tokens_answer_as_github_documents(github: GitHubEmulator) -> None:
    github.oauth.add_client("Iv1.abc", "s3cret")
    github.add_repo("acme/private", private=True)
    github.add_repo("acme/elsewhere", private=True)
    github.add_installation(INSTALLATION, "acme", ["acme/private"])
    github.oauth.signed_in = "alice"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{github.url}/login/oauth/authorize", params={"client_id": "Iv1.nope"}) as unknown:
            assert unknown.status == 404
        code = await oauth_code(session, github, "Iv1.abc")
        wrong = await exchange(session, github, client_id="Iv1.abc", client_secret="guess", code=code)
        assert wrong["error"] == "incorrect_client_credentials" and "access_token" not in wrong
        token = await exchange(session, github, client_id="Iv1.abc", client_secret="s3cret", code=code)
        assert token["token_type"] == "bearer" and token["access_token"].startswith("ghu_")
        again = await exchange(session, github, client_id="Iv1.abc", client_secret="s3cret", code=code)
        assert again["error"] == "bad_verification_code"  # a code is good once
        headers = {"Authorization": f"Bearer {token['access_token']}", "Accept": "application/vnd.github+json"}
        async with session.get(f"{github.url}/user", headers=headers) as me:
            assert (await me.json())["login"] == "alice"
        statuses = {}
        for repo in ("acme/private", "acme/elsewhere"):
            async with session.get(f"{github.url}/repos/{repo}", headers=headers) as response:
                statuses[repo] = response.status
        assert statuses == {"acme/private": 404, "acme/elsewhere": 404}
        github.set_permission("acme/private", "alice", "read")
        github.set_permission("acme/elsewhere", "alice", "admin")  # readable, but the App is not installed there
        for repo in ("acme/private", "acme/elsewhere"):
            async with session.get(f"{github.url}/repos/{repo}", headers=headers) as response:
                statuses[repo] = response.status
        assert statuses == {"acme/private": 200, "acme/elsewhere": 404}
        github.oauth.expire_user_tokens()
        async with session.get(f"{github.url}/user", headers=headers) as expired:
            assert expired.status == 401


def test_client_id_and_secret_go_together(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as error:
        from_env({**env, "GITHUB_CLIENT_ID": "Iv1.abc"})
    assert "GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET go together" in str(error.value)
    settings = from_env({**env, "GITHUB_CLIENT_ID": "Iv1.abc", "GITHUB_CLIENT_SECRET": "s", "FLOPS_RUNS_PUBLIC": "no"})
    assert settings.signin.enabled and not settings.signin.runs_public
    assert "client_secret" not in repr(settings)  # never printed with the settings
