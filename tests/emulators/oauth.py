"""github.com's OAuth web flow for a GitHub App's users, as GitHub documents it
(docs.github.com: "Generating a user access token for a GitHub App"), for the GitHub emulator.

- `GET /login/oauth/authorize?client_id&redirect_uri&state`: the consent page. The emulated user
  (`oauth.signed_in`, chosen by the test) has authorized the App before, so GitHub redirects back
  at once to `redirect_uri?code=...&state=...`; nobody signed in (None): `error=access_denied`.
  An unknown `client_id` is a 404 page; a `redirect_uri` outside the App's callback URL is sent
  back with `error=redirect_uri_mismatch`, as GitHub does.
- `POST /login/oauth/access_token` (form, JSON or query: `client_id`, `client_secret`, `code`,
  `redirect_uri`): a user access token (`ghu_`, expiring in 8 hours) with a refresh token; JSON
  with `Accept: application/json`, else form-encoded. Errors answer 200 with `error`,
  `error_description`, `error_uri` (`incorrect_client_credentials`, `bad_verification_code`,
  `redirect_uri_mismatch`), as GitHub's do. A code is good once, for 10 minutes.
- With such a token the REST API answers `GET /user`, and `GET /repos/{owner}/{repo}` only for a
  repository the App is installed on that the user can read (public, or a permission set with
  `set_permission`); 404 otherwise.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

USER_TOKEN_SECONDS = 8 * 3600
CODE_SECONDS = 600
ERROR_URI = "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors"


@dataclass
class Client:
    client_id: str
    client_secret: str
    callback_url: str | None


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    login: str
    at: float


@dataclass
class UserToken:
    login: str
    expires_at: float


class OAuth:
    """The OAuth side of the emulated github.com: clients, the signed-in user, codes, user tokens."""

    def __init__(self) -> None:
        self.clients: dict[str, Client] = {}
        self.signed_in: str | None = "octocat"  # who is signed in to github.com in the browser
        self.tokens: dict[str, UserToken] = {}
        self._codes: dict[str, Grant] = {}

    def add_client(self, client_id: str, client_secret: str, callback_url: str | None = None) -> None:
        self.clients[client_id] = Client(client_id, client_secret, callback_url)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/login/oauth/authorize", self.authorize)
        app.router.add_post("/login/oauth/access_token", self.access_token)

    def login_of(self, token: str) -> str | None:
        """The user a live user access token belongs to; None for any other string."""
        found = self.tokens.get(token)
        return found.login if found is not None and found.expires_at > time.time() else None

    def expire_user_tokens(self) -> None:
        for token in self.tokens.values():
            token.expires_at = 0

    async def authorize(self, request: web.Request) -> web.Response:
        query = request.query
        client = self.clients.get(query.get("client_id", ""))
        if client is None:
            return web.Response(status=404, text="Not Found", content_type="text/html")
        redirect = query.get("redirect_uri") or client.callback_url or ""
        state = {"state": query["state"]} if "state" in query else {}
        if client.callback_url and not redirect.startswith(client.callback_url):
            answer = {"error": "redirect_uri_mismatch", "error_description": "The redirect_uri MUST match the "
                      "registered callback URL for this application.", **state}
            return _redirect(client.callback_url, answer)
        if self.signed_in is None:
            return _redirect(redirect, {"error": "access_denied", **state})
        code = secrets.token_hex(10)
        self._codes[code] = Grant(client.client_id, redirect, self.signed_in, time.time())
        return _redirect(redirect, {"code": code, **state})

    async def access_token(self, request: web.Request) -> web.Response:
        params = {**request.query, **await _params(request)}
        client = self.clients.get(params.get("client_id", ""))
        if client is None or not secrets.compare_digest(client.client_secret, params.get("client_secret", "")):
            return _answer(request, _error("incorrect_client_credentials",
                                           "The client_id and/or client_secret passed are incorrect."))
        grant = self._codes.pop(params.get("code", ""), None)
        if grant is None or grant.client_id != client.client_id or time.time() - grant.at > CODE_SECONDS:
            return _answer(request, _error("bad_verification_code", "The code passed is incorrect or expired."))
        if params.get("redirect_uri") and params["redirect_uri"] != grant.redirect_uri:
            return _answer(request, _error("redirect_uri_mismatch",
                                           "The redirect_uri MUST match the registered callback URL for this "
                                           "application."))
        token = "ghu_" + secrets.token_hex(18)
        self.tokens[token] = UserToken(grant.login, time.time() + USER_TOKEN_SECONDS)
        return _answer(request, {"access_token": token, "expires_in": USER_TOKEN_SECONDS,
                                 "refresh_token": "ghr_" + secrets.token_hex(30),
                                 "refresh_token_expires_in": 15_811_200, "scope": "", "token_type": "bearer"})


async def _params(request: web.Request) -> dict[str, str]:
    raw = await request.read()
    if request.content_type == "application/json":
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    return dict(parse_qsl(raw.decode(errors="replace")))


def _error(error: str, description: str) -> dict[str, str]:
    return {"error": error, "error_description": description, "error_uri": ERROR_URI}


def _answer(request: web.Request, data: dict[str, object]) -> web.Response:
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(data)
    return web.Response(text=urlencode({k: str(v) for k, v in data.items()}),
                        content_type="application/x-www-form-urlencoded")


def _redirect(url: str, query: dict[str, str]) -> web.Response:
    joiner = "&" if "?" in url else "?"
    return web.Response(status=302, headers={"Location": f"{url}{joiner}{urlencode(query)}"})
