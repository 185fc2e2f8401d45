"""The GitHub emulator, driven by gidgethub's aiohttp client exactly as the bot drives GitHub."""
from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import tarfile
import time
from collections.abc import AsyncIterator

import aiohttp
import gidgethub
import gidgethub.aiohttp
import pytest
from aiohttp import web
from gidgethub.apps import get_installation_access_token, get_jwt
from jwt.api_jws import PyJWS

from tests.conftest import wait_for
from tests.emulators.github import GitHubEmulator, blob_sha, make_app_key
from tests.emulators.s3 import free_port

APP_ID = 4242
INSTALLATION = 77
REPO = "octo/app"


@pytest.fixture
async def emulator() -> AsyncIterator[GitHubEmulator]:
    github = GitHubEmulator(app_id=APP_ID, public_key_pem=make_app_key()[1])
    url = await github.start()
    assert url == github.url and url.startswith("http://127.0.0.1:") and not url.endswith("/")
    github.add_repo(REPO, default_branch="main")
    github.add_installation(INSTALLATION, "octo", [REPO])
    yield github
    await github.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def signed(claims: dict[str, object], key: bytes | None = None) -> str:
    """A JWT with exactly these claims (PyJWT's encoder refuses an integer `iss`, GitHub accepts it)."""
    return PyJWS().encode(json.dumps(claims).encode(), key or make_app_key()[0], algorithm="RS256")


def app_client(session: aiohttp.ClientSession, github: GitHubEmulator) -> gidgethub.aiohttp.GitHubAPI:
    return gidgethub.aiohttp.GitHubAPI(session, "test", base_url=github.url)


async def installation_client(session: aiohttp.ClientSession, github: GitHubEmulator) -> gidgethub.aiohttp.GitHubAPI:
    token = await get_installation_access_token(app_client(session, github), installation_id=str(INSTALLATION),
                                                app_id=str(APP_ID), private_key=make_app_key()[0])
    return gidgethub.aiohttp.GitHubAPI(session, "test", oauth_token=token["token"], base_url=github.url)


@pytest.fixture
async def gh(session: aiohttp.ClientSession, emulator: GitHubEmulator) -> gidgethub.aiohttp.GitHubAPI:
    return await installation_client(session, emulator)


# ---------------------------------------------------------------------------------------- auth

async def test_token_issuance_and_use(session: aiohttp.ClientSession, emulator: GitHubEmulator) -> None:
    app = app_client(session, emulator)
    jwt_token = get_jwt(app_id=str(APP_ID), private_key=make_app_key()[0])
    assert (await app.getitem("/app", jwt=jwt_token))["id"] == APP_ID
    assert (await app.getitem(f"/repos/{REPO}/installation", jwt=jwt_token))["id"] == INSTALLATION
    token = await get_installation_access_token(app, installation_id=str(INSTALLATION), app_id=str(APP_ID),
                                                private_key=make_app_key()[0])
    assert token["token"].startswith("ghs_") and token["expires_at"].endswith("Z")
    gh = gidgethub.aiohttp.GitHubAPI(session, "test", oauth_token=token["token"], base_url=emulator.url)
    assert (await gh.getitem(f"/repos/{REPO}"))["default_branch"] == "main"
    assert gh.rate_limit is not None and gh.rate_limit.limit == 5000 and gh.rate_limit.remaining == 4999
    [call] = emulator.calls_to("GET", rf"^/repos/{REPO}$")
    assert (call.status, call.installation_id) == (200, INSTALLATION)


async def test_bad_jwts_are_rejected(session: aiohttp.ClientSession, emulator: GitHubEmulator) -> None:
    app = app_client(session, emulator)
    now = int(time.time())
    assert (await app.getitem("/app", jwt=signed({"iat": now, "exp": now + 500, "iss": APP_ID})))["id"] == APP_ID
    other_key = signed({"iat": now, "exp": now + 60, "iss": str(APP_ID)}, _other_private_key())
    expired = signed({"iat": now - 1200, "exp": now - 700, "iss": APP_ID})
    too_long = signed({"iat": now, "exp": now + 3600, "iss": APP_ID})
    wrong_app = get_jwt(app_id="999", private_key=make_app_key()[0])
    for bad in (other_key, expired, too_long, wrong_app, "not.a.jwt"):
        with pytest.raises(gidgethub.BadRequest) as caught:
            await app.post(f"/app/installations/{INSTALLATION}/access_tokens", data=b"", jwt=bad)
        assert caught.value.status_code == 401
        assert str(caught.value) == "A JSON web token could not be decoded"


async def test_jwt_only_on_app_endpoints_and_tokens_expire(session: aiohttp.ClientSession,
                                                          emulator: GitHubEmulator) -> None:
    app = app_client(session, emulator)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await app.getitem(f"/repos/{REPO}", jwt=get_jwt(app_id=str(APP_ID), private_key=make_app_key()[0]))
    assert (caught.value.status_code, str(caught.value)) == (401, "Bad credentials")
    gh = await installation_client(session, emulator)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem("/app")
    assert caught.value.status_code == 401
    emulator.add_repo("octo/secret")
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem("/repos/octo/secret")
    assert caught.value.status_code == 404
    emulator.expire_tokens()
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem(f"/repos/{REPO}")
    assert (caught.value.status_code, str(caught.value)) == (401, "Bad credentials")
    assert emulator.calls[-1].installation_id == INSTALLATION


async def test_token_ttl_is_honoured(session: aiohttp.ClientSession, emulator: GitHubEmulator) -> None:
    emulator.token_ttl = -1
    gh = await installation_client(session, emulator)
    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(f"/repos/{REPO}")


# ---------------------------------------------------------------------------------------- contents

async def test_contents_round_trip_with_stale_and_missing_sha(gh: gidgethub.aiohttp.GitHubAPI,
                                                             emulator: GitHubEmulator) -> None:
    data = b"x" * 100
    emulator.commit(REPO, "main", {"deploy/values.yaml": data})
    got = await gh.getitem(f"/repos/{REPO}/contents/deploy/values.yaml{{?ref}}", url_vars={"ref": "main"})
    assert got["sha"] == blob_sha(data) and got["encoding"] == "base64" and got["type"] == "file"
    assert all(len(line) <= 60 for line in got["content"].splitlines()) and "\n" in got["content"]
    assert base64.b64decode(got["content"]) == data
    put = f"/repos/{REPO}/contents/deploy/values.yaml"
    new = base64.b64encode(b"image: v2\n").decode()
    with pytest.raises(gidgethub.BadRequest) as missing:
        await gh.put(put, data={"message": "bump", "content": new})
    assert missing.value.status_code == 422 and '"sha" wasn\'t supplied' in str(missing.value)
    with pytest.raises(gidgethub.BadRequest) as stale:
        await gh.put(put, data={"message": "bump", "content": new, "sha": blob_sha(b"old")})
    assert stale.value.status_code == 409
    result = await gh.put(put, data={"message": "bump", "content": new, "sha": got["sha"], "branch": "main"})
    assert result["commit"]["verification"]["verified"] is True
    assert result["content"]["sha"] == blob_sha(b"image: v2\n")
    assert emulator.branch_sha(REPO, "main") == result["commit"]["sha"]
    assert emulator.file_at(REPO, "main", "deploy/values.yaml") == b"image: v2\n"
    commit = await gh.getitem(f"/repos/{REPO}/commits/{{sha}}", url_vars={"sha": result["commit"]["sha"][:7]})
    assert commit["commit"]["committer"]["name"] == "flops-bot[bot]"
    assert commit["files"] == [{**commit["files"][0], "filename": "deploy/values.yaml", "status": "modified"}]


async def test_contents_missing_file_is_404(gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    emulator.commit(REPO, "main", {"README.md": "hi"})
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem(f"/repos/{REPO}/contents/.github/flops.yml")
    assert caught.value.status_code == 404
    created = await gh.put(f"/repos/{REPO}/contents/new.txt",
                           data={"message": "add", "content": base64.b64encode(b"n").decode()})
    assert created["content"]["path"] == "new.txt"
    assert emulator.calls_to("PUT", r"/contents/new\.txt$")[0].status == 201


# ---------------------------------------------------------------------------------------- check runs

async def test_check_run_lifecycle(gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    sha = emulator.commit(REPO, "main", {"a": "1"})
    run = await gh.post(f"/repos/{REPO}/check-runs", data={"name": "flops/build", "head_sha": sha,
                                                            "status": "in_progress", "external_id": "job-1",
                                                            "output": {"title": "Building", "summary": "..."}})
    assert (run["status"], run["conclusion"], run["app"]["id"]) == ("in_progress", None, APP_ID)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.patch(f"/repos/{REPO}/check-runs/{run['id']}", data={"status": "completed"})
    assert caught.value.status_code == 422
    with pytest.raises(gidgethub.BadRequest):
        await gh.patch(f"/repos/{REPO}/check-runs/{run['id']}",
                       data={"conclusion": "success", "output": {"title": "t", "summary": "s" * 65536}})
    assert emulator.check_runs[run["id"]]["status"] == "in_progress"
    done = await gh.patch(f"/repos/{REPO}/check-runs/{run['id']}",
                          data={"conclusion": "failure", "output": {"title": "Failed", "summary": "boom"}})
    assert (done["status"], done["conclusion"], done["output"]["summary"]) == ("completed", "failure", "boom")
    assert done["completed_at"].endswith("Z")
    again = await gh.post(f"/repos/{REPO}/check-runs", data={"name": "flops/build", "head_sha": sha})
    listed = await gh.getitem(f"/repos/{REPO}/commits/main/check-runs{{?check_name}}",
                              url_vars={"check_name": "flops/build"})
    assert listed["total_count"] == 1 and listed["check_runs"][0]["id"] == again["id"]
    everything = await gh.getitem(f"/repos/{REPO}/commits/{sha}/check-runs?filter=all")
    assert [r["id"] for r in everything["check_runs"]] == [again["id"], run["id"]]
    assert [r["id"] for r in emulator.check_runs_for(REPO, sha, "flops/build")] == [run["id"], again["id"]]


# ---------------------------------------------------------------------------------------- compare

async def test_compare_follows_real_ancestry(gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    root = emulator.commit(REPO, "main", {"a": "1", "b": "1"})
    main_1 = emulator.commit(REPO, "main", {"a": "2"})
    side = emulator.commit(REPO, "side", {"b": None, "c": "new"}, parents=[root])
    side_2 = emulator.commit(REPO, "side", {"c": "newer"})
    ahead = await gh.getitem(f"/repos/{REPO}/compare/{root}...{main_1}")
    assert (ahead["status"], ahead["ahead_by"], ahead["behind_by"]) == ("ahead", 1, 0)
    behind = await gh.getitem(f"/repos/{REPO}/compare/{{spec}}", url_vars={"spec": f"{main_1}...{root}"})
    assert (behind["status"], behind["behind_by"]) == ("behind", 1)
    diverged = await gh.getitem(f"/repos/{REPO}/compare/main...side")
    assert (diverged["status"], diverged["ahead_by"], diverged["behind_by"]) == ("diverged", 2, 1)
    assert diverged["merge_base_commit"]["sha"] == root
    assert [c["sha"] for c in diverged["commits"]] == [side, side_2]
    assert {f["filename"]: f["status"] for f in diverged["files"]} == {"b": "removed", "c": "added"}
    same = await gh.getitem(f"/repos/{REPO}/compare/{main_1}...main")
    assert (same["status"], same["total_commits"], same["files"]) == ("identical", 0, [])
    history = await gh.getitem(f"/repos/{REPO}/commits{{?sha}}", url_vars={"sha": side_2})
    assert [c["sha"] for c in history] == [side_2, side, root]


async def test_compare_pages_its_commits_oldest_first_with_the_files_on_page_one(
        gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    root = emulator.commit(REPO, "main", {"a": "0"})
    shas = [emulator.commit(REPO, "main", {"a": str(i)}) for i in range(1, 6)]
    first = await gh.getitem(f"/repos/{REPO}/compare/{root}...main{{?per_page,page}}",
                             url_vars={"per_page": "2", "page": "1"})
    third = await gh.getitem(f"/repos/{REPO}/compare/{root}...main{{?per_page,page}}",
                             url_vars={"per_page": "2", "page": "3"})
    assert first["total_commits"] == 5 and [c["sha"] for c in first["commits"]] == shas[:2] and first["files"]
    assert [c["sha"] for c in third["commits"]] == shas[4:] and third["files"] == []
    unpaged = await gh.getitem(f"/repos/{REPO}/compare/{root}...main")
    assert [c["sha"] for c in unpaged["commits"]] == shas


async def test_the_pulls_of_a_commit_are_its_merged_pr_and_the_prs_it_heads(
        gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    base = emulator.commit(REPO, "main", {"a": "0"})
    side = emulator.commit(REPO, "feature", {"b": "1"}, parents=[base])
    emulator.add_pull(REPO, 5, side, base_branch="main", user="dev")
    merge = emulator.commit(REPO, "main", {"b": "1"}, parents=[base, side])
    emulator.merged(REPO, 5, merge)
    [pull] = await gh.getitem(f"/repos/{REPO}/commits/{merge}/pulls")
    assert (pull["number"], pull["state"], pull["merge_commit_sha"], pull["user"]["login"]) == (5, "closed", merge, "dev")
    assert pull["merged_at"] is not None
    assert [p["number"] for p in await gh.getitem(f"/repos/{REPO}/commits/{side}/pulls")] == [5]
    assert await gh.getitem(f"/repos/{REPO}/commits/{base}/pulls") == []


# ---------------------------------------------------------------------------------------- tarball

async def test_trees_list_blob_ids_as_git_does_and_truncate_past_the_limit(gh: gidgethub.aiohttp.GitHubAPI,
                                                                          emulator: GitHubEmulator) -> None:
    sha = emulator.commit(REPO, "main", {"requirements.txt": "numpy\n", "src/app/main.py": "print(1)\n"})
    tree = await gh.getitem(f"/repos/{REPO}/git/trees/{sha}?recursive=1")
    commit = await gh.getitem(f"/repos/{REPO}/commits/{sha}")
    assert tree["truncated"] is False and tree["sha"] == commit["commit"]["tree"]["sha"]
    entries = {e["path"]: (e["type"], e["mode"], e["sha"]) for e in tree["tree"]}
    assert entries["requirements.txt"] == ("blob", "100644", blob_sha(b"numpy\n"))
    assert entries["src/app/main.py"][0] == "blob"
    assert entries["src"][:2] == entries["src/app"][:2] == ("tree", "040000")
    top = await gh.getitem(f"/repos/{REPO}/git/trees/main")  # a branch names its head's tree; not recursive
    assert sorted(e["path"] for e in top["tree"]) == ["requirements.txt", "src"]
    assert (await gh.getitem(f"/repos/{REPO}/git/trees/{tree['sha']}"))["sha"] == tree["sha"]  # by the tree's own id
    emulator.tree_entry_limit = 2
    cut = await gh.getitem(f"/repos/{REPO}/git/trees/{sha}?recursive=1")
    assert cut["truncated"] is True and len(cut["tree"]) == 2
    with pytest.raises(gidgethub.BadRequest):
        await gh.getitem(f"/repos/{REPO}/git/trees/{'0' * 40}")


async def test_tarball_redirects_to_a_real_tarball(session: aiohttp.ClientSession, emulator: GitHubEmulator,
                                                  gh: gidgethub.aiohttp.GitHubAPI) -> None:
    sha = emulator.commit(REPO, "main", {"Dockerfile": "FROM python\n", "src/pkg/m.py": b"print(1)\n"})
    token = gh.oauth_token
    async with session.get(f"{emulator.url}/repos/{REPO}/tarball/{sha}", allow_redirects=False,
                           headers={"Authorization": f"token {token}"}) as redirect:
        assert redirect.status == 302
        assert redirect.headers["Location"].endswith(f"/legacy.tar.gz/{sha}")
    async with session.get(f"{emulator.url}/repos/{REPO}/tarball/main",
                           headers={"Authorization": f"token {token}"}) as response:
        assert response.status == 200 and response.content_type == "application/x-gzip"
        body = await response.read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        top = f"octo-app-{sha[:7]}"
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert {m.name for m in tar.getmembers() if m.isdir()} >= {top, f"{top}/src", f"{top}/src/pkg"}
        assert tar.pax_headers.get("comment") == sha
    assert files == {f"{top}/Dockerfile": b"FROM python\n", f"{top}/src/pkg/m.py": b"print(1)\n"}


# ---------------------------------------------------------------------------------------- comments

async def test_comments_paginate_edit_and_react(gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    for i in range(5):
        await gh.post(f"/repos/{REPO}/issues/{{number}}/comments", url_vars={"number": "3"}, data={"body": f"c{i}"})
    bodies = [c["body"] async for c in gh.getiter(f"/repos/{REPO}/issues/3/comments{{?per_page}}",
                                                  url_vars={"per_page": "2"})]
    assert bodies == ["c0", "c1", "c2", "c3", "c4"]
    assert len(emulator.calls_to("GET", r"/issues/3/comments$")) == 3
    first = emulator.comments_on(REPO, 3)[0]
    assert first["user"] == {**first["user"], "login": "flops-bot[bot]", "type": "Bot"}
    edited = await gh.patch(f"/repos/{REPO}/issues/comments/{first['id']}", data={"body": "edited"})
    assert edited["body"] == "edited"
    url = f"/repos/{REPO}/issues/comments/{first['id']}/reactions"
    await gh.post(url, data={"content": "eyes"})
    await gh.post(url, data={"content": "eyes"})
    assert [c.status for c in emulator.calls_to("POST", r"/reactions$")] == [201, 200]
    assert emulator.reactions == [{**emulator.reactions[0], "comment_id": first["id"], "content": "eyes",
                                   "user": "flops-bot[bot]"}]
    await gh.delete(f"/repos/{REPO}/issues/comments/{first['id']}")
    assert len(emulator.comments_on(REPO, 3)) == 4


async def test_permissions_and_pulls(gh: gidgethub.aiohttp.GitHubAPI, emulator: GitHubEmulator) -> None:
    emulator.set_permission(REPO, "maintainer", "maintain")
    perm = await gh.getitem(f"/repos/{REPO}/collaborators/maintainer/permission")
    assert (perm["permission"], perm["role_name"]) == ("write", "maintain")
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem(f"/repos/{REPO}/collaborators/stranger/permission")
    assert caught.value.status_code == 404
    base = emulator.commit(REPO, "main", {"a": "1"})
    ref = await gh.getitem(f"/repos/{REPO}/git/ref/heads/main")
    assert ref["object"] == {**ref["object"], "sha": base, "type": "commit"}
    await gh.post(f"/repos/{REPO}/git/refs", data={"ref": "refs/heads/bump", "sha": base})
    with pytest.raises(gidgethub.BadRequest):
        await gh.post(f"/repos/{REPO}/git/refs", data={"ref": "refs/heads/bump", "sha": base})
    pull = await gh.post(f"/repos/{REPO}/pulls", data={"title": "Bump", "head": "bump", "base": "main"})
    assert (pull["number"], pull["head"]["sha"], pull["head"]["repo"]["fork"]) == (1, base, False)
    with pytest.raises(gidgethub.ValidationError) as duplicate:
        await gh.post(f"/repos/{REPO}/pulls", data={"title": "Bump", "head": "octo:bump", "base": "main"})
    assert "A pull request already exists" in str(duplicate.value)
    moved = emulator.commit(REPO, "bump", {"a": "2"})
    open_pulls = await gh.getitem(f"/repos/{REPO}/pulls{{?state,head,base}}",
                                  url_vars={"state": "open", "head": "octo:bump", "base": "main"})
    assert [p["head"]["sha"] for p in open_pulls] == [moved]
    await gh.patch(f"/repos/{REPO}/pulls/1", data={"state": "closed"})
    assert emulator.pulls[(REPO, 1)]["state"] == "closed"


async def test_matching_refs_lists_the_branches_under_a_prefix_as_an_array(gh: gidgethub.aiohttp.GitHubAPI,
                                                                           emulator: GitHubEmulator) -> None:
    base = emulator.commit(REPO, "main", {"a": "1"})
    queued = emulator.commit(REPO, f"gh-readonly-queue/main/pr-7-{base}", {"b": "1"}, parents=[base])
    emulator.commit(REPO, "gh-readonly-queue/other/pr-8-x", {"c": "1"}, parents=[base])
    refs = [r async for r in gh.getiter(f"/repos/{REPO}/git/matching-refs/heads/gh-readonly-queue/main/")]
    assert [(r["ref"], r["object"]["sha"]) for r in refs] == [(f"refs/heads/gh-readonly-queue/main/pr-7-{base}", queued)]
    assert await gh.getitem(f"/repos/{REPO}/git/matching-refs/heads/nothing-here") == []  # never a 404


# ---------------------------------------------------------------------------------------- faults

async def test_fault_injection_is_fifo_and_recorded(gh: gidgethub.aiohttp.GitHubAPI,
                                                   emulator: GitHubEmulator) -> None:
    emulator.fail_next("GET", r"^/repos/octo/app$", 502, times=2)
    reset = str(int(time.time()) + 30)
    emulator.fail_next("GET", r"^/repos/octo/app$", 403, headers={"X-RateLimit-Remaining": "0",
                                                                  "X-RateLimit-Reset": reset})
    for _ in range(2):
        with pytest.raises(gidgethub.GitHubBroken):
            await gh.getitem(f"/repos/{REPO}")
    with pytest.raises(gidgethub.RateLimitExceeded) as limited:
        await gh.getitem(f"/repos/{REPO}")
    assert limited.value.rate_limit.remaining == 0
    assert (await gh.getitem(f"/repos/{REPO}"))["full_name"] == REPO
    assert [c.status for c in emulator.calls_to("GET", r"^/repos/octo/app$")] == [502, 502, 403, 200]
    emulator.fail_next("POST", r"/check-runs$", 403, headers={"Retry-After": "7"},
                       body={"message": "You have exceeded a secondary rate limit."})
    with pytest.raises(gidgethub.BadRequest) as secondary:
        await gh.post(f"/repos/{REPO}/check-runs", data={"name": "x", "head_sha": "0" * 40})
    assert secondary.value.headers["Retry-After"] == "7"  # type: ignore[index]
    assert "secondary rate limit" in str(secondary.value)


async def test_a_fault_after_applying_keeps_the_effect(gh: gidgethub.aiohttp.GitHubAPI,
                                                       emulator: GitHubEmulator) -> None:
    sha = emulator.commit(REPO, "main", {"README.md": "hi"})
    emulator.fail_after_applying("POST", r"/check-runs$", 502)
    with pytest.raises(gidgethub.GitHubBroken):
        await gh.post(f"/repos/{REPO}/check-runs", data={"name": "ci", "head_sha": sha})
    emulator.fail_after_applying("POST", r"/issues/1/comments$", cut=True)
    with pytest.raises(aiohttp.ClientError):
        await gh.post(f"/repos/{REPO}/issues/1/comments", data={"body": "hi"})
    assert [r["name"] for r in emulator.check_runs_for(REPO, sha)] == ["ci"]  # created, though answered 502
    assert [c["body"] for c in emulator.comments_on(REPO, 1)] == ["hi"]  # created, though never answered
    listed = await gh.getitem(f"/repos/{REPO}/commits/{sha}/check-runs")
    assert [r["name"] for r in listed["check_runs"]] == ["ci"]


async def test_unknown_route_is_json_404(session: aiohttp.ClientSession, emulator: GitHubEmulator) -> None:
    async with session.get(f"{emulator.url}/nope") as response:
        assert response.status == 404
        assert (await response.json())["message"] == "Not Found"
        assert response.headers["X-RateLimit-Resource"] == "core" and "X-GitHub-Request-Id" in response.headers


def _other_private_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# ---------------------------------------------------------------------------------------- webhook deliveries

async def test_webhook_deliveries_are_sent_signed_listed_and_redelivered(session: aiohttp.ClientSession,
                                                                         emulator: GitHubEmulator) -> None:
    """GitHub's documented shapes: newest first, cursor pagination, one entry per attempt (a
    redelivery has a new id, the same guid), status_code 0 when nothing answered; App JWT only."""
    got: list[tuple[str, str, bytes]] = []

    async def hook(request: web.Request) -> web.Response:
        got.append((request.headers["X-GitHub-Delivery"], request.headers["X-Hub-Signature-256"], await request.read()))
        return web.json_response({}, status=202)

    app = web.Application()
    app.router.add_post("/webhook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    emulator.hooks.url, emulator.hooks.secret = f"http://127.0.0.1:{port}/webhook", "s3cret"
    first = await emulator.deliver("push", {"ref": "refs/heads/main", "installation": {"id": INSTALLATION},
                                            "repository": {"id": 5, "full_name": REPO}})
    await runner.cleanup()
    second = await emulator.deliver("pull_request", {"action": "opened", "installation": {"id": INSTALLATION}})
    assert (first.status, first.status_code, second.status_code) == ("OK", 202, 0)
    [(guid, signature, body)] = got
    assert guid == first.guid and signature == "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    jwt = get_jwt(app_id=str(APP_ID), private_key=make_app_key()[0])
    app_gh = app_client(session, emulator)
    page, more, _ = await app_gh._make_request("GET", "/app/hook/deliveries?per_page=1", {}, b"",
                                               "application/vnd.github+json", jwt=jwt)
    assert [d["id"] for d in page] == [second.id] and more is not None and "cursor=v1_" in more
    listed = [d async for d in app_gh.getiter("/app/hook/deliveries?per_page=1", jwt=jwt)]
    assert [d["guid"] for d in listed] == [second.guid, first.guid]
    assert set(listed[1]) >= {"id", "guid", "delivered_at", "redelivery", "duration", "status", "status_code",
                              "event", "action", "installation_id", "repository_id"}
    assert (listed[1]["event"], listed[1]["action"], listed[1]["installation_id"], listed[1]["repository_id"]) == \
        ("push", None, INSTALLATION, 5)
    detail = await app_gh.getitem(f"/app/hook/deliveries/{first.id}", jwt=jwt)
    assert detail["request"]["headers"]["X-GitHub-Event"] == "push" and detail["response"]["payload"] == "{}"
    assert await app_gh.post(f"/app/hook/deliveries/{second.id}/attempts", data={}, jwt=jwt) == {}
    await wait_for(lambda: len(emulator.hooks.of(second.guid)) == 2, what="the redelivery attempt")
    again = emulator.hooks.of(second.guid)[1]
    assert again.redelivery and again.id > second.id and again.status_code == 0  # still nobody there
    gh = await installation_client(session, emulator)
    with pytest.raises(gidgethub.BadRequest) as caught:
        await gh.getitem("/app/hook/deliveries")
    assert caught.value.status_code == 401
