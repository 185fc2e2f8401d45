"""GitHub App authentication and the one GitHub client the bot uses.

- `GitHubApp` signs App JWTs, mints installation tokens (cached until shortly before they
  expire, one per installation) and finds the installation of any repository, so the config
  repo may live in a different installation than the code repo.
- `Client` is gidgethub's aiohttp client plus the bot's single retry policy: 5xx answers are
  retried with exponential backoff, rate limits (primary: `X-RateLimit-Remaining: 0` until
  `X-RateLimit-Reset`; secondary: `Retry-After`) are waited out when the wait is bounded,
  and a rejected installation token is refreshed once.
- `create_once` is the POST that creates a check run or a comment: a 5xx or no answer may come
  after GitHub applied it, so it looks for the object before it tries again (exactly one results).
"""
from __future__ import annotations

import asyncio
import http
import time
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp
import gidgethub
import gidgethub.abc
import gidgethub.aiohttp
from gidgethub.apps import get_jwt

from bot.core.text import timestamp
from bot.platform import logs
from bot.platform.metrics import Metrics
from bot.platform.retry import RetryPolicy

log = logs.get_logger(__name__)

USER_AGENT = "flops-bot"
WRITE = ("admin", "maintain", "write")
ROLES = ("admin", "maintain", "write", "triage", "read")
PERMISSION_TTL = 60.0
PERMISSION_CACHE_SIZE = 4096
INSTALLATION_TTL = 600.0  # seconds a repository's installation id is trusted before it is looked up again
TOKEN_REFRESH_MARGIN = 300.0  # seconds before expiry at which a cached token is renewed
JWT_REUSE = 240.0  # seconds an App JWT (valid 9 minutes) is reused: making one parses the RSA key (~50 ms of CPU)

# Set while `create_once` posts: the client then hands a 5xx or a missing answer back at once, since
# GitHub may have applied the POST. Every other POST keeps the client's retries, because a repeat is
# harmless: an installation token (a second token), a reaction (GitHub answers the existing one), a git
# ref or a pull request (the repeat answers 422 "already exists", which bot.flows.config_repo turns into
# moving the ref or finding the open PR); blobs and trees are content-addressed (the same object again),
# and a ref update names its sha (idempotent). A contents PUT carries the blob sha it replaces: repeated
# after it succeeded it answers 409, and the deploy re-reads the file and finds its edit already there.
_CREATING: ContextVar[bool] = ContextVar("flops_github_creating", default=False)
# Set while a delivery is processed again that a process which died may have half processed (its
# first pass after a crash asks for what that process had answered 202): `create_once` then looks
# for the object before it posts, so a check run or comment the dead process made is not made twice.
LOOK_FIRST: ContextVar[bool] = ContextVar("flops_github_look_first", default=False)
Find = Callable[[], Awaitable[dict[str, Any] | None]]

def rate_limit_wait(status: int, headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait before retrying a rate-limited answer, or None when it is no rate limit."""
    if status not in (403, 429):
        return None
    retry_after = headers.get("retry-after") or headers.get("Retry-After")
    if retry_after and retry_after.strip().isdigit():
        return float(retry_after)
    remaining = headers.get("x-ratelimit-remaining") or headers.get("X-RateLimit-Remaining")
    reset = headers.get("x-ratelimit-reset") or headers.get("X-RateLimit-Reset")
    if remaining == "0" and reset and reset.strip().isdigit():
        return max(0.0, float(reset) - now) + 1.0
    if status == 429:
        return 60.0
    return None


class Client(gidgethub.aiohttp.GitHubAPI):
    """gidgethub client with retries, metrics and (for installations) self-refreshing tokens."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        policy: RetryPolicy,
        metrics: Metrics,
        token: Callable[[bool], Awaitable[str]] | None = None,
        jwt: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(session, USER_AGENT, base_url=base_url)
        self._policy = policy
        self._metrics = metrics
        self._token = token
        self._jwt = jwt
        self._refresh_token = False

    async def _request(
        self, method: str, url: str, headers: Mapping[str, str], body: bytes = b""
    ) -> tuple[int, Mapping[str, str], bytes]:
        headers = dict(headers)
        if self._token is not None:
            headers["authorization"] = f"token {await self._token(self._refresh_token)}"
            self._refresh_token = False
        elif self._jwt is not None:
            headers["authorization"] = f"bearer {self._jwt()}"
        for attempt in range(1, self._policy.attempts + 1):
            try:
                status, resp_headers, data = await super()._request(method, url, headers, body)
                break
            except (aiohttp.ClientError, TimeoutError) as exc:  # no answer at all: back off, retry
                self._metrics.github_call(method, "error", None)
                if attempt == self._policy.attempts or (method == "POST" and _CREATING.get()):
                    raise gidgethub.GitHubBroken(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                                 f"GitHub unreachable at {self.base_url}: {exc!r}") from exc
                log.warning("github unreachable; retrying", extra={"method": method, "url": url, "attempt": attempt})
                await self._policy.pause(attempt)
        self._metrics.github_call(method, str(status), resp_headers.get("x-ratelimit-remaining"))
        return status, resp_headers, data

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    async def sleep(self, seconds: float) -> None:
        await self._policy.sleep(seconds)

    async def handle_rate_limit_error(
        self, *, method: str, url: str, exception: gidgethub.HTTPException, attempt: int
    ) -> bool:
        if attempt >= self._policy.attempts:
            return False
        status = int(exception.status_code)
        if status >= 500 and method == "POST" and _CREATING.get():  # maybe applied: create_once looks first
            return False
        if status == 401 and self._token is not None and attempt == 1:
            self._refresh_token = True
            return True
        wait = rate_limit_wait(status, getattr(exception, "headers", None) or {}, time.time())
        if wait is None and status >= 500:
            wait = self._policy.backoff(attempt)
        if wait is None or wait > self._policy.max_rate_limit_wait:
            return False
        log.warning("github retry", extra={"status": status, "method": method, "url": url, "wait": round(wait, 2)})
        await self.sleep(wait)
        return True


async def create_once(gh: gidgethub.abc.GitHubAPI, url: str, data: dict[str, Any], *, find: Find,
                      url_vars: Mapping[str, str] | None = None) -> dict[str, Any]:
    """POST `data` to create one object. After a 5xx or no answer, `find` looks for what this POST
    would have created (GitHub may have applied it before failing): found, it is the answer; else the
    POST is tried again after the usual backoff. Exactly one object results."""
    policy = gh.policy if isinstance(gh, Client) else RetryPolicy(attempts=1)
    if LOOK_FIRST.get() and (earlier := await find()) is not None:
        log.info("github create done before a restart; using the object found", extra={"url": url,
                                                                                       "id": earlier.get("id")})
        return earlier
    for attempt in range(1, max(1, policy.attempts) + 1):
        marked = _CREATING.set(True)
        try:
            created: dict[str, Any] = await gh.post(url, url_vars=url_vars or {}, data=data)
            return created
        except gidgethub.GitHubBroken as exc:  # 5xx, or no answer (the client's own GitHubBroken)
            failure = exc
        finally:
            _CREATING.reset(marked)
        found = await find()
        if found is not None:
            log.info("github create failed after it was applied; using the object found",
                     extra={"url": url, "status": int(failure.status_code), "id": found.get("id")})
            return found
        if attempt < policy.attempts:
            log.warning("github create failed and nothing was created; retrying",
                        extra={"url": url, "status": int(failure.status_code), "attempt": attempt})
            await policy.pause(attempt)
    raise failure


@dataclass
class _Token:
    value: str
    expires_at: float


class GitHubApp:
    """The App's identity: JWTs, cached installation tokens, installation lookup."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        app_id: int,
        private_key: str,
        api_url: str,
        metrics: Metrics,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._session = session
        self._app_id = app_id
        self._private_key = private_key
        self._api_url = api_url
        self._metrics = metrics
        self._policy = policy or RetryPolicy()
        self._clock = clock
        self._tokens: dict[int, _Token] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._installations: dict[str, tuple[float, int]] = {}  # repo -> (looked up at, installation id)
        self._app_jwt: tuple[float, str] | None = None  # (made at, JWT)
        self.slug: str | None = None

    def jwt(self) -> str:
        """The App's JWT, made at most every JWT_REUSE seconds: each one costs the event loop an RSA
        key parse, and unknown installations (404) would otherwise make one per delivery."""
        now = self._clock()
        if self._app_jwt is None or not 0 <= now - self._app_jwt[0] < JWT_REUSE:
            self._app_jwt = (now, get_jwt(app_id=str(self._app_id), private_key=self._private_key))
        return self._app_jwt[1]

    @property
    def session(self) -> aiohttp.ClientSession:
        return self._session

    def for_user(self, token: str) -> Client:
        """A client acting as a signed-in user (a user access token from the OAuth flow: bot.platform.oauth)."""
        async def fixed(refresh: bool) -> str:
            return token

        return Client(self._session, base_url=self._api_url, policy=self._policy, metrics=self._metrics, token=fixed)

    def as_app(self) -> Client:
        return Client(self._session, base_url=self._api_url, policy=self._policy, metrics=self._metrics, jwt=self.jwt)

    def for_installation(self, installation_id: int) -> Client:
        async def token(refresh: bool) -> str:
            return await self.installation_token(installation_id, refresh=refresh)

        return Client(self._session, base_url=self._api_url, policy=self._policy, metrics=self._metrics, token=token)

    async def for_repo(self, repo: str) -> Client:
        """A client for whichever installation covers `repo` (e.g. the GitOps config repo)."""
        return self.for_installation(await self.installation_of(repo))

    async def installation_of(self, repo: str) -> int:
        """Looked up once per INSTALLATION_TTL: an App uninstalled and installed again gets a new id."""
        cached = self._installations.get(repo)
        if cached is None or self._clock() - cached[0] > INSTALLATION_TTL:
            data = await self.as_app().getitem("/repos/" + repo + "/installation")
            cached = self._installations[repo] = (self._clock(), int(data["id"]))
        return cached[1]

    async def installation_token(self, installation_id: int, *, refresh: bool = False) -> str:
        lock = self._locks.setdefault(installation_id, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(installation_id)
            if cached and not refresh and cached.expires_at - TOKEN_REFRESH_MARGIN > self._clock():
                return cached.value
            try:
                data = await self.as_app().post("/app/installations/{installation_id}/access_tokens",
                                                url_vars={"installation_id": str(installation_id)}, data=b"")
            except gidgethub.BadRequest as exc:
                if exc.status_code == 404:  # uninstalled: forget it, so the next lookup finds its successor
                    self._installations = {r: v for r, v in self._installations.items() if v[1] != installation_id}
                    self._tokens.pop(installation_id, None)
                raise
            token = _Token(data["token"], timestamp(data["expires_at"]))
            self._tokens[installation_id] = token
            return token.value

    async def download_tarball(self, installation_id: int, repo: str, sha: str, dest: BinaryIO) -> None:
        """GET the commit's source tarball (following GitHub's redirect to codeload) into `dest`."""
        url = f"{self._api_url}/repos/{repo}/tarball/{sha}"
        for attempt in range(1, self._policy.attempts + 1):
            token = await self.installation_token(installation_id, refresh=attempt > 1)
            headers = {"authorization": f"token {token}", "user-agent": USER_AGENT, "accept": "application/vnd.github+json"}
            try:
                async with self._session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as response:
                    self._metrics.github_call("GET", str(response.status), response.headers.get("x-ratelimit-remaining"))
                    if response.status == 200:
                        dest.seek(0)
                        dest.truncate()
                        async for chunk in response.content.iter_chunked(1 << 16):
                            dest.write(chunk)
                        return
                    retryable = response.status >= 500 or response.status == 401
                    if not retryable or attempt == self._policy.attempts:
                        raise gidgethub.HTTPException(http.HTTPStatus(response.status),
                                                      f"tarball of {repo}@{sha[:7]}: HTTP {response.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:  # refused, reset, cut off mid-download
                self._metrics.github_call("GET", "error", None)
                if attempt == self._policy.attempts:
                    raise gidgethub.GitHubBroken(http.HTTPStatus.SERVICE_UNAVAILABLE,
                                                 f"tarball of {repo}@{sha[:7]}: {exc!r}") from exc
            await self._policy.pause(attempt)

    async def bot_login(self) -> str:
        """The login the App's comments carry (`<slug>[bot]`), asked of GitHub once."""
        if self.slug is None:
            await self.check_key()
        return f"{self.slug}[bot]"

    async def check_key(self) -> dict[str, Any]:
        """GET /app with a fresh JWT: proves the key and App id belong together."""
        data: dict[str, Any] = await self.as_app().getitem("/app")
        self.slug = data.get("slug")
        return data


class Permissions:
    """Collaborator permission, cached for a minute: `author_association` is never the decision."""

    def __init__(self, ttl: float = PERMISSION_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}

    async def of(self, gh: gidgethub.abc.GitHubAPI, repo: str, user: str) -> str:
        key = (repo, user.lower())
        hit = self._cache.get(key)
        if hit and self._clock() - hit[0] < self._ttl:
            return hit[1]
        try:
            data = await gh.getitem("/repos/" + repo + "/collaborators/{user}/permission", url_vars={"user": user})
            level = permission_level(data)
        except gidgethub.BadRequest as exc:  # 404 for non-collaborators of private repos: no permission
            if exc.status_code != 404:
                raise
            level = "none"
        if len(self._cache) >= PERMISSION_CACHE_SIZE:  # bounded: forget the oldest answers first
            for stale in sorted(self._cache, key=lambda k: self._cache[k][0])[: PERMISSION_CACHE_SIZE // 2]:
                del self._cache[stale]
        self._cache[key] = (self._clock(), level)
        return level

    async def can_write(self, gh: gidgethub.abc.GitHubAPI, repo: str, user: str) -> bool:
        return await self.of(gh, repo, user) in WRITE


def permission_level(data: Mapping[str, Any]) -> str:
    """The caller's role: `role_name` when it is one of GitHub's five, else (a custom repository role)
    the base `permission` it maps to (admin, write, read or none)."""
    role = data.get("role_name")
    if role in ROLES:
        return str(role)
    return str(data.get("permission") or "none")


