"""GitHub's OAuth web flow for the App's users ("Sign in with GitHub" on the run pages), and what a
signed-in user may read, asked with the user's own token and cached a minute.

docs.github.com, "Generating a user access token for a GitHub App": the browser goes to
`<github>/login/oauth/authorize?client_id&redirect_uri&state`, comes back with `code` and `state`;
the bot exchanges the code at `<github>/login/oauth/access_token` (with the client secret) for a
user access token, then reads `GET /user`. A user token reaches only repositories the App is
installed on that the user can read: `GET /repos/{owner}/{repo}` answers 200 for those, 404 else.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlencode

import gidgethub

from bot.core.jobs.contract import web_url
from bot.platform.github import GitHubApp
from bot.platform.settings import SignIn

ACCESS_TTL = 60.0  # seconds an answer "may read" / "may not read" is reused
ACCESS_CACHE_SIZE = 10_000


class SignInFailed(Exception):
    """GitHub refused the code or the client (the message says which; no secret in it)."""


@dataclass(frozen=True)
class User:
    login: str
    token: str


def authorize_url(api_url: str, signin: SignIn, redirect_uri: str, state: str) -> str:
    query = urlencode({"client_id": signin.client_id, "redirect_uri": redirect_uri, "state": state})
    return f"{web_url(api_url)}/login/oauth/authorize?{query}"


async def sign_in(app: GitHubApp, api_url: str, signin: SignIn, code: str, redirect_uri: str) -> User:
    """Exchange the callback's `code` for a user access token and read who it is."""
    form = {"client_id": signin.client_id, "client_secret": signin.client_secret, "code": code,
            "redirect_uri": redirect_uri}
    async with app.session.post(f"{web_url(api_url)}/login/oauth/access_token", data=form,
                                headers={"Accept": "application/json"}) as response:
        if response.status != 200:
            raise SignInFailed(f"GitHub answered {response.status} to the code exchange")
        data = await response.json(content_type=None)
    if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
        error = str(data.get("error") if isinstance(data, dict) else "") or "no access_token"
        raise SignInFailed(f"GitHub refused the sign-in ({error[:80]}); sign in again")
    token = data["access_token"]
    me = await app.for_user(token).getitem("/user")
    return User(login=str(me["login"]), token=token)


class Access:
    """May this user (or anyone, for a public repository) read this repository? GitHub decides; the
    answers are reused for ACCESS_TTL seconds."""

    def __init__(self, app: GitHubApp, clock: Callable[[], float] = time.monotonic) -> None:
        self._app = app
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, bool]] = {}

    async def public(self, repo: str, installation: int) -> bool:
        """The repository is public (asked with the installation's token)."""
        async def ask() -> bool:
            try:
                data = await self._app.for_installation(installation).getitem("/repos/" + repo)
            except gidgethub.BadRequest as exc:  # the App no longer reaches it (uninstalled, renamed): not public
                if exc.status_code in (401, 403, 404):
                    return False
                raise
            return data.get("private") is False and data.get("visibility", "public") == "public"
        return await self._cached(("", repo), ask)

    async def can_read(self, user: User, repo: str) -> bool:
        """The user's token reads the repository (200), or not (404, 403); an expired token raises 401."""
        async def ask() -> bool:
            try:
                await self._app.for_user(user.token).getitem("/repos/" + repo)
            except gidgethub.BadRequest as exc:
                if exc.status_code in (403, 404):
                    return False
                raise
            return True
        return await self._cached((user.login.lower(), repo.lower()), ask)

    async def _cached(self, key: tuple[str, str], ask: Callable[[], Awaitable[bool]]) -> bool:
        hit = self._cache.get(key)
        if hit is not None and self._clock() - hit[0] < ACCESS_TTL:
            return hit[1]
        answer = await ask()
        if len(self._cache) >= ACCESS_CACHE_SIZE:  # bounded: the oldest answers go first
            for stale in sorted(self._cache, key=lambda k: self._cache[k][0])[: ACCESS_CACHE_SIZE // 2]:
                del self._cache[stale]
        self._cache[key] = (self._clock(), answer)
        return answer


def unauthorized(exc: Exception) -> bool:
    """GitHub says the user's token is no good (expired, revoked): sign in again."""
    return isinstance(exc, gidgethub.BadRequest) and exc.status_code == 401
