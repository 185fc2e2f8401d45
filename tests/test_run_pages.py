"""Run pages over real HTTP: `/runs/<run id>` from the Jobs the bot made, live logs (SSE fed by the Kubernetes
emulator's `follow=true` stream), masking, the kept log once the Pod is gone, `/runs?repo=`, sign-in through
the GitHub emulator's OAuth endpoints, and who may read what."""
from __future__ import annotations

import contextlib
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from bot.service import runs as runs_service
from tests.conftest import INSTALLATION, NAMESPACE, SECRET, Bed, BedFactory, push_payload, wait_for
from tests.emulators.github import GitHubEmulator
from tests.test_federated import FINAL, ROUNDS, run_objects, start_run, write_output

REPO = "Codertocat/Hello-World"
PUBLIC = "octo-org/public-models"
CLIENT_ID, CLIENT_SECRET = "Iv1.runpages0001", "oauth-client-secret-1"
CONFIG = "registry: harbor.example.com/flops\nbranches: [master]\nimages:\n  - name: server\n" \
         "    dockerfile: Dockerfile\n"
SIGNIN = {"GITHUB_CLIENT_ID": CLIENT_ID, "GITHUB_CLIENT_SECRET": CLIENT_SECRET}


async def started_build(bed: Bed, repo: str = REPO) -> dict[str, Any]:
    """A push builds one image: the bot's Kaniko Job, its Pod running."""
    if repo not in bed.github.repos:
        bed.github.add_repo(repo, default_branch="master", private=repo != PUBLIC)
        bed.github.commit(repo, "master", {".github/flops.yml": CONFIG, "Dockerfile": "FROM python:3.11\n"})
    await bed.deliver("push", push_payload(bed.github, repo, {"app.py": "print(1)\n"}))
    await bed.settle()
    [job] = [j for j in bed.kube.list("jobs", NAMESPACE, labels={"flops.dev/kind": "build"})
             if j["metadata"]["annotations"]["flops.dev/repo"] == repo]
    bed.kube.start_job(NAMESPACE, job["metadata"]["name"])
    return job


def pod_of(bed: Bed, job: dict[str, Any]) -> dict[str, Any]:
    [pod] = bed.kube.list("pods", NAMESPACE, labels={"job-name": job["metadata"]["name"]})
    return pod


def cookies_of(response: aiohttp.ClientResponse) -> dict[str, str]:
    return {name: morsel.value for name, morsel in response.cookies.items()}


async def sign_in(bed: Bed, login: str, next_path: str) -> dict[str, str]:
    """The browser's way through `/login`, GitHub's authorize page and `/auth/callback`: the session cookie."""
    bed.github.oauth.signed_in = login
    async with bed.session.get(bed.url("/login"), params={"next": next_path}, allow_redirects=False) as started:
        assert started.status == 302
        state_cookie = cookies_of(started)
        authorize = started.headers["Location"]
    assert authorize.startswith(bed.github.url + "/login/oauth/authorize?")
    async with bed.session.get(authorize, allow_redirects=False) as consent:
        back = consent.headers["Location"]
    assert back.startswith(bed.url("/auth/callback"))
    async with bed.session.get(back, cookies=state_cookie, allow_redirects=False) as done:
        assert done.status == 302, await done.text()
        assert done.headers["Location"] == next_path
        header = done.headers.getall("Set-Cookie")
        value = done.cookies["flops_session"].value
    session = next(h for h in header if h.startswith("flops_session="))
    assert all(flag in session for flag in ("HttpOnly", "Secure", "SameSite=Lax"))
    return {"flops_session": value}


async def events(bed: Bed, path: str, cookies: dict[str, str], until: str) -> list[str]:
    """The `data:` lines of an SSE stream until one contains `until` (or the stream ends)."""
    got: list[str] = []
    async with bed.session.get(bed.url(path), cookies=cookies, timeout=aiohttp.ClientTimeout(total=10)) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                got.append(line[6:])
                if until in line:
                    break
    return got


def live_paths(page: str) -> list[str]:
    return re.findall(r'data-live="([^"]+)"', page)


async def test_signed_in_reader_follows_a_running_build_live_masked(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    job = await started_build(bed)
    run_id = job["metadata"]["labels"]["flops.dev/run"]
    github.set_permission(REPO, "reader", "read")
    async with bed.session.get(bed.url(f"/runs/{run_id}"), allow_redirects=False) as anonymous:
        assert anonymous.status == 302 and anonymous.headers["Location"].startswith("/login?next=")
    cookies = await sign_in(bed, "reader", f"/runs/{run_id}")
    async with bed.session.get(bed.url(f"/runs/{run_id}"), cookies=cookies) as page:
        assert page.status == 200
        text = await page.text()
        assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "Signed in as reader" in text and job["metadata"]["name"] in text and "emulator-node" in text
    pod = pod_of(bed, job)
    kaniko = [p for p in live_paths(text) if p.endswith("/containers/kaniko/live")]
    assert kaniko, live_paths(text)
    bed.kube.append_log(NAMESPACE, pod["metadata"]["name"], "kaniko", f"step 1 <b>bold</b> {SECRET}\n")
    seen = await events(bed, kaniko[0], cookies, until="step 1")
    assert seen[-1] == "step 1 <b>bold</b> ***"  # masked as check-run tails are; escaped by the browser's text node
    await wait_for(lambda: bed.kube.log_followers == 0, timeout=5, what="the API stream closed once the reader left")


async def test_private_run_refused_to_a_user_who_cannot_read_it(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    job = await started_build(bed)
    run_id = job["metadata"]["labels"]["flops.dev/run"]
    cookies = await sign_in(bed, "stranger", f"/runs/{run_id}")
    async with bed.session.get(bed.url(f"/runs/{run_id}"), cookies=cookies) as page:
        assert page.status == 404
        assert "No such run, or stranger cannot read its repository" in await page.text()
    pod = pod_of(bed, job)
    path = f"/runs/{run_id}/pods/{pod['metadata']['name']}/containers/kaniko/live"
    async with bed.session.get(bed.url(path), cookies=cookies) as stream:
        assert stream.status == 404
    async with bed.session.get(bed.url(f"/runs?repo={REPO}"), cookies=cookies) as listing:
        assert listing.status == 403
    async with bed.session.get(bed.url("/runs?repo=Codertocat/no-runs-here"), cookies=cookies) as unknown:
        assert unknown.status == 403  # as for a private repository with runs: existence is not told


async def test_callback_refuses_a_state_it_did_not_issue(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    async with bed.session.get(bed.url("/login"), params={"next": "https://evil.example/"},
                               allow_redirects=False) as started:
        authorize = started.headers["Location"]
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    async with bed.session.get(authorize, allow_redirects=False) as consent:
        back = consent.headers["Location"]
    async with bed.session.get(back, allow_redirects=False) as forged:  # no state cookie: a CSRF'd callback
        assert forged.status == 403
    async with bed.session.get(bed.url("/auth/callback"), params={"code": "x", "state": state + "x"},
                               cookies=cookies_of(started), allow_redirects=False) as wrong:
        assert wrong.status == 403


async def test_public_repo_readable_without_sign_in_and_kept_log_after_pod_is_gone(
        make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "octo-org", [PUBLIC])
    bed = await make_bed()
    job = await started_build(bed, PUBLIC)
    name, run_id = job["metadata"]["name"], job["metadata"]["labels"]["flops.dev/run"]
    pod = pod_of(bed, job)["metadata"]["name"]
    bed.kube.succeed_job(NAMESPACE, name, message="sha256:" + "ab" * 32,
                         logs=f"pushed\nAWS_SECRET_ACCESS_KEY={bed.s3.secret_key}\n")
    await wait_for(lambda: "flops.dev/reported" in (bed.kube.get("jobs", NAMESPACE, name) or {})
                   .get("metadata", {}).get("annotations", {}), what="the build reported")
    await bed.settle()
    bed.kube.put_object({**bed.kube.get("jobs", NAMESPACE, name)})  # still there: then gone, as its TTL does
    await bed.deps.kube.delete_job(name)
    await wait_for(lambda: not bed.kube.list("pods", NAMESPACE, labels={"job-name": name}), what="pods gone")
    async with bed.session.get(bed.url(f"/runs/{run_id}")) as page:
        assert page.status == 200
        text = await page.text()
    assert "this is what the bot kept" in text and "success" in text
    path = f"/runs/{run_id}/pods/{pod}/containers/kaniko/log"
    async with bed.session.get(bed.url(path)) as download:
        kept = await download.text()
    assert "pushed" in kept and bed.s3.secret_key not in kept and "***" in kept
    async with bed.session.get(bed.url(f"/runs?repo={PUBLIC}&kind=build&conclusion=success")) as listing:
        assert run_id in await listing.text()
    async with bed.session.get(bed.url(f"/runs?repo={PUBLIC}&kind=regression")) as listing:
        assert run_id not in await listing.text()


async def test_public_repo_needs_sign_in_when_runs_are_not_public(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "octo-org", [PUBLIC])
    bed = await make_bed(FLOPS_RUNS_PUBLIC="false")
    job = await started_build(bed, PUBLIC)
    async with bed.session.get(bed.url(f"/runs/{job['metadata']['labels']['flops.dev/run']}")) as page:
        assert page.status == 404
        assert "sign-in is not configured" in await page.text()


async def test_every_check_links_its_run_page_when_the_public_url_is_set(make_bed: BedFactory,
                                                                        github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    bed = await make_bed(FLOPS_PUBLIC_URL="https://flops.example.com")
    job = await started_build(bed)
    ann = job["metadata"]["annotations"]
    [check] = bed.github.check_runs_for(REPO, ann["flops.dev/sha"], "flops/build: server")
    assert check["details_url"] == f"https://flops.example.com/runs/{job['metadata']['labels']['flops.dev/run']}"


async def test_a_pending_pod_shows_why_and_its_log_says_it_has_not_started(make_bed: BedFactory,
                                                                           github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "octo-org", [PUBLIC])
    bed = await make_bed()
    job = await started_build(bed, PUBLIC)
    bed.kube.set_pod_waiting(NAMESPACE, job["metadata"]["name"], "ImagePullBackOff",
                             'Back-off pulling image "<script>alert(1)</script>"')
    async with bed.session.get(bed.url(f"/runs/{job['metadata']['labels']['flops.dev/run']}")) as page:
        text = await page.text()
    assert "kaniko: ImagePullBackOff" in text and "<script>alert" not in text
    kaniko = [p for p in live_paths(text) if p.endswith("/containers/kaniko/live")][0]
    seen = await events(bed, kaniko, {}, until="not started")
    assert seen == ["(the container has not started yet: reload the page once it runs)"]


async def test_a_federated_run_page_shows_server_clients_and_per_round_metrics(make_bed: BedFactory,
                                                                             github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    server = await start_run(bed)
    run_id = server["metadata"]["name"]
    clients, _ = run_objects(bed, run_id)
    write_output(bed, server)
    github.set_permission(REPO, "reader", "read")
    cookies = await sign_in(bed, "reader", f"/runs/{run_id}")
    async with bed.session.get(bed.url(f"/runs/{run_id}"), cookies=cookies) as page:
        assert page.status == 200
        text = await page.text()
    assert "federated-server run" in text and len(clients) == 3
    assert all(c["metadata"]["name"] in text for c in clients)
    assert "<h3>Per round</h3>" in text and text.count("<tr><td>") >= len(ROUNDS)
    assert all(key in text for key in FINAL)
    assert text.count('<svg class="chart"') == len(ROUNDS[0]["metrics"])  # one chart per metric over the rounds


async def answer(bed: Bed, path: str, cookies: dict[str, str]) -> tuple[int, str, str]:
    async with bed.session.get(bed.url(path), cookies=cookies, allow_redirects=False) as response:
        return response.status, response.headers.get("Location", ""), await response.text()


async def test_an_unknown_run_and_a_private_run_answer_alike(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    run_id = (await started_build(bed))["metadata"]["labels"]["flops.dev/run"]
    unknown = "0" * len(run_id) if run_id != "0" * len(run_id) else "1" * len(run_id)
    stranger = await sign_in(bed, "stranger", f"/runs/{run_id}")
    for cookies in ({}, stranger):
        private, missing = await answer(bed, f"/runs/{run_id}", cookies), await answer(bed, f"/runs/{unknown}", cookies)
        assert private[0] == missing[0] and private[0] in (302, 404)
        assert private[1].replace(run_id, "ID") == missing[1].replace(unknown, "ID")
        assert private[2].replace(run_id, "ID") == missing[2].replace(unknown, "ID")
    assert (await answer(bed, f"/runs/{run_id}", stranger))[0] == 404
    assert (await answer(bed, "/runs/not..a*valid-id", stranger))[2] == (await answer(bed, f"/runs/{unknown}",
                                                                                           stranger))[2]


async def test_one_visitor_cannot_take_every_live_stream(make_bed: BedFactory, github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "octo-org", [PUBLIC])
    bed = await make_bed()
    job = await started_build(bed, PUBLIC)
    run_id, pod = job["metadata"]["labels"]["flops.dev/run"], pod_of(bed, job)["metadata"]["name"]
    path = bed.url(f"/runs/{run_id}/pods/{pod}/containers/kaniko/live")
    async with contextlib.AsyncExitStack() as held:
        for _ in range(runs_service.LIVE_PER_VISITOR):
            stream = await held.enter_async_context(bed.session.get(path))
            assert stream.status == 200
        async with bed.session.get(path) as refused:
            assert refused.status == 429 and "close one" in await refused.text()
        assert len(bed.server.app[runs_service.LIVE]) == runs_service.LIVE_PER_VISITOR
    await wait_for(lambda: not bed.server.app[runs_service.LIVE_BY], timeout=10, what="the visitor's streams released")
    async with bed.session.get(path) as again:
        assert again.status == 200


async def test_sign_out_from_the_page_header_only_from_the_bots_own_page(make_bed: BedFactory,
                                                                        github: GitHubEmulator) -> None:
    github.add_installation(INSTALLATION, "Codertocat", [REPO])
    github.oauth.add_client(CLIENT_ID, CLIENT_SECRET)
    bed = await make_bed(**SIGNIN)
    run_id = (await started_build(bed))["metadata"]["labels"]["flops.dev/run"]
    github.set_permission(REPO, "reader", "read")
    cookies = await sign_in(bed, "reader", f"/runs/{run_id}")
    status, _, page = await answer(bed, f"/runs/{run_id}", cookies)
    assert status == 200 and '<form class="logout" method="post" action="/logout">' in page
    own = bed.url("/").rstrip("/")
    for forged in ({"Origin": "https://evil.example"}, {}, {"Referer": "https://evil.example/runs"}):
        async with bed.session.post(bed.url("/logout"), cookies=cookies, headers=forged,
                                    allow_redirects=False) as refused:
            assert refused.status == 403 and "flops_session" not in refused.cookies
    async with bed.session.post(bed.url("/logout"), cookies=cookies, headers={"Origin": own},
                                allow_redirects=False) as done:
        assert done.status == 303 and done.headers["Location"] == "/runs"
        cleared = next(h for h in done.headers.getall("Set-Cookie") if h.startswith("flops_session="))
    assert cleared.startswith('flops_session="";') and "Max-Age=0" in cleared and "SameSite=Lax" in cleared
    async with bed.session.post(bed.url("/logout"), headers={"Referer": own + f"/runs/{run_id}"},
                                allow_redirects=False) as by_referer:
        assert by_referer.status == 303
