"""First run: register the GitHub App from `app.yml` through GitHub's App-manifest flow.

`python -m bot serve` with no App credential at all serves this page instead of the bot. Its
button posts the manifest (webhook: `FLOPS_PUBLIC_URL/webhook`) to GitHub; GitHub creates the App
and sends the browser back to `/setup/callback` with a one-time code; the bot exchanges it
(`POST /app-manifests/{code}/conversions`) and writes the App id, private key and webhook secret to
a local env file, mode 0600 from its creation, under the contract's own variable names (the Probot
convention). The file is never overwritten: an existing one is the key of an App already made.

Run it on your workstation (or through `kubectl port-forward`), never exposed to the internet:
whoever completes the flow decides which App the bot will run as. So it binds 127.0.0.1 unless
`FLOPS_SETUP_HOST` says otherwise; `/` ties each registration's `state` to the operator's browser
with an HttpOnly, SameSite=Strict cookie, and the callback refuses a state without it (403). Every
URL it hands out (the manifest's webhook and redirect URLs, redirects) is built from
`FLOPS_PUBLIC_URL` or the address the connection reached, never from the `Host` header; a request
naming another host is sent to that address first (so the cookie lives where the callback lands).
"""
from __future__ import annotations

import hmac
import html
import json
import os
import re
import secrets
import shlex
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from bot.platform import logs

log = logs.get_logger(__name__)

MANIFEST = Path(__file__).resolve().parent.parent / "app.yml"
ATTEMPT_SECONDS = 3600.0  # GitHub's codes are valid for an hour; so is a started registration
ATTEMPTS = 100  # registrations remembered at once (each page view starts one)
ENV_NAMES = ("GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET",
             "GITHUB_API_URL")
GITHUB_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
COOKIE = "flops_setup"  # the operator's browser: each registration's state belongs to one
TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
           "X-Content-Type-Options": "nosniff"}


@dataclass(frozen=True)
class SetupConfig:
    api_url: str
    public_url: str | None
    env_file: Path


CONFIG = web.AppKey("setup_config", SetupConfig)
ATTEMPTS_KEY = web.AppKey("setup_attempts", OrderedDict)


class SetupError(Exception):
    """Shown to the operator as a page: what went wrong and what to do next."""

    def __init__(self, status: int, title: str, advice: str) -> None:
        super().__init__(title)
        self.status = status
        self.title = title
        self.advice = advice


def web_url(api_url: str) -> str:
    """https://api.github.com -> https://github.com; GHES https://host/api/v3 -> https://host."""
    api_url = api_url.rstrip("/")
    if api_url == "https://api.github.com":
        return "https://github.com"
    return re.sub(r"/api/v3$", "", api_url)


def manifest(hook_base: str, redirect_base: str) -> dict[str, Any]:
    """app.yml with this installation's webhook URL and the way back to this page."""
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    data["hook_attributes"] = {**data.get("hook_attributes", {}), "url": f"{hook_base}/webhook"}
    data["redirect_url"] = f"{redirect_base}/setup/callback"
    data["callback_urls"] = [f"{hook_base}/auth/callback"]  # "Sign in with GitHub" on the run pages
    return data


def env_file_text(app: Mapping[str, Any], api_url: str) -> str:
    """The env file, under the names `serve` reads. It works with `set -a; . FILE`, with
    `kubectl create secret generic --from-env-file=FILE` and with `docker run --env-file`."""
    key = str(app["pem"]).strip().replace("\n", "\\n")
    lines = ["# Written by flops-bot's setup page. Keep it secret: it holds the App's private key.",
             f"# App: {app.get('html_url', '')}",
             f"GITHUB_APP_ID={int(app['id'])}",
             f'GITHUB_PRIVATE_KEY="{key}"']
    if app.get("webhook_secret"):
        lines.append(f"GITHUB_WEBHOOK_SECRET={shlex.quote(str(app['webhook_secret']))}")
    if app.get("client_id") and app.get("client_secret"):  # the App's OAuth client: sign-in on the run pages
        lines.append(f"GITHUB_CLIENT_ID={shlex.quote(str(app['client_id']))}")
        lines.append(f"GITHUB_CLIENT_SECRET={shlex.quote(str(app['client_secret']))}")
    lines.append(f"GITHUB_API_URL={shlex.quote(api_url)}")
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str) -> None:
    """Create with mode 0600 (never readable by others, not even briefly); never overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)  # whatever the umask


def create_setup_app(env: Mapping[str, str]) -> web.Application:
    app = web.Application()
    app[CONFIG] = SetupConfig(
        api_url=(env.get("GITHUB_API_URL", "").strip() or "https://api.github.com").rstrip("/"),
        public_url=env.get("FLOPS_PUBLIC_URL", "").strip().rstrip("/") or None,
        env_file=Path(env.get("FLOPS_ENV_FILE", "").strip() or ".env"))
    app[ATTEMPTS_KEY] = OrderedDict()
    app.router.add_get("/", setup_page)
    app.router.add_get("/setup/callback", setup_callback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_post("/webhook", webhook)
    return app


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "mode": "setup"})


async def readyz(request: web.Request) -> web.Response:
    return web.json_response({"ready": False, "checks": {"github": "not configured: register the App at /"}},
                             status=503)


async def webhook(request: web.Request) -> web.Response:
    return web.json_response({"message": "flops-bot is not configured yet (setup mode): register the App at /"},
                             status=503)


def _own_address(request: web.Request) -> str:
    """`host:port` of the bound address this connection reached (the socket's, never `Host`)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport else None
    if not sockname:
        raise SetupError(500, "Connection closed", "Reload the page.")
    host, port = str(sockname[0]), int(sockname[1])
    host = f"[{host}]" if ":" in host else host
    return host if port == 80 else f"{host}:{port}"  # as a browser writes `Host` (no default port)


def _own_url(request: web.Request) -> str:
    """Where the operator's browser reaches this page: GitHub sends it back here."""
    return f"http://{_own_address(request)}"


def _elsewhere(request: web.Request) -> None:
    """A request naming another host (a typo, `localhost`, DNS rebinding) is sent to the bound address."""
    if request.host != _own_address(request):
        raise web.HTTPTemporaryRedirect(f"{_own_url(request)}{request.rel_url}", headers=HEADERS)


def _start_attempt(app: web.Application, browser: str) -> str:
    attempts: OrderedDict[str, tuple[float, str]] = app[ATTEMPTS_KEY]
    state = secrets.token_urlsafe(24)
    attempts[state] = (time.monotonic(), browser)
    while len(attempts) > ATTEMPTS:
        attempts.popitem(last=False)
    return state


def _attempt(app: web.Application, state: str) -> str | None:
    """The browser token a registration started here within the hour belongs to, else None."""
    started = app[ATTEMPTS_KEY].get(state)
    if started is None or time.monotonic() - started[0] >= ATTEMPT_SECONDS:
        return None
    return str(started[1])


def _browser(request: web.Request) -> str:
    """The operator's browser token: the cookie's (several tabs, one browser) or a new one."""
    token = request.cookies.get(COOKIE, "")
    return token if TOKEN.fullmatch(token) else secrets.token_urlsafe(32)


async def setup_page(request: web.Request) -> web.Response:
    _elsewhere(request)
    config = request.app[CONFIG]
    org = request.query.get("org", "")
    if org and not GITHUB_LOGIN.fullmatch(org):
        return _error_page(SetupError(400, f"{org!r} is not a GitHub organization name",
                                      "Use the organization's login, as in https://github.com/LOGIN."))
    hook_base = config.public_url or _own_url(request)
    body = json.dumps(manifest(hook_base, _own_url(request)))
    target = f"{web_url(config.api_url)}/organizations/{org}/settings/apps/new" if org \
        else f"{web_url(config.api_url)}/settings/apps/new"
    browser = _browser(request)
    state = _start_attempt(request.app, browser)
    owner = (f"for the organization <b>{html.escape(org)}</b>" if org else
             "on your personal account (open <code>/?org=NAME</code> to register it for an organization)")
    notes = []
    if config.public_url is None:
        notes.append(f"<p><b>FLOPS_PUBLIC_URL is not set</b>, so the webhook would point at "
                     f"<code>{html.escape(hook_base)}/webhook</code>, which GitHub cannot reach. Set it to the "
                     f"public URL of the bot (the Ingress host) and restart, or change the webhook URL in the "
                     f"App's settings afterwards.</p>")
    if config.env_file.exists():
        notes.append(f"<p><b>{html.escape(str(config.env_file))} already exists</b>: it is not overwritten. "
                     f"Move it away (or set FLOPS_ENV_FILE) before registering another App.</p>")
    page = f"""<h1>flops-bot: register the GitHub App</h1>
<p>No GitHub App credentials are configured. This registers a new GitHub App {owner} from
<code>app.yml</code>, with the webhook <code>{html.escape(hook_base)}/webhook</code>. GitHub then sends
you back here, and the App's id, private key and webhook secret are written to
<code>{html.escape(str(config.env_file))}</code> (mode 0600).</p>
{''.join(notes)}
<form action="{html.escape(target)}?state={html.escape(state)}" method="post">
<input type="hidden" name="manifest" value="{html.escape(body)}">
<button type="submit" style="font-size:1.2em">Register the GitHub App</button></form>"""
    response = _page(200, "flops-bot setup", page)
    response.set_cookie(COOKIE, browser, max_age=int(ATTEMPT_SECONDS), path="/", httponly=True, samesite="Strict")
    return response


async def setup_callback(request: web.Request) -> web.Response:
    try:
        _elsewhere(request)
        return await _complete_registration(request)
    except SetupError as error:
        return _error_page(error)


def _check_attempt(request: web.Request, code: str, state: str) -> None:
    """The state is one this page started within the hour, in this very browser (its cookie)."""
    browser = _attempt(request.app, state)
    if browser is None or not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", code):
        raise SetupError(400, "Unknown or expired registration",
                         "This page only accepts GitHub's answer to a registration started here within the "
                         "hour. Start again at <a href=\"/\">/</a>. If GitHub already created the App, delete it "
                         "in its settings (or generate a private key there and configure it by hand).")
    if hmac.compare_digest(request.cookies.get(COOKIE, ""), browser):
        return
    if "again" not in request.query:  # a SameSite=Strict cookie is withheld on GitHub's cross-site redirect:
        again = f"{request.path}?code={code}&state={state}&again=1"  # one same-site reload sends it
        raise SetupError(403, "Registration started in another browser",
                         f"Checking this browser's setup cookie&hellip; <a href=\"{html.escape(again)}\">continue"
                         f"</a>.<meta http-equiv=\"refresh\" content=\"0;url={html.escape(again)}\">")
    raise SetupError(403, "Registration started in another browser",
                     "This registration was started from another browser (or its cookie was removed), so it is "
                     "refused: only the browser that opened this page may complete it. Open <a href=\"/\">/</a> "
                     "in the browser you register with and start again. If GitHub already created an App you "
                     "did not mean, delete it in its settings.")


async def _complete_registration(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    code, state = request.query.get("code", ""), request.query.get("state", "")
    _check_attempt(request, code, state)
    if config.env_file.exists():
        raise SetupError(409, f"{config.env_file} already exists",
                         "It may hold the key of an App registered before and is never overwritten. Move it "
                         "away (or restart with FLOPS_ENV_FILE naming another file), then reload this page: "
                         "GitHub's code stays valid for an hour.")
    app = await _convert(config.api_url, code)
    request.app[ATTEMPTS_KEY].pop(state, None)  # the code is spent either way
    try:
        write_env_file(config.env_file, env_file_text(app, config.api_url))
    except OSError as exc:
        raise SetupError(500, f"Cannot write {config.env_file}: {exc.strerror}",
                         "The App was created but its key could not be saved: open the App's settings on "
                         f"GitHub ({html.escape(str(app.get('html_url', '')))}), generate a private key and "
                         "configure GITHUB_APP_ID, GITHUB_PRIVATE_KEY_PATH and GITHUB_WEBHOOK_SECRET by hand.") from exc
    log.info("github app registered", extra={"app_id": app["id"], "slug": app.get("slug"),
                                             "env_file": str(config.env_file)})
    return _page(200, "flops-bot registered", _success(app, config))


async def _convert(api_url: str, code: str) -> dict[str, Any]:
    """`POST /app-manifests/{code}/conversions`: the new App's credentials (no authentication)."""
    url = f"{api_url}/app-manifests/{code}/conversions"
    headers = {"Accept": "application/vnd.github+json", "User-Agent": "flops-bot-setup",
               "X-GitHub-Api-Version": "2022-11-28"}
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            async with session.post(url, headers=headers) as response:
                status = response.status
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    data = {}
    except aiohttp.ClientError as exc:
        raise SetupError(502, f"Cannot reach GitHub at {api_url}",
                         f"{html.escape(str(exc) or type(exc).__name__)}. Check GITHUB_API_URL and the network, "
                         "then reload this page (GitHub's code stays valid for an hour).") from exc
    if status in (404, 422):
        raise SetupError(400, "GitHub did not accept the registration code",
                         f"GitHub answered {status} ({html.escape(str((data or {}).get('message', '')))}): the "
                         "code was already used, is older than an hour, or belongs to another GitHub. Start "
                         "again at <a href=\"/\">/</a>.")
    if status != 201 or not isinstance(data, dict) or not all(data.get(k) for k in ("id", "pem")):
        raise SetupError(502, f"Unexpected answer from GitHub (HTTP {status})",
                         "Reload this page to retry; if it persists, register the App by hand "
                         "(README, \"Register the GitHub App\").")
    return data


def _success(app: Mapping[str, Any], config: SetupConfig) -> str:
    env_file = html.escape(str(config.env_file))
    install = html.escape(f"{app.get('html_url', '')}/installations/new")
    secret_note = "" if app.get("webhook_secret") else (
        "<li><b>GitHub returned no webhook secret.</b> Set one in the App's settings and add it to the file as "
        "<code>GITHUB_WEBHOOK_SECRET=...</code>.</li>")
    return f"""<h1>Registered {html.escape(str(app.get('name') or app.get('slug') or 'the App'))}</h1>
<p>App id {int(app['id'])}. Its private key, webhook secret and OAuth client (sign-in on the run pages) are in <code>{env_file}</code> (mode 0600):
{', '.join(f'<code>{n}</code>' for n in ENV_NAMES)}.</p>
<ol>{secret_note}
<li><a href="{install}">Install the App</a> on your code repositories <b>and</b> your config repositories.</li>
<li>In Kubernetes: <code>kubectl -n flops-system create secret generic flops-bot-github --from-env-file={env_file}</code>,
then <code>kubectl apply -k deploy/overlays/&lt;yours&gt;</code> (README, "Install and deploy").</li>
<li>Or here: add the S3 and Kubernetes settings and restart:
<code>set -a; . {env_file}; set +a; python -m bot serve</code>.</li></ol>
<p>Then delete <code>{env_file}</code> wherever it is not needed.</p>"""


def _error_page(error: SetupError) -> web.Response:
    return _page(error.status, "flops-bot setup failed",
                 f"<h1>{html.escape(error.title)}</h1>\n<p>{error.advice}</p>")


def _page(status: int, title: str, body: str) -> web.Response:
    text = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
            f'<body style="font-family:sans-serif;max-width:46em;margin:3em auto">\n{body}\n</body></html>\n')
    return web.Response(status=status, text=text, content_type="text/html", headers=HEADERS)
