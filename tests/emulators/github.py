"""A stateful GitHub REST API emulator over real HTTP (aiohttp), standing in for api.github.com.

The bot talks to it exactly as it talks to GitHub: App JWTs (RS256, verified against the App's public
key), installation tokens (``ghs_...``, expiring), JSON shaped like GitHub's REST docs, rate-limit
headers, ``Link`` pagination, a tarball redirect to a "codeload" URL serving a real gzip tarball.
Repositories are real little commit graphs (trees of files, parents, branches), so compare/ancestry,
contents blob shas and tree shas behave like git.

Usage (pytest-asyncio)::

    @pytest.fixture
    async def github() -> AsyncIterator[GitHubEmulator]:
        private, public = make_app_key()              # cached 2048-bit RSA key pair (PEM)
        emulator = GitHubEmulator(app_id=4242, public_key_pem=public)
        await emulator.start()                        # emulator.url == "http://127.0.0.1:PORT"
        yield emulator
        await emulator.stop()

    async def test_something(github: GitHubEmulator) -> None:
        github.add_repo("octo/app", default_branch="main")
        sha = github.commit("octo/app", "main", {"README.md": "hi", "src/a.py": b"print(1)\\n"})
        github.add_installation(77, "octo", ["octo/app"])
        async with aiohttp.ClientSession() as session:
            gh = gidgethub.aiohttp.GitHubAPI(session, "test", base_url=github.url)
            token = await gidgethub.apps.get_installation_access_token(
                gh, installation_id="77", app_id="4242", private_key=private)
            gh = gidgethub.aiohttp.GitHubAPI(session, "test", oauth_token=token["token"], base_url=github.url)
            await gh.post("/repos/octo/app/check-runs", data={"name": "ci", "head_sha": sha})
        assert github.check_runs_for("octo/app", sha, "ci")[0]["status"] == "queued"
        github.fail_next("GET", r"/contents/", 502, times=2)   # fault injection, FIFO per match
        github.fail_after_applying("POST", r"/check-runs$")     # created, then answered 502 (cut=True: no answer)
        github.expire_tokens()                                  # every issued token now answers 401
        assert github.calls_to("POST", r"/check-runs$")[0].installation_id == 77

Conveniences beyond GitHub: ``commit`` on an unknown repository creates it (default branch = that
branch); comments may be posted on any issue number; ``add_comment`` seeds a human comment.
"""
from __future__ import annotations

import asyncio
import base64
import copy
import difflib
import functools
import gzip
import hashlib
import io
import itertools
import json
import math
import re
import secrets
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import unquote, urlencode

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.emulators.deliveries import Delivery, DeliveryLog
from tests.emulators.oauth import OAuth

DOCS = "https://docs.github.com/rest"
RATE_LIMIT = 5000
JWT_ERROR = "A JSON web token could not be decoded"
MAX_TEXT = 65535
CHECK_STATUSES = {"queued", "in_progress", "completed", "waiting", "requested", "pending"}
CONCLUSIONS = {"success", "failure", "neutral", "cancelled", "skipped", "timed_out", "action_required", "stale"}
REACTIONS = {"+1", "-1", "laugh", "confused", "heart", "hooray", "rocket", "eyes"}
ROLE_TO_PERMISSION = {"admin": "admin", "maintain": "write", "write": "write", "triage": "read", "read": "read",
                      "none": "none"}
TOKEN_PERMISSIONS = {"checks": "write", "contents": "write", "issues": "write", "pull_requests": "write",
                     "metadata": "read"}
COMMIT_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
REPO = r"^/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"

Tree = dict[str, bytes]


class Symlink(bytes):
    """A tree entry that is a symbolic link (git mode 120000) to its bytes; in the tarball as one."""
AuthKind = Literal["jwt", "token", "user", "none"]


# --------------------------------------------------------------------------------------------- helpers

@functools.lru_cache(maxsize=1)
def make_app_key() -> tuple[bytes, bytes]:
    """(private_pem, public_pem) of one 2048-bit RSA key, generated once per process."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def blob_sha(data: bytes) -> str:
    """The git blob id of `data`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def tree_sha(files: Tree) -> str:
    """The git tree id of a flat {path: content} mapping (nested trees, git's entry order)."""
    entries: dict[str, tuple[bytes, str]] = {}
    children: dict[str, Tree] = {}
    for path, data in files.items():
        head, _, rest = path.partition("/")
        if rest:
            children.setdefault(head, {})[rest] = data
        else:
            entries[head] = (b"100644", blob_sha(data))
    for name, sub in children.items():
        entries[name + "/"] = (b"40000", tree_sha(sub))
    body = b"".join(mode + b" " + name.rstrip("/").encode() + b"\0" + bytes.fromhex(sha)
                    for name, (mode, sha) in sorted(entries.items()))
    return hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()


def b64_lines(data: bytes) -> str:
    """Base64 the way the contents API sends it: a newline after every 60 characters."""
    text = base64.b64encode(data).decode()
    return "".join(text[i:i + 60] + "\n" for i in range(0, len(text), 60))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return iso(datetime.now(UTC))


def _line_counts(old: bytes | None, new: bytes | None) -> tuple[int, int]:
    a = (old or b"").decode(errors="replace").splitlines()
    b = (new or b"").decode(errors="replace").splitlines()
    adds = dels = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            dels += i2 - i1
            adds += j2 - j1
    return adds, dels


# --------------------------------------------------------------------------------------------- model

@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: dict[str, str]
    status: int
    installation_id: int | None


@dataclass
class Commit:
    sha: str
    tree: Tree
    parents: list[str]
    message: str
    author: str
    committer: str
    date: str


@dataclass
class Repo:
    id: int
    full_name: str
    default_branch: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)
    permissions: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]

    @property
    def name(self) -> str:
        return self.full_name.split("/")[1]

    @property
    def html_url(self) -> str:
        return f"https://github.com/{self.full_name}"


@dataclass
class Installation:
    id: int
    account: str
    repos: list[str]

    def covers(self, full_name: str) -> bool:
        return full_name.casefold() in {r.casefold() for r in self.repos}


@dataclass
class Token:
    value: str
    installation_id: int
    expires_at: float


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    headers: dict[str, str]
    body: dict[str, Any] | None
    times: int
    applied: bool = False  # serve the request first (its effect stays), then answer the fault instead
    cut: bool = False  # no answer at all: the connection is closed (a timeout, as the client sees it)


@dataclass
class Hold:
    """Requests held before they are served (`GitHubEmulator.hold_next`) until `release` is set."""

    method: str
    pattern: re.Pattern[str]
    times: int
    applied: bool = False  # serve the request first (its effect stays), then hold the answer
    arrived: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(frozen=True)
class Auth:
    kind: Literal["jwt", "token", "user", "invalid", "anonymous"]
    key: str
    installation_id: int | None = None
    login: str | None = None  # a user access token's user (`kind == "user"`)


@dataclass
class Req:
    method: str
    path: str
    args: dict[str, str]
    query: dict[str, str]
    body: Any
    auth: Auth
    repo: Repo | None = None

    def get(self, name: str, default: Any = None) -> Any:
        return self.body.get(name, default) if isinstance(self.body, dict) else default


@dataclass
class Reply:
    status: int
    data: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.data = {"message": message, "documentation_url": DOCS, **extra}


def not_found(message: str = "Not Found") -> ApiError:
    return ApiError(404, message)


def invalid(message: str, **extra: Any) -> ApiError:
    return ApiError(422, message, **extra)


Handler = Callable[[Req], "Reply | web.StreamResponse"]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    auth: AuthKind


# --------------------------------------------------------------------------------------------- emulator

class GitHubEmulator:
    """api.github.com for one GitHub App, with state the tests set up and inspect directly."""

    def __init__(self, app_id: int = 1, public_key_pem: bytes | None = None) -> None:
        self.app_id = app_id
        self.slug = "flops-bot"
        self.public_key_pem = public_key_pem or make_app_key()[1]
        self.url = ""
        self.token_ttl = 3600.0
        self.calls: list[Call] = []
        self.repos: dict[str, Repo] = {}
        self.installations: dict[int, Installation] = {}
        self.check_runs: dict[int, dict[str, Any]] = {}
        self.annotations: dict[int, list[dict[str, Any]]] = {}  # check run id -> every annotation posted
        self.comments: dict[int, dict[str, Any]] = {}
        self.reactions: list[dict[str, Any]] = []
        self.pulls: dict[tuple[str, int], dict[str, Any]] = {}
        self.users: set[str] = set()
        self.app_manifests: dict[str, dict[str, Any]] = {}  # App-manifest flow: pending code -> manifest
        self.registered_apps: list[dict[str, Any]] = []  # Apps created from a manifest (conversion answers)
        self.tree_entry_limit = 100_000  # GitHub's: a recursive tree past it answers `truncated: true`
        self._tokens: dict[str, Token] = {}
        self._faults: list[Fault] = []
        self._before: list[tuple[str, re.Pattern[str], Callable[[], object]]] = []
        self._holds: list[Hold] = []
        self._used: dict[str, int] = {}
        self._where: dict[int, tuple[str, int]] = {}  # comment id -> (repo, issue number)
        self._check_repo: dict[int, str] = {}
        self._ids = itertools.count(1)
        self._commit_seq = itertools.count(1)
        self._reset = int(time.time()) + 3600
        self._runner: web.AppRunner | None = None
        self.oauth = OAuth()  # github.com's OAuth web flow for the App's users (tests/emulators/oauth.py)
        self.hooks = DeliveryLog()  # webhook deliveries: set `hooks.url` and `hooks.secret`, then `deliver`
        self._routes = self._build_routes()

    @property
    def bot_login(self) -> str:
        return f"{self.slug}[bot]"

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        # github.com's side of the App-manifest flow (a browser form post, not the REST API)
        app.router.add_post("/settings/apps/new", self._new_app_from_manifest)
        app.router.add_post("/organizations/{org}/settings/apps/new", self._new_app_from_manifest)
        self.oauth.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def calls_to(self, method: str, path_regex: str) -> list[Call]:
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method.upper() and pattern.search(c.path)]

    # ------------------------------------------------------------------ state set-up

    def add_installation(self, installation_id: int, account: str, repos: list[str]) -> None:
        self.installations[installation_id] = Installation(installation_id, account, list(repos))
        self.users.add(account.casefold())

    def add_repo(self, full_name: str, default_branch: str = "main", private: bool = True) -> Repo:
        existing = self._find_repo(full_name)
        if existing is not None:
            return existing
        repo = Repo(id=next(self._ids) + 1000, full_name=full_name, default_branch=default_branch, private=private)
        self.repos[full_name] = repo
        self.users.add(repo.owner.casefold())
        return repo

    def commit(self, full_name: str, branch: str, files: dict[str, bytes | str | None], message: str = "c",
               parents: list[str] | None = None, date: str | None = None, author: str = "octocat") -> str:
        """A new commit on `branch`: the first parent's tree plus `files` (None deletes a path)."""
        repo = self._find_repo(full_name) or self.add_repo(full_name, default_branch=branch)
        if parents is None:
            parents = [repo.branches[branch]] if branch in repo.branches else []
        tree = dict(repo.commits[parents[0]].tree) if parents else {}
        for path, content in files.items():
            if content is None:
                tree.pop(path, None)
            else:
                tree[path] = content.encode() if isinstance(content, str) else content
        sha = self._new_commit(repo, tree, parents, message, author, author, date)
        self._move_branch(repo, branch, sha)
        self.users.add(author.casefold())
        return sha

    def set_permission(self, full_name: str, user: str, permission: str) -> None:
        if permission not in ROLE_TO_PERMISSION:
            raise ValueError(f"unknown permission {permission!r}")
        self._repo_or_fail(full_name).permissions[user.casefold()] = permission
        self.users.add(user.casefold())

    def add_pull(self, full_name: str, number: int, head_sha: str, base_branch: str = "main",
                 head_ref: str = "feature", head_repo: str | None = None, user: str = "octocat",
                 state: str = "open") -> dict[str, Any]:
        repo = self._repo_or_fail(full_name)
        pull = self._pull_json(repo, number, title=f"PR {number}", body="", user=user,
                               head=(head_repo or repo.full_name, head_ref, head_sha),
                               base=(base_branch, repo.branches.get(base_branch, "")))
        pull["state"] = state
        self.pulls[(repo.full_name, number)] = pull
        self.users.add(user.casefold())
        return pull

    def merged(self, full_name: str, number: int, merge_commit: str) -> dict[str, Any]:
        """Record PR `number` as merged by the commit `merge_commit` (already on the base branch)."""
        pull = self.pulls[(self._repo_or_fail(full_name).full_name, number)]
        pull.update(state="closed", merged=True, merged_at=now_iso(), closed_at=now_iso(),
                    merge_commit_sha=merge_commit)
        return pull

    def add_comment(self, full_name: str, number: int, body: str, user: str = "octocat") -> dict[str, Any]:
        """A comment written by someone else (a human by default)."""
        self.users.add(user.casefold())
        return self._new_comment(self._repo_or_fail(full_name), number, body, user, "User")

    def fail_next(self, method: str, path_regex: str, status: int, headers: dict[str, str] | None = None,
                  body: dict[str, Any] | None = None, times: int = 1) -> None:
        self._faults.append(Fault(method.upper(), re.compile(path_regex), status, dict(headers or {}), body, times))

    def fail_after_applying(self, method: str, path_regex: str, status: int = 502, times: int = 1,
                            *, cut: bool = False) -> None:
        """The next matching request is applied (a check run or comment is created), then answered
        `status` (GitHub's 502 after a slow backend) or, with `cut`, not answered at all."""
        self._faults.append(Fault(method.upper(), re.compile(path_regex), status, {}, None, times,
                                  applied=True, cut=cut))

    def issued_tokens(self) -> list[str]:
        """Every installation token handed out so far (tests check none leaks into logs)."""
        return list(self._tokens)

    def before_next(self, method: str, path_regex: str, action: Callable[[], object]) -> None:
        """Run `action` (e.g. a concurrent `commit`) just before the next matching request is served."""
        self._before.append((method.upper(), re.compile(path_regex), action))

    def hold_next(self, method: str, path_regex: str, times: int = 1, *, applied: bool = False) -> Hold:
        """The next `times` matching requests wait, unanswered, until `hold.release` is set: a slow GitHub
        (a barrier for two replicas' requests, or work kept in flight while its process is killed). With
        `applied`, each is served first (a check run is created) and only its answer waits."""
        hold = Hold(method.upper(), re.compile(path_regex), times, applied)
        self._holds.append(hold)
        return hold

    def expire_tokens(self) -> None:
        for token in self._tokens.values():
            token.expires_at = 0.0

    # ------------------------------------------------------------------ read-back helpers

    def check_runs_for(self, full_name: str, head_sha: str, name: str | None = None) -> list[dict[str, Any]]:
        """Check runs on a commit, oldest first."""
        return [run for rid, run in sorted(self.check_runs.items())
                if self._check_repo[rid].casefold() == full_name.casefold() and run["head_sha"] == head_sha
                and (name is None or run["name"] == name)]

    def add_check_run(self, full_name: str, head_sha: str, name: str, *, conclusion: str,
                      app_id: int | None = None) -> dict[str, Any]:
        """A completed check run on a commit, as this App (or the App `app_id`) would have created it."""
        repo = self._repo_or_fail(full_name)
        run = self._check_run_json(repo, next(self._ids), head_sha, name)
        run.update(status="completed", conclusion=conclusion, completed_at=now_iso())
        if app_id is not None:
            run["app"] = {**run["app"], "id": app_id, "slug": f"app-{app_id}"}
        self.check_runs[run["id"]] = run
        self._check_repo[run["id"]] = repo.full_name
        return run

    def comments_on(self, full_name: str, number: int) -> list[dict[str, Any]]:
        key = (full_name.casefold(), number)
        return [c for cid, c in sorted(self.comments.items())
                if (self._where[cid][0].casefold(), self._where[cid][1]) == key]

    def file_at(self, full_name: str, ref: str, path: str) -> bytes | None:
        repo = self._repo_or_fail(full_name)
        sha = self._resolve(repo, ref)
        return None if sha is None else repo.commits[sha].tree.get(path)

    def branch_sha(self, full_name: str, branch: str) -> str:
        return self._repo_or_fail(full_name).branches[branch]

    # ------------------------------------------------------------------ graph internals

    def _find_repo(self, full_name: str) -> Repo | None:
        if full_name in self.repos:
            return self.repos[full_name]
        return next((r for n, r in self.repos.items() if n.casefold() == full_name.casefold()), None)

    def _repo_or_fail(self, full_name: str) -> Repo:
        repo = self._find_repo(full_name)
        if repo is None:
            raise KeyError(f"no repository {full_name!r} (add_repo first)")
        return repo

    def _new_commit(self, repo: Repo, tree: Tree, parents: list[str], message: str, author: str,
                    committer: str, date: str | None) -> str:
        seq = next(self._commit_seq)
        date = date or iso(COMMIT_EPOCH + timedelta(minutes=seq))
        seed = f"{repo.full_name}\0{seq}\0{message}\0{','.join(parents)}\0{date}\0{tree_sha(tree)}"
        sha = hashlib.sha1(seed.encode()).hexdigest()
        repo.commits[sha] = Commit(sha, tree, list(parents), message, author, committer, date)
        return sha

    def _move_branch(self, repo: Repo, branch: str, sha: str) -> None:
        """Point a branch at `sha`; open pull requests from that branch follow (synchronize)."""
        repo.branches[branch] = sha
        for pull in self.pulls.values():
            head = pull["head"]
            if (pull["state"] == "open" and head["ref"] == branch
                    and head["repo"]["full_name"].casefold() == repo.full_name.casefold()):
                head["sha"] = sha

    def _resolve(self, repo: Repo, ref: str) -> str | None:
        """A branch, tag-less ref, full sha or unique sha prefix (>= 7) -> commit sha."""
        ref = ref.removeprefix("refs/heads/").removeprefix("heads/")
        if ref in repo.branches:
            return repo.branches[ref]
        if ref in repo.commits:
            return ref
        if len(ref) >= 7 and re.fullmatch(r"[0-9a-f]+", ref):
            found = [sha for sha in repo.commits if sha.startswith(ref)]
            return found[0] if len(found) == 1 else None
        return None

    def _ancestors(self, repo: Repo, sha: str) -> set[str]:
        seen: set[str] = set()
        stack = [sha]
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(repo.commits[current].parents)
        return seen

    def _topo(self, repo: Repo, head: str, only: set[str]) -> list[str]:
        """Commits of `only` reachable from `head`, parents before children (oldest first)."""
        order: list[str] = []
        done: set[str] = set()
        stack: list[tuple[str, bool]] = [(head, False)]
        while stack:
            sha, expanded = stack.pop()
            if sha in done or sha not in only:
                continue
            if expanded:
                done.add(sha)
                order.append(sha)
                continue
            stack.append((sha, True))
            stack.extend((p, False) for p in reversed(repo.commits[sha].parents) if p not in done)
        return order

    def _merge_base(self, repo: Repo, base: str, head: str) -> str | None:
        common = self._ancestors(repo, base) & self._ancestors(repo, head)
        best = [c for c in common if not any(c != d and c in self._ancestors(repo, d) for d in common)]
        return max(best, key=lambda s: (repo.commits[s].date, s)) if best else None

    def _is_ancestor(self, repo: Repo, older: str, newer: str) -> bool:
        return older in self._ancestors(repo, newer)

    # ------------------------------------------------------------------ HTTP machinery

    def _build_routes(self) -> list[Route]:
        table: list[tuple[str, str, Handler, AuthKind]] = [
            ("GET", r"^/app$", self._get_app, "jwt"),
            ("GET", r"^/app/installations$", self._list_installations, "jwt"),
            ("GET", r"^/app/installations/(?P<id>\d+)$", self._get_installation, "jwt"),
            ("POST", r"^/app/installations/(?P<id>\d+)/access_tokens$", self._create_token, "jwt"),
            ("GET", r"^/app/hook/deliveries$", self._list_deliveries, "jwt"),
            ("GET", r"^/app/hook/deliveries/(?P<id>\d+)$", self._get_delivery, "jwt"),
            ("POST", r"^/app/hook/deliveries/(?P<id>\d+)/attempts$", self._redeliver, "jwt"),
            ("POST", r"^/app-manifests/(?P<code>[^/]+)/conversions$", self._convert_manifest, "none"),
            ("GET", r"^/user$", self._get_user, "user"),
            ("GET", REPO + r"/installation$", self._repo_installation, "jwt"),
            ("GET", r"^/(?:orgs|users)/(?P<account>[^/]+)/installation$", self._account_installation, "jwt"),
            ("GET", REPO + r"$", self._get_repo, "token"),
            ("GET", REPO + r"/commits$", self._list_commits, "token"),
            ("GET", REPO + r"/commits/(?P<ref>.+?)/check-runs$", self._list_check_runs, "token"),
            ("GET", REPO + r"/commits/(?P<ref>[0-9a-f]{40})/pulls$", self._pulls_of_commit, "token"),
            ("GET", REPO + r"/commits/(?P<ref>.+)$", self._get_commit, "token"),
            ("GET", REPO + r"/compare/(?P<spec>.+)$", self._compare, "token"),
            ("GET", REPO + r"/contents/?(?P<path>.*)$", self._get_contents, "token"),
            ("PUT", REPO + r"/contents/(?P<path>.+)$", self._put_contents, "token"),
            ("GET", REPO + r"/git/ref/heads/(?P<branch>.+)$", self._get_ref, "token"),
            ("GET", REPO + r"/git/matching-refs/heads/(?P<prefix>.*)$", self._matching_refs, "token"),
            ("POST", REPO + r"/git/refs$", self._create_ref, "token"),
            ("PATCH", REPO + r"/git/refs/heads/(?P<branch>.+)$", self._update_ref, "token"),
            ("GET", REPO + r"/git/trees/(?P<ref>.+)$", self._get_tree, "token"),
            ("GET", REPO + r"/tarball(?:/(?P<ref>.+))?$", self._tarball, "token"),
            ("GET", r"^/_codeload/(?P<owner>[^/]+)/(?P<name>[^/]+)/legacy\.tar\.gz/(?P<ref>.+)$", self._codeload,
             "none"),
            ("POST", REPO + r"/check-runs$", self._create_check_run, "token"),
            ("GET", REPO + r"/check-runs/(?P<id>\d+)$", self._get_check_run, "token"),
            ("PATCH", REPO + r"/check-runs/(?P<id>\d+)$", self._update_check_run, "token"),
            ("GET", REPO + r"/issues/(?P<number>\d+)/comments$", self._list_comments, "token"),
            ("POST", REPO + r"/issues/(?P<number>\d+)/comments$", self._create_comment, "token"),
            ("GET", REPO + r"/issues/comments/(?P<id>\d+)$", self._get_comment, "token"),
            ("PATCH", REPO + r"/issues/comments/(?P<id>\d+)$", self._update_comment, "token"),
            ("DELETE", REPO + r"/issues/comments/(?P<id>\d+)$", self._delete_comment, "token"),
            ("POST", REPO + r"/issues/comments/(?P<id>\d+)/reactions$", self._create_reaction, "token"),
            ("GET", REPO + r"/collaborators/(?P<user>[^/]+)/permission$", self._get_permission, "token"),
            ("GET", REPO + r"/pulls$", self._list_pulls, "token"),
            ("POST", REPO + r"/pulls$", self._create_pull, "token"),
            ("GET", REPO + r"/pulls/(?P<number>\d+)$", self._get_pull, "token"),
            ("GET", REPO + r"/pulls/(?P<number>\d+)/commits$", self._list_pull_commits, "token"),
            ("PATCH", REPO + r"/pulls/(?P<number>\d+)$", self._update_pull, "token"),
        ]
        return [Route(m, re.compile(p), h, a) for m, p, h, a in table]

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        auth = self._identify(request.headers.get("Authorization", ""), request.remote or "anonymous")
        self._run_before(request.method, request.path)
        hold = self._take_hold(request.method, request.path)
        if hold is not None and not hold.applied:
            await hold.release.wait()
        fault = self._take_fault(request.method, request.path)
        try:
            response = self._fault_response(fault) if fault and not fault.applied else await self._handle(request, auth)
            if hold is not None and hold.applied:
                await hold.release.wait()
            if fault and fault.applied:  # the effect happened; the caller hears of a failure
                response = self._fault_response(fault)
                if fault.cut:
                    self._cut(request)
        except ApiError as exc:
            response = web.json_response(exc.data, status=exc.status)
        except Exception as exc:  # noqa: BLE001 - an emulator bug: say so in the answer, not a bare 500
            response = web.json_response({"message": f"emulator error: {exc!r}", "documentation_url": DOCS},
                                         status=500)
        self._stamp(response, auth.key)
        self.calls.append(Call(request.method, request.path, dict(request.query), response.status,
                               auth.installation_id))
        return response

    async def _handle(self, request: web.Request, auth: Auth) -> web.StreamResponse:
        route, args = self._match(request.method, request.rel_url.raw_path)
        req = Req(request.method, request.path, args, dict(request.query), await self._body(request), auth)
        self._authorize(route, req)
        result = route.handler(req)
        if isinstance(result, web.StreamResponse):
            return result
        if result.status == 204:
            return web.Response(status=204, headers=result.headers)
        return web.json_response(result.data, status=result.status, headers=result.headers)

    def _match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]]:
        for route in self._routes:
            found = route.pattern.match(raw_path)
            if found and route.method == method:
                return route, {k: unquote(v) for k, v in found.groupdict().items() if v is not None}
        raise not_found()

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw.strip():
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ApiError(400, "Problems parsing JSON") from None

    def _identify(self, header: str, remote: str) -> Auth:
        scheme, _, credential = header.strip().partition(" ")
        credential = credential.strip()
        if not credential or scheme.lower() not in ("token", "bearer"):
            return Auth("anonymous", "anon:" + remote)
        if (login := self.oauth.login_of(credential)) is not None:
            return Auth("user", credential, login=login)
        token = self._tokens.get(credential)
        if token is not None:
            alive = token.expires_at > time.time()
            return Auth("token" if alive else "invalid", credential, token.installation_id)
        if scheme.lower() == "bearer" and credential.count(".") == 2 and self._valid_jwt(credential):
            return Auth("jwt", "app")
        return Auth("invalid", "invalid:" + remote)

    def _valid_jwt(self, token: str) -> bool:
        try:
            claims = jwt.decode(token, self.public_key_pem, algorithms=["RS256"], leeway=60,
                                options={"require": ["iat", "exp", "iss"]})
        except jwt.PyJWTError:
            return False
        return str(claims["iss"]) == str(self.app_id) and claims["exp"] - claims["iat"] <= 600

    def _authorize(self, route: Route, req: Req) -> None:
        if route.auth == "jwt" and req.auth.kind != "jwt":
            raise ApiError(401, JWT_ERROR)
        if route.auth == "user" and req.auth.kind != "user":
            raise ApiError(401, "Requires authentication")
        if req.auth.kind == "user" and route.handler == self._get_repo:
            self._authorize_user(req)
            return
        if route.auth != "token":
            return
        if req.auth.kind != "token":
            raise ApiError(401, "Bad credentials")
        if "owner" in req.args:
            full_name = f"{req.args['owner']}/{req.args['name']}"
            installation = self.installations.get(req.auth.installation_id or 0)
            req.repo = self._find_repo(full_name)
            if installation is None or not installation.covers(full_name) or req.repo is None:
                raise not_found()

    def _take_hold(self, method: str, path: str) -> Hold | None:
        for hold in self._holds:
            if hold.method in (method, "*") and hold.pattern.search(path):
                hold.arrived += 1
                if hold.arrived >= hold.times:
                    self._holds.remove(hold)
                return hold
        return None

    def _authorize_user(self, req: Req) -> None:
        """A user access token reads a repository the App is installed on and the user can read."""
        full_name = f"{req.args['owner']}/{req.args['name']}"
        req.repo = self._find_repo(full_name)
        login = (req.auth.login or "").casefold()
        installed = any(inst.covers(full_name) for inst in self.installations.values())
        if req.repo is None or not installed or \
                (req.repo.private and req.repo.permissions.get(login, "none") == "none"):
            raise not_found()

    def _get_user(self, req: Req) -> Reply:
        return Reply(200, self._user(req.auth.login or ""))

    def _run_before(self, method: str, path: str) -> None:
        for hook in self._before:
            if hook[0] in (method, "*") and hook[1].search(path):
                self._before.remove(hook)
                hook[2]()
                return

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method in (method, "*") and fault.pattern.search(path):
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    @staticmethod
    def _cut(request: web.Request) -> None:
        """Close the connection without an answer (the client's read fails: a timeout or reset)."""
        if request.transport is not None:
            request.transport.close()

    @staticmethod
    def _fault_response(fault: Fault) -> web.Response:
        body = fault.body if fault.body is not None else {"message": HTTPStatus(fault.status).phrase,
                                                          "documentation_url": DOCS}
        return web.json_response(body, status=fault.status, headers=fault.headers)

    def _stamp(self, response: web.StreamResponse, key: str) -> None:
        """Rate-limit and request-id headers (a fault's own headers win)."""
        used = self._used[key] = self._used.get(key, 0) + 1
        defaults = {"X-RateLimit-Limit": str(RATE_LIMIT), "X-RateLimit-Remaining": str(max(0, RATE_LIMIT - used)),
                    "X-RateLimit-Reset": str(self._reset), "X-RateLimit-Used": str(used),
                    "X-RateLimit-Resource": "core", "X-GitHub-Media-Type": "github.v3",
                    "X-GitHub-Request-Id": secrets.token_hex(4).upper() + ":" + secrets.token_hex(6).upper()}
        for name, value in defaults.items():
            response.headers.setdefault(name, value)

    def _paginate(self, req: Req, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
        try:
            per_page = min(100, max(1, int(req.query.get("per_page", 30))))
            page = max(1, int(req.query.get("page", 1)))
        except ValueError:
            raise invalid("Invalid pagination parameters") from None
        last = max(1, math.ceil(len(items) / per_page))
        rels = ([("next", page + 1), ("last", last)] if page < last else []) + \
               ([("first", 1), ("prev", page - 1)] if page > 1 else [])
        links = [f'<{self.url}{req.path}?{urlencode({**req.query, "page": p})}>; rel="{rel}"' for rel, p in rels]
        return items[(page - 1) * per_page:page * per_page], ({"Link": ", ".join(links)} if links else {})

    def _page(self, req: Req, items: list[Any]) -> Reply:
        chunk, headers = self._paginate(req, items)
        return Reply(200, chunk, headers)

    # ------------------------------------------------------------------ JSON shapes

    def _user(self, login: str, kind: str = "User") -> dict[str, Any]:
        uid = int(hashlib.sha1(login.casefold().encode()).hexdigest()[:7], 16)
        return {"login": login, "id": uid, "node_id": f"MDQ6VXNlcn{uid}", "type": kind,
                "html_url": f"https://github.com/{login}", "site_admin": False}

    def _bot(self) -> dict[str, Any]:
        return self._user(self.bot_login, "Bot")

    def _app_json(self) -> dict[str, Any]:
        return {"id": self.app_id, "slug": self.slug, "node_id": f"A_{self.app_id}", "name": self.slug,
                "owner": self._user("flops", "Organization"), "html_url": f"https://github.com/apps/{self.slug}",
                "external_url": "https://example.invalid", "permissions": TOKEN_PERMISSIONS,
                "events": ["check_run", "issue_comment", "pull_request", "push"],
                "created_at": iso(COMMIT_EPOCH), "updated_at": iso(COMMIT_EPOCH)}

    def _installation_json(self, inst: Installation) -> dict[str, Any]:
        return {"id": inst.id, "account": self._user(inst.account, "Organization"), "app_id": self.app_id,
                "app_slug": self.slug, "target_type": "Organization", "repository_selection": "selected",
                "access_tokens_url": f"{self.url}/app/installations/{inst.id}/access_tokens",
                "repositories_url": f"{self.url}/installation/repositories",
                "html_url": f"https://github.com/settings/installations/{inst.id}",
                "permissions": TOKEN_PERMISSIONS, "events": self._app_json()["events"], "suspended_at": None}

    def _repo_json(self, repo: Repo) -> dict[str, Any]:
        return {"id": repo.id, "node_id": f"R_{repo.id}", "name": repo.name, "full_name": repo.full_name,
                "owner": self._user(repo.owner, "Organization"), "private": repo.private,
                "visibility": "private" if repo.private else "public", "fork": False,
                "default_branch": repo.default_branch, "html_url": repo.html_url,
                "clone_url": repo.html_url + ".git", "url": f"{self.url}/repos/{repo.full_name}",
                "archived": False, "disabled": False}

    def _commit_json(self, repo: Repo, sha: str, files: bool = True) -> dict[str, Any]:
        c = repo.commits[sha]
        url = f"{self.url}/repos/{repo.full_name}/commits/{sha}"
        person = {"author": ({"name": c.author, "email": f"{c.author}@users.noreply.github.com", "date": c.date}),
                  "committer": {"name": c.committer, "email": f"{c.committer}@users.noreply.github.com",
                                "date": c.date}}
        data: dict[str, Any] = {
            "sha": sha, "node_id": f"C_{sha}", "url": url, "html_url": f"{repo.html_url}/commit/{sha}",
            "commit": {**person, "message": c.message, "tree": {"sha": tree_sha(c.tree)}, "url": url,
                       "comment_count": 0, "verification": {"verified": False, "reason": "unsigned"}},
            "author": self._user(c.author), "committer": self._user(c.committer),
            "parents": [{"sha": p, "url": f"{self.url}/repos/{repo.full_name}/commits/{p}",
                         "html_url": f"{repo.html_url}/commit/{p}"} for p in c.parents]}
        if files:
            before = repo.commits[c.parents[0]].tree if c.parents else {}
            data["files"] = self._diff(repo, before, c.tree, sha)
        return data

    def _diff(self, repo: Repo, old: Tree, new: Tree, ref: str) -> list[dict[str, Any]]:
        result = []
        for path in sorted(old.keys() | new.keys()):
            a, b = old.get(path), new.get(path)
            if a == b:
                continue
            adds, dels = _line_counts(a, b)
            result.append({"sha": blob_sha(b if b is not None else a or b""), "filename": path,
                           "status": "added" if a is None else "removed" if b is None else "modified",
                           "additions": adds, "deletions": dels, "changes": adds + dels,
                           "blob_url": f"{repo.html_url}/blob/{ref}/{path}",
                           "raw_url": f"{repo.html_url}/raw/{ref}/{path}",
                           "contents_url": f"{self.url}/repos/{repo.full_name}/contents/{path}?ref={ref}"})
        return result

    def _file_json(self, repo: Repo, path: str, data: bytes, ref: str) -> dict[str, Any]:
        sha = blob_sha(data)
        api = f"{self.url}/repos/{repo.full_name}/contents/{path}?ref={ref}"
        html = f"{repo.html_url}/blob/{ref}/{path}"
        return {"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "sha": sha, "size": len(data),
                "url": api, "html_url": html, "git_url": f"{self.url}/repos/{repo.full_name}/git/blobs/{sha}",
                "download_url": f"https://raw.githubusercontent.com/{repo.full_name}/{ref}/{path}",
                "_links": {"self": api, "git": None, "html": html}}

    def _check_run_json(self, repo: Repo, rid: int, head_sha: str, name: str) -> dict[str, Any]:
        suite = int(hashlib.sha1(f"{repo.full_name}{head_sha}".encode()).hexdigest()[:8], 16)
        pulls = [{"number": p["number"], "head": {"ref": p["head"]["ref"], "sha": p["head"]["sha"]},
                  "base": {"ref": p["base"]["ref"], "sha": p["base"]["sha"]}}
                 for (full, _), p in self.pulls.items()
                 if full == repo.full_name and p["state"] == "open" and p["head"]["sha"] == head_sha]
        html = f"{repo.html_url}/runs/{rid}"
        return {"id": rid, "node_id": f"CR_{rid}", "head_sha": head_sha, "name": name, "external_id": "",
                "url": f"{self.url}/repos/{repo.full_name}/check-runs/{rid}", "html_url": html,
                "details_url": html, "status": "queued", "conclusion": None, "started_at": now_iso(),
                "completed_at": None, "check_suite": {"id": suite}, "pull_requests": pulls,
                "app": {"id": self.app_id, "slug": self.slug, "name": self.slug, "owner": self._user("flops")},
                "output": {"title": None, "summary": None, "text": None, "annotations_count": 0,
                           "annotations_url": f"{self.url}/repos/{repo.full_name}/check-runs/{rid}/annotations"}}

    def _pull_json(self, repo: Repo, number: int, *, title: str, body: str, user: str,
                   head: tuple[str, str, str], base: tuple[str, str]) -> dict[str, Any]:
        head_repo, head_ref, head_sha = head
        head_found = self._find_repo(head_repo)
        head_repo_json: dict[str, Any] = self._repo_json(head_found) if head_found else {"full_name": head_repo}
        head_repo_json["fork"] = head_repo.casefold() != repo.full_name.casefold()
        stamp = now_iso()
        return {"id": next(self._ids), "node_id": f"PR_{repo.id}_{number}", "number": number, "state": "open",
                "title": title, "body": body, "draft": False, "locked": False, "merged": False,
                "url": f"{self.url}/repos/{repo.full_name}/pulls/{number}",
                "html_url": f"{repo.html_url}/pull/{number}", "user": self._user(user),
                "head": {"label": f"{head_repo.split('/')[0]}:{head_ref}", "ref": head_ref, "sha": head_sha,
                         "repo": head_repo_json, "user": self._user(head_repo.split("/")[0])},
                "base": {"label": f"{repo.owner}:{base[0]}", "ref": base[0], "sha": base[1],
                         "repo": self._repo_json(repo), "user": self._user(repo.owner)},
                "created_at": stamp, "updated_at": stamp, "closed_at": None, "merged_at": None,
                "merge_commit_sha": None, "labels": [], "author_association": "MEMBER"}

    # ------------------------------------------------------------------ app endpoints

    def _get_app(self, req: Req) -> Reply:
        return Reply(200, self._app_json())

    async def _new_app_from_manifest(self, request: web.Request) -> web.Response:
        """`POST https://github.com/settings/apps/new` with the form field `manifest`: the operator
        confirms, GitHub creates the App and redirects to `redirect_url?code=...&state=...`."""
        form = await request.post()
        try:
            data = json.loads(str(form.get("manifest", "")))
        except ValueError:
            data = None
        problems = ["manifest is not a JSON object"] if not isinstance(data, dict) else [
            f"{key} is required" for key in ("url", "redirect_url") if not data.get(key)] + (
            ["hook_attributes.url is required"] if not (data.get("hook_attributes") or {}).get("url") else [])
        status = 422 if problems else 302
        self.calls.append(Call(request.method, request.path, dict(request.query), status, None))
        if problems:
            return web.Response(status=422, text="Invalid GitHub App manifest: " + "; ".join(problems))
        code = secrets.token_hex(10)
        self.app_manifests[code] = {"manifest": data, "owner": request.match_info.get("org"), "at": time.time()}
        query = {"code": code, **({"state": request.query["state"]} if "state" in request.query else {})}
        return web.Response(status=302, headers={"Location": f"{data['redirect_url']}?{urlencode(query)}"})

    def _convert_manifest(self, req: Req) -> Reply:
        """`POST /app-manifests/{code}/conversions`: once per code, within the hour. The new App
        becomes the emulator's App (its id and key), as for an operator who now runs it."""
        pending = self.app_manifests.pop(req.args["code"], None)
        if pending is None or time.time() - pending["at"] > 3600:
            raise not_found()
        manifest = pending["manifest"]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode()
        self.public_key_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo)
        self.app_id = 100000 + next(self._ids)
        name = str(manifest.get("name") or f"app-{self.app_id}")
        self.slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        owner = self._user(pending["owner"], "Organization") if pending["owner"] else self._user("octocat")
        answer = {**self._app_json(), "name": name, "owner": owner, "description": manifest.get("description", ""),
                  "external_url": manifest["url"], "permissions": manifest.get("default_permissions", {}),
                  "events": manifest.get("default_events", []), "client_id": "Iv1." + secrets.token_hex(8),
                  "client_secret": secrets.token_hex(20), "webhook_secret": secrets.token_hex(20), "pem": pem,
                  "created_at": now_iso(), "updated_at": now_iso()}
        self.registered_apps.append({**answer, "manifest": manifest})
        self.oauth.add_client(answer["client_id"], answer["client_secret"], manifest.get("callback_urls", [None])[0])
        return Reply(201, answer)

    async def deliver(self, event: str, data: dict[str, Any], *, guid: str | None = None) -> Delivery:
        """GitHub sends `event` to the App's webhook (`hooks.url`) and records the attempt."""
        return await self.hooks.send(event, data, guid=guid)

    def _list_deliveries(self, req: Req) -> Reply:
        try:
            per_page = min(100, max(1, int(req.query.get("per_page", 30))))
        except ValueError:
            raise invalid("Invalid pagination parameters") from None
        chunk, cursor = self.hooks.page(per_page, req.query.get("cursor"))
        headers = {"Link": f'<{self.url}{req.path}?{urlencode({"per_page": per_page, "cursor": cursor})}>; '
                           'rel="next"'} if cursor else {}
        return Reply(200, [d.summary() for d in chunk], headers)

    def _delivery(self, req: Req) -> Delivery:
        found = self.hooks.get(int(req.args["id"]))
        if found is None:
            raise not_found()
        return found

    def _get_delivery(self, req: Req) -> Reply:
        return Reply(200, self._delivery(req).detail(self.hooks.url))

    def _redeliver(self, req: Req) -> Reply:
        self.hooks.redeliver(self._delivery(req))
        return Reply(202, {})

    def _list_installations(self, req: Req) -> Reply:
        return self._page(req, [self._installation_json(i) for _, i in sorted(self.installations.items())])

    def _installation(self, installation_id: str) -> Installation:
        inst = self.installations.get(int(installation_id))
        if inst is None:
            raise not_found()
        return inst

    def _get_installation(self, req: Req) -> Reply:
        return Reply(200, self._installation_json(self._installation(req.args["id"])))

    def _create_token(self, req: Req) -> Reply:
        inst = self._installation(req.args["id"])
        token = Token("ghs_" + secrets.token_urlsafe(27).replace("-", "a").replace("_", "b")[:36], inst.id,
                      time.time() + self.token_ttl)
        self._tokens[token.value] = token
        expires = iso(datetime.fromtimestamp(token.expires_at, UTC))
        return Reply(201, {"token": token.value, "expires_at": expires, "permissions": TOKEN_PERMISSIONS,
                           "repository_selection": "selected"})

    def _repo_installation(self, req: Req) -> Reply:
        full_name = f"{req.args['owner']}/{req.args['name']}"
        for _, inst in sorted(self.installations.items()):
            if inst.covers(full_name):
                return Reply(200, self._installation_json(inst))
        raise not_found()

    def _account_installation(self, req: Req) -> Reply:
        for _, inst in sorted(self.installations.items()):
            if inst.account.casefold() == req.args["account"].casefold():
                return Reply(200, self._installation_json(inst))
        raise not_found()

    # ------------------------------------------------------------------ repository, commits, compare

    @staticmethod
    def _repo(req: Req) -> Repo:
        assert req.repo is not None
        return req.repo

    def _get_repo(self, req: Req) -> Reply:
        return Reply(200, self._repo_json(self._repo(req)))

    def _commit_of(self, repo: Repo, ref: str) -> str:
        sha = self._resolve(repo, ref)
        if sha is None:
            raise invalid(f"No commit found for SHA: {ref}")
        return sha

    def _get_commit(self, req: Req) -> Reply:
        repo = self._repo(req)
        return Reply(200, self._commit_json(repo, self._commit_of(repo, req.args["ref"])))

    def _list_commits(self, req: Req) -> Reply:
        repo = self._repo(req)
        start = self._resolve(repo, req.query.get("sha") or repo.default_branch)
        if start is None:
            if not repo.commits:
                raise ApiError(409, "Git Repository is empty.")
            raise not_found()
        history = list(reversed(self._topo(repo, start, self._ancestors(repo, start))))
        return self._page(req, [self._commit_json(repo, sha, files=False) for sha in history])

    def _pulls_of_commit(self, req: Req) -> Reply:
        """GitHub's "List pull requests associated with a commit": the merged PR whose merge commit it
        is, and the PRs whose head it is (open ones first)."""
        repo, sha = self._repo(req), req.args["ref"]
        found = [p for (name, _), p in self.pulls.items() if name == repo.full_name
                 and sha in (p.get("merge_commit_sha"), p["head"]["sha"])]
        return self._page(req, sorted(found, key=lambda p: (p["state"] != "open", -p["number"])))

    def _compare(self, req: Req) -> Reply:
        repo = self._repo(req)
        base_ref, sep, head_ref = req.args["spec"].partition("...")
        if not sep:
            base_ref, _, head_ref = req.args["spec"].partition("..")
        base, head = self._resolve(repo, base_ref), self._resolve(repo, head_ref)
        if base is None or head is None:
            raise not_found()
        merge_base = self._merge_base(repo, base, head)
        if merge_base is None:
            raise not_found(f"No common ancestor between {base_ref} and {head_ref}.")
        comparison = self._comparison(repo, base, head, merge_base)
        if not {"page", "per_page"} & req.query.keys():
            return Reply(200, comparison)
        # Paginated (GitHub: "use page or per_page to paginate"): the commits page by page, oldest first;
        # the changed files only with page 1.
        ahead = self._ancestors(repo, head) - self._ancestors(repo, base)
        every = [self._commit_json(repo, sha, files=False) for sha in self._topo(repo, head, ahead)]
        chunk, headers = self._paginate(req, every)
        files = comparison["files"] if int(req.query.get("page", 1) or 1) == 1 else []
        return Reply(200, {**comparison, "commits": chunk, "files": files}, headers)

    def _comparison(self, repo: Repo, base: str, head: str, merge_base: str) -> dict[str, Any]:
        head_side, base_side = self._ancestors(repo, head), self._ancestors(repo, base)
        ahead, behind = head_side - base_side, base_side - head_side
        status = ("identical" if not ahead and not behind else "ahead" if not behind
                  else "behind" if not ahead else "diverged")
        commits = self._topo(repo, head, ahead)
        return {"url": f"{self.url}/repos/{repo.full_name}/compare/{base}...{head}",
                "html_url": f"{repo.html_url}/compare/{base}...{head}",
                "permalink_url": f"{repo.html_url}/compare/{repo.owner}:{base[:7]}...{repo.owner}:{head[:7]}",
                "status": status, "ahead_by": len(ahead), "behind_by": len(behind), "total_commits": len(ahead),
                "base_commit": self._commit_json(repo, base, files=False),
                "merge_base_commit": self._commit_json(repo, merge_base, files=False),
                "commits": [self._commit_json(repo, sha, files=False) for sha in commits[:250]],
                "files": self._diff(repo, repo.commits[merge_base].tree, repo.commits[head].tree, head)}

    # ------------------------------------------------------------------ contents

    def _ref_or_default(self, repo: Repo, ref: str | None) -> tuple[str, str]:
        name = ref or repo.default_branch
        sha = self._resolve(repo, name)
        if sha is None:
            raise not_found(f"No commit found for the ref {name}")
        return name, sha

    def _get_contents(self, req: Req) -> Reply:
        repo = self._repo(req)
        ref, sha = self._ref_or_default(repo, req.query.get("ref"))
        path = req.args["path"].strip("/")
        tree = repo.commits[sha].tree
        if path in tree:
            data = tree[path]
            return Reply(200, {**self._file_json(repo, path, data, ref), "encoding": "base64",
                               "content": b64_lines(data)})
        listing = self._listing(repo, tree, path, ref)
        if not listing:
            raise not_found()
        return Reply(200, listing)

    def _listing(self, repo: Repo, tree: Tree, folder: str, ref: str) -> list[dict[str, Any]]:
        prefix = folder + "/" if folder else ""
        names: dict[str, dict[str, Any]] = {}
        for path, data in sorted(tree.items()):
            if not path.startswith(prefix):
                continue
            head, _, rest = path[len(prefix):].partition("/")
            if rest:
                sub = {p[len(prefix + head) + 1:]: d for p, d in tree.items() if p.startswith(prefix + head + "/")}
                names.setdefault(head, {"type": "dir", "name": head, "path": prefix + head, "sha": tree_sha(sub),
                                        "size": 0, "html_url": f"{repo.html_url}/tree/{ref}/{prefix + head}",
                                        "download_url": None})
            else:
                names[head] = self._file_json(repo, path, data, ref)
        return list(names.values())

    def _put_contents(self, req: Req) -> Reply:
        repo = self._repo(req)
        path, message = req.args["path"].strip("/"), req.get("message")
        if not message or req.get("content") is None:
            raise invalid(f"Invalid request.\n\n\"{'message' if not message else 'content'}\" wasn't supplied.")
        branch = req.get("branch") or repo.default_branch
        if branch not in repo.branches and (repo.branches or branch != repo.default_branch):
            raise not_found(f"Branch {branch} not found")
        parent = repo.branches.get(branch)
        current = repo.commits[parent].tree.get(path) if parent else None
        self._check_blob_sha(path, current, req.get("sha"))
        try:
            data = base64.b64decode(req.get("content"))
        except ValueError:
            raise invalid("content is not valid Base64") from None
        author = (req.get("author") or req.get("committer") or {}).get("name") or self.bot_login
        sha = self._new_commit(repo, {**(repo.commits[parent].tree if parent else {}), path: data},
                               [parent] if parent else [], message, author, self.bot_login, None)
        self._move_branch(repo, branch, sha)
        commit = self._commit_json(repo, sha, files=False)
        commit_out = {**commit["commit"], "sha": sha, "html_url": commit["html_url"], "parents": commit["parents"],
                      "verification": {"verified": True, "reason": "valid", "signature": None, "payload": None}}
        return Reply(200 if current is not None else 201,
                     {"content": self._file_json(repo, path, data, branch), "commit": commit_out})

    @staticmethod
    def _check_blob_sha(path: str, current: bytes | None, given: str | None) -> None:
        if current is None:
            return
        if not given:
            raise invalid("Invalid request.\n\n\"sha\" wasn't supplied.")
        if given != blob_sha(current):
            raise ApiError(409, f"{path} does not match {given}")

    # ------------------------------------------------------------------ git refs

    def _ref_json(self, repo: Repo, branch: str) -> dict[str, Any]:
        sha = repo.branches[branch]
        return {"ref": f"refs/heads/{branch}", "node_id": f"REF_{repo.id}_{branch}",
                "url": f"{self.url}/repos/{repo.full_name}/git/refs/heads/{branch}",
                "object": {"sha": sha, "type": "commit",
                           "url": f"{self.url}/repos/{repo.full_name}/git/commits/{sha}"}}

    def _get_ref(self, req: Req) -> Reply:
        repo = self._repo(req)
        if req.args["branch"] not in repo.branches:
            raise not_found()
        return Reply(200, self._ref_json(repo, req.args["branch"]))

    def _matching_refs(self, req: Req) -> Reply:
        """`GET /git/matching-refs/heads/<prefix>`: every branch whose name starts with `prefix`, as an
        array (empty when none does; never 404)."""
        repo = self._repo(req)
        names = [b for b in sorted(repo.branches) if b.startswith(req.args["prefix"])]
        return self._page(req, [self._ref_json(repo, b) for b in names])

    def _create_ref(self, req: Req) -> Reply:
        repo = self._repo(req)
        ref, sha = req.get("ref") or "", req.get("sha") or ""
        if not re.fullmatch(r"refs/heads/[^\s~^:?*\[\\]+", ref) or ref.endswith("/") or ".." in ref:
            raise invalid(f"{ref} is not a valid ref name.")
        if sha not in repo.commits:
            raise invalid("Object does not exist")
        branch = ref.removeprefix("refs/heads/")
        if branch in repo.branches:
            raise invalid("Reference already exists")
        self._move_branch(repo, branch, sha)
        return Reply(201, self._ref_json(repo, branch))

    def _update_ref(self, req: Req) -> Reply:
        repo = self._repo(req)
        branch, sha = req.args["branch"], req.get("sha") or ""
        if branch not in repo.branches:
            raise invalid("Reference does not exist")
        if sha not in repo.commits:
            raise invalid("Object does not exist")
        if not req.get("force") and not self._is_ancestor(repo, repo.branches[branch], sha):
            raise invalid("Update is not a fast forward")
        self._move_branch(repo, branch, sha)
        return Reply(200, self._ref_json(repo, branch))

    # ------------------------------------------------------------------ tarball

    def _get_tree(self, req: Req) -> Reply:
        """GET /repos/{o}/{r}/git/trees/{tree_sha}: a tree by its id, or a commit's or branch's tree;
        `recursive` lists every blob and subtree (paths from the root), truncated past the limit."""
        repo, ref = self._repo(req), req.args["ref"]
        sha = self._resolve(repo, ref)
        files = repo.commits[sha].tree if sha else next(
            (c.tree for c in repo.commits.values() if tree_sha(c.tree) == ref), None)
        if files is None:
            raise not_found()
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(files.items()):
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                sub = {p[len(folder) + 1:]: d for p, d in files.items() if p.startswith(folder + "/")}
                entries.setdefault(folder, {"path": folder, "mode": "040000", "type": "tree", "sha": tree_sha(sub)})
            entries[path] = {"path": path, "mode": "120000" if isinstance(data, Symlink) else "100644",
                             "type": "blob", "sha": blob_sha(data), "size": len(data)}
        listed = [e for p, e in sorted(entries.items()) if req.query.get("recursive") or "/" not in p]
        for entry in listed:
            kind = "trees" if entry["type"] == "tree" else "blobs"
            entry["url"] = f"{self.url}/repos/{repo.full_name}/git/{kind}/{entry['sha']}"
        truncated = len(listed) > self.tree_entry_limit
        root = tree_sha(files)
        return Reply(200, {"sha": root, "url": f"{self.url}/repos/{repo.full_name}/git/trees/{root}",
                           "tree": listed[:self.tree_entry_limit], "truncated": truncated})

    def _tarball(self, req: Req) -> web.StreamResponse:
        repo = self._repo(req)
        _, sha = self._ref_or_default(repo, req.args.get("ref"))
        location = f"{self.url}/_codeload/{repo.full_name}/legacy.tar.gz/{sha}"
        return web.Response(status=302, headers={"Location": location})

    def _codeload(self, req: Req) -> web.StreamResponse:
        repo = self._find_repo(f"{req.args['owner']}/{req.args['name']}")
        sha = self._resolve(repo, req.args["ref"]) if repo else None
        if repo is None or sha is None:
            raise not_found()
        top = f"{repo.owner}-{repo.name}-{sha[:7]}"
        return web.Response(body=self._tar(repo.commits[sha], top), content_type="application/x-gzip",
                            headers={"Content-Disposition": f"attachment; filename={top}.tar.gz"})

    @staticmethod
    def _tar(commit: Commit, top: str) -> bytes:
        mtime = datetime.fromisoformat(commit.date).timestamp()
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=int(mtime)) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT,
                             pax_headers={"comment": commit.sha}) as tar:
            for folder in sorted({top} | _parents(top, commit.tree)):
                info = tarfile.TarInfo(folder + "/")
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o775, int(mtime)
                tar.addfile(info)
            for path, data in sorted(commit.tree.items()):
                info = tarfile.TarInfo(f"{top}/{path}")
                if isinstance(data, Symlink):
                    info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, data.decode(), 0o777, int(mtime)
                    tar.addfile(info)
                    continue
                info.size, info.mode, info.mtime = len(data), 0o664, int(mtime)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    # ------------------------------------------------------------------ check runs

    def _check_run(self, req: Req) -> dict[str, Any]:
        rid = int(req.args["id"])
        if rid not in self.check_runs or self._check_repo[rid].casefold() != self._repo(req).full_name.casefold():
            raise not_found()
        return self.check_runs[rid]

    def _create_check_run(self, req: Req) -> Reply:
        repo = self._repo(req)
        for required in ("name", "head_sha"):
            if not req.get(required):
                raise invalid(f"Invalid request.\n\n\"{required}\" wasn't supplied.")
        head_sha = self._resolve(repo, req.get("head_sha"))
        if head_sha is None or head_sha != req.get("head_sha"):
            raise invalid(f"No commit found for SHA: {req.get('head_sha')}")
        run = self._check_run_json(repo, next(self._ids), head_sha, req.get("name"))
        self._apply_check_update(run, req.body)
        self.check_runs[run["id"]] = run
        self._check_repo[run["id"]] = repo.full_name
        return Reply(201, run)

    def _get_check_run(self, req: Req) -> Reply:
        return Reply(200, self._check_run(req))

    def _update_check_run(self, req: Req) -> Reply:
        run = self._check_run(req)
        updated = copy.deepcopy(run)
        self._apply_check_update(updated, req.body or {})
        run.clear()
        run.update(updated)
        return Reply(200, run)

    def _apply_check_update(self, run: dict[str, Any], body: dict[str, Any]) -> None:
        """Validate like GitHub, then merge `body` into `run` (raises before touching a stored run)."""
        status, conclusion = body.get("status"), body.get("conclusion")
        if status is not None and status not in CHECK_STATUSES:
            raise invalid(f"Invalid request.\n\n{status!r} is not a member of {sorted(CHECK_STATUSES)}.")
        if conclusion is not None and conclusion not in CONCLUSIONS:
            raise invalid(f"Invalid request.\n\n{conclusion!r} is not a member of {sorted(CONCLUSIONS)}.")
        if conclusion is not None:
            status = "completed"
        if status == "completed" and (conclusion or run["conclusion"]) is None:
            raise invalid("Invalid request.\n\nNo conclusion was supplied for a completed check run.")
        for key in ("name", "details_url", "external_id", "started_at", "completed_at"):
            if body.get(key) is not None:
                run[key] = body[key]
        if status is not None:
            run["status"] = status
        if conclusion is not None:
            run["conclusion"] = conclusion
        if run["status"] == "completed" and not run["completed_at"]:
            run["completed_at"] = now_iso()
        if body.get("output") is not None:
            self._apply_output(run["output"], body["output"])
            self.annotations.setdefault(run["id"], []).extend(copy.deepcopy(body["output"].get("annotations") or []))

    @staticmethod
    def _apply_output(output: dict[str, Any], given: dict[str, Any]) -> None:
        if not given.get("title") or given.get("summary") is None:
            raise invalid("Invalid request.\n\nFor 'properties/output', \"title\" and \"summary\" are required.")
        for key in ("summary", "text"):
            if len(given.get(key) or "") > MAX_TEXT:
                raise invalid(f"Invalid request.\n\nOnly {MAX_TEXT} characters are allowed; "
                              f"{len(given[key])} were supplied.")
        annotations = given.get("annotations") or []
        if len(annotations) > 50:
            raise invalid("Invalid request.\n\nAt most 50 annotations are allowed per request.")
        for note in annotations:
            missing = [k for k in ("path", "start_line", "end_line", "annotation_level", "message") if k not in note]
            if missing or note["annotation_level"] not in ("notice", "warning", "failure"):
                raise invalid(f"Invalid request.\n\nAn annotation lacks {missing} or has a bad annotation_level.")
        output.update(title=given["title"], summary=given["summary"], text=given.get("text"),
                      annotations_count=output["annotations_count"] + len(annotations))

    def _list_check_runs(self, req: Req) -> Reply:
        repo = self._repo(req)
        sha = self._commit_of(repo, req.args["ref"])
        runs = [r for r in reversed(self.check_runs_for(repo.full_name, sha))
                if req.query.get("check_name") in (None, r["name"])
                and req.query.get("status") in (None, r["status"])]
        if req.query.get("filter", "latest") == "latest":
            runs = [r for i, r in enumerate(runs) if r["name"] not in {x["name"] for x in runs[:i]}]
        chunk, headers = self._paginate(req, runs)
        return Reply(200, {"total_count": len(runs), "check_runs": chunk}, headers)

    # ------------------------------------------------------------------ comments and reactions

    def _new_comment(self, repo: Repo, number: int, body: str, login: str, kind: str) -> dict[str, Any]:
        cid = next(self._ids)
        where = "pull" if (repo.full_name, number) in self.pulls else "issues"
        stamp = now_iso()
        comment = {"id": cid, "node_id": f"IC_{cid}", "body": body, "user": self._user(login, kind),
                   "url": f"{self.url}/repos/{repo.full_name}/issues/comments/{cid}",
                   "html_url": f"{repo.html_url}/{where}/{number}#issuecomment-{cid}",
                   "issue_url": f"{self.url}/repos/{repo.full_name}/issues/{number}",
                   "created_at": stamp, "updated_at": stamp,
                   "author_association": "NONE" if kind == "Bot" else "MEMBER",
                   "performed_via_github_app": self._app_json() if kind == "Bot" else None}
        self.comments[cid] = comment
        self._where[cid] = (repo.full_name, number)
        return comment

    def _comment(self, req: Req) -> dict[str, Any]:
        cid = int(req.args["id"])
        if cid not in self.comments or self._where[cid][0].casefold() != self._repo(req).full_name.casefold():
            raise not_found()
        return self.comments[cid]

    def _list_comments(self, req: Req) -> Reply:
        return self._page(req, self.comments_on(self._repo(req).full_name, int(req.args["number"])))

    def _create_comment(self, req: Req) -> Reply:
        body = req.get("body")
        if not isinstance(body, str) or not body:
            raise invalid("Invalid request.\n\n\"body\" wasn't supplied.")
        if len(body) > MAX_TEXT:
            raise invalid("Validation Failed", errors=[{"resource": "IssueComment", "code": "custom",
                                                       "field": "body", "message": "body is too long"}])
        return Reply(201, self._new_comment(self._repo(req), int(req.args["number"]), body, self.bot_login, "Bot"))

    def _get_comment(self, req: Req) -> Reply:
        return Reply(200, self._comment(req))

    def _update_comment(self, req: Req) -> Reply:
        comment = self._comment(req)
        if not isinstance(req.get("body"), str):
            raise invalid("Invalid request.\n\n\"body\" wasn't supplied.")
        comment.update(body=req.get("body"), updated_at=now_iso())
        return Reply(200, comment)

    def _delete_comment(self, req: Req) -> Reply:
        cid = self._comment(req)["id"]
        del self.comments[cid], self._where[cid]
        self.reactions = [r for r in self.reactions if r["comment_id"] != cid]
        return Reply(204)

    def _create_reaction(self, req: Req) -> Reply:
        cid, content = self._comment(req)["id"], req.get("content")
        if content not in REACTIONS:
            raise invalid(f"Invalid request.\n\n{content!r} is not a member of {sorted(REACTIONS)}.")
        for reaction in self.reactions:
            if (reaction["comment_id"], reaction["content"], reaction["user"]) == (cid, content, self.bot_login):
                return Reply(200, self._reaction_json(reaction))
        reaction = {"id": next(self._ids), "comment_id": cid, "content": content, "user": self.bot_login,
                    "created_at": now_iso()}
        self.reactions.append(reaction)
        return Reply(201, self._reaction_json(reaction))

    def _reaction_json(self, reaction: dict[str, Any]) -> dict[str, Any]:
        return {"id": reaction["id"], "node_id": f"REA_{reaction['id']}", "content": reaction["content"],
                "user": self._user(reaction["user"], "Bot"), "created_at": reaction["created_at"]}

    # ------------------------------------------------------------------ collaborators

    def _get_permission(self, req: Req) -> Reply:
        repo, user = self._repo(req), req.args["user"]
        if user.casefold() not in self.users:
            raise not_found(f"{user} is not a user")
        role = repo.permissions.get(user.casefold(), "none" if repo.private else "read")
        return Reply(200, {"permission": ROLE_TO_PERMISSION[role], "role_name": role,
                           "user": {**self._user(user), "permissions": self._flags(role)}})

    @staticmethod
    def _flags(role: str) -> dict[str, bool]:
        order = ["read", "triage", "write", "maintain", "admin"]
        rank = order.index(role) if role in order else -1
        return {"pull": rank >= 0, "triage": rank >= 1, "push": rank >= 2, "maintain": rank >= 3, "admin": rank >= 4}

    # ------------------------------------------------------------------ pulls

    def _pull(self, req: Req) -> dict[str, Any]:
        pull = self.pulls.get((self._repo(req).full_name, int(req.args["number"])))
        if pull is None:
            raise not_found()
        return pull

    def _get_pull(self, req: Req) -> Reply:
        return Reply(200, self._pull(req))

    def _list_pull_commits(self, req: Req) -> Reply:
        """`GET /pulls/{n}/commits`: the head's commits not on the base branch, oldest first, at most
        250 (GitHub's cap), paginated."""
        repo, pull = self._repo(req), self._pull(req)
        head, base = pull["head"]["sha"], self._resolve(repo, pull["base"]["ref"])
        ahead = self._ancestors(repo, head) - (self._ancestors(repo, base) if base else set())
        return self._page(req, [self._commit_json(repo, sha, files=False) for sha in self._topo(repo, head, ahead)[:250]])

    def _list_pulls(self, req: Req) -> Reply:
        repo, state = self._repo(req), req.query.get("state", "open")
        found = [p for (full, _), p in self.pulls.items() if full == repo.full_name
                 and state in ("all", p["state"]) and req.query.get("base") in (None, p["base"]["ref"])
                 and req.query.get("head") in (None, p["head"]["label"], p["head"]["repo"]["full_name"]
                                               .split("/")[0])]
        return self._page(req, sorted(found, key=lambda p: p["number"], reverse=True))

    def _create_pull(self, req: Req) -> Reply:
        repo = self._repo(req)
        title, head, base = req.get("title"), req.get("head"), req.get("base")
        if not title or not head or not base:
            missing = [f for f, v in (("title", title), ("head", head), ("base", base)) if not v]
            raise invalid("Validation Failed", errors=[{"resource": "PullRequest", "code": "missing_field",
                                                       "field": f} for f in missing])
        head_owner, _, head_ref = head.rpartition(":")
        head_repo = self._find_repo(f"{head_owner}/{repo.name}") if head_owner else repo
        if head_repo is None or head_ref not in head_repo.branches or base not in repo.branches:
            field_name = "base" if head_repo is not None and head_ref in head_repo.branches else "head"
            raise invalid("Validation Failed", errors=[{"resource": "PullRequest", "code": "invalid",
                                                       "field": field_name}])
        self._refuse_duplicate(repo, head_repo.full_name, head_ref, base)
        number = max([n for (full, n) in self.pulls if full == repo.full_name] + [0]) + 1
        pull = self._pull_json(repo, number, title=title, body=req.get("body") or "", user=self.bot_login,
                               head=(head_repo.full_name, head_ref, head_repo.branches[head_ref]),
                               base=(base, repo.branches[base]))
        pull["user"] = self._bot()
        pull["draft"] = bool(req.get("draft"))
        self.pulls[(repo.full_name, number)] = pull
        return Reply(201, pull)

    def _refuse_duplicate(self, repo: Repo, head_repo: str, head_ref: str, base: str) -> None:
        for (full, _), pull in self.pulls.items():
            if (full == repo.full_name and pull["state"] == "open" and pull["base"]["ref"] == base
                    and pull["head"]["ref"] == head_ref and pull["head"]["repo"]["full_name"] == head_repo):
                label = pull["head"]["label"]
                raise invalid("Validation Failed", errors=[{"resource": "PullRequest", "code": "custom",
                                                           "message": f"A pull request already exists for {label}."}])

    def _update_pull(self, req: Req) -> Reply:
        repo, pull = self._repo(req), self._pull(req)
        state, base = req.get("state"), req.get("base")
        if state is not None and state not in ("open", "closed"):
            raise invalid("Validation Failed", errors=[{"resource": "PullRequest", "code": "invalid",
                                                       "field": "state"}])
        if base is not None and base not in repo.branches:
            raise invalid("Validation Failed", errors=[{"resource": "PullRequest", "code": "invalid",
                                                       "field": "base"}])
        for key in ("title", "body"):
            if req.get(key) is not None:
                pull[key] = req.get(key)
        if base is not None:
            pull["base"].update(ref=base, sha=repo.branches[base], label=f"{repo.owner}:{base}")
        if state is not None:
            pull.update(state=state, closed_at=now_iso() if state == "closed" else None)
        pull["updated_at"] = now_iso()
        return Reply(200, pull)


def _parents(top: str, tree: Iterable[str]) -> set[str]:
    """Every intermediate folder of every path, under `top`."""
    folders: set[str] = set()
    for path in tree:
        parts = path.split("/")[:-1]
        folders.update(f"{top}/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return folders
