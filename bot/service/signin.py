"""Sign in with GitHub for the run pages: `/login`, `/auth/callback`, the session cookie, who may read what.

`GET /login?next=/runs/...` sets a short-lived cookie holding a random `state` (and where to go
back) and sends the browser to GitHub's authorize page; `GET /auth/callback?code&state` refuses a
state that is not the cookie's (403), exchanges the code for the user's token and sets the session.
Both cookies are encrypted and signed (Fernet, keyed from GITHUB_CLIENT_SECRET: every replica
reads them, nobody can forge or read one), HttpOnly, Secure, SameSite=Lax, and expire (the state
in 10 minutes, the session in 8 hours, as the user token does).

`POST /logout` (the header's *Sign out* button) clears the session cookie. Only a form of the bot's own pages
does it: the cookie is SameSite=Lax (another site's POST does not carry it) and the request's Origin (or,
without one, its Referer) must be the bot's own.

Who reads a run page: anyone for a public repository unless FLOPS_RUNS_PUBLIC=false; otherwise a
signed-in user GitHub says can read the repository (bot.platform.oauth.Access, a minute's cache).
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from cryptography.fernet import Fernet, InvalidToken

from bot.flows.deps import Deps
from bot.platform import logs, oauth
from bot.platform.github import GitHubApp
from bot.platform.settings import Settings

log = logs.get_logger(__name__)

SESSION_COOKIE = "flops_session"
STATE_COOKIE = "flops_oauth_state"
SESSION_SECONDS = 8 * 3600
STATE_SECONDS = 600
COOKIE_MAX = 3000  # a cookie longer than this is not ours: not decrypted


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    why: str = ""  # "sign-in" when signing in may help, else a sentence for the 403 page


class Sessions:
    """The sign-in state of a browser, in cookies only: a restart or another replica loses nothing."""

    def __init__(self, settings: Settings, github: GitHubApp) -> None:
        self.settings = settings
        self.github = github
        self.access = oauth.Access(github)
        secret = settings.signin.client_secret or secrets.token_hex(32)  # sign-in off: nothing to read back
        digest = hashlib.sha256(b"flops-bot run pages session\0" + secret.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(digest))

    def seal(self, data: dict[str, str]) -> str:
        return self._fernet.encrypt(json.dumps(data).encode()).decode()

    def unseal(self, value: str | None, ttl: int) -> dict[str, str] | None:
        if not value or len(value) > COOKIE_MAX:
            return None
        try:
            data = json.loads(self._fernet.decrypt(value.encode(), ttl=ttl))
        except (InvalidToken, ValueError):
            return None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else None

    def user(self, request: web.Request) -> oauth.User | None:
        data = self.unseal(request.cookies.get(SESSION_COOKIE), SESSION_SECONDS)
        if data is None or not data.get("login") or not data.get("token"):
            return None
        return oauth.User(login=data["login"], token=data["token"])

    async def verdict(self, request: web.Request, repo: str, installation: int) -> Verdict:
        """May this browser read `repo`'s run pages?"""
        if self.settings.signin.runs_public and installation and await self.access.public(repo, installation):
            return Verdict(True)
        user = self.user(request)
        if user is None:
            return Verdict(False, "sign-in")
        try:
            allowed = await self.access.can_read(user, repo)
        except Exception as exc:
            if oauth.unauthorized(exc):
                return Verdict(False, "sign-in")
            raise
        return Verdict(True) if allowed else Verdict(False, f"{user.login} cannot read {repo} on GitHub.")

    def redirect_uri(self, request: web.Request) -> str:
        base = self.settings.public_url or f"{request.scheme}://{request.host}"
        return base + "/auth/callback"


SESSIONS = web.AppKey("sessions", Sessions)
DEPS = web.AppKey("run_pages_deps", Deps)  # the service's Deps, for the run pages (set with SESSIONS)


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a path of the run pages only (never another site)."""
    if value and value.startswith("/runs") and not value.startswith("//") and "\\" not in value \
            and all(32 < ord(c) < 127 for c in value) and len(value) <= 1000:
        return value
    return "/runs"


def set_cookie(response: web.StreamResponse, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", secure=True, httponly=True, samesite="Lax")


async def login(request: web.Request) -> web.StreamResponse:
    """To GitHub's authorize page, with a fresh `state` kept in a cookie (raised: a redirect)."""
    sessions = request.app[SESSIONS]
    signin = sessions.settings.signin
    if not signin.enabled:
        raise web.HTTPNotFound(text="Sign-in is not configured: set GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET.")
    state = secrets.token_urlsafe(24)
    target = oauth.authorize_url(sessions.settings.api_url, signin, sessions.redirect_uri(request), state)
    response = web.HTTPFound(target)
    set_cookie(response, STATE_COOKIE, sessions.seal({"state": state, "next": safe_next(request.query.get("next"))}),
               STATE_SECONDS)
    raise response


async def callback(request: web.Request) -> web.StreamResponse:
    sessions = request.app[SESSIONS]
    if not sessions.settings.signin.enabled:
        raise web.HTTPNotFound(text="Sign-in is not configured.")
    pending = sessions.unseal(request.cookies.get(STATE_COOKIE), STATE_SECONDS)
    state, code = request.query.get("state", ""), request.query.get("code", "")
    if pending is None or not state or not secrets.compare_digest(pending.get("state", ""), state):
        log.warning("sign-in refused: state does not match")
        raise web.HTTPForbidden(text="This sign-in was not started here or took too long. Sign in again.")
    if not code or len(code) > 200:
        raise web.HTTPForbidden(text="GitHub did not grant the sign-in. Sign in again.")
    try:
        user = await oauth.sign_in(sessions.github, sessions.settings.api_url, sessions.settings.signin, code,
                                   sessions.redirect_uri(request))
    except oauth.SignInFailed as exc:
        raise web.HTTPForbidden(text=str(exc)) from None
    log.info("signed in", extra={"user": user.login})
    response = web.HTTPFound(safe_next(pending.get("next")))
    set_cookie(response, SESSION_COOKIE, sessions.seal({"login": user.login, "token": user.token}), SESSION_SECONDS)
    response.del_cookie(STATE_COOKIE, path="/")
    raise response


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def same_origin(request: web.Request, sessions: Sessions) -> bool:
    """Did the bot's own page send this request? Its Origin (or Referer) is FLOPS_PUBLIC_URL's origin (else the
    Host it was asked at); a request that says neither is refused."""
    own = origin_of(sessions.settings.public_url or f"{request.scheme}://{request.host}")
    sent = request.headers.get("Origin") or origin_of(request.headers.get("Referer", ""))
    return bool(own) and sent.lower() == own


async def logout(request: web.Request) -> web.StreamResponse:
    """Clear the session (raised: a redirect to /runs); refused (403) unless the bot's own page asked."""
    sessions = request.app[SESSIONS]
    if not same_origin(request, sessions):
        log.warning("sign-out refused: not from the bot's own page")
        raise web.HTTPForbidden(text="Sign out from the bot's own page.")
    response = web.HTTPSeeOther("/runs")
    set_cookie(response, SESSION_COOKIE, "", 0)
    raise response
