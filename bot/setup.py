"""First run: register the GitHub App from `app.yml` through GitHub's App-manifest flow.

`python -m bot serve` with no App credential at all serves this page. The button posts the
manifest to GitHub; GitHub redirects back with a code; the bot exchanges it
(`POST /app-manifests/{code}/conversions`) and writes the App id, private key and webhook secret
to a local env file (mode 0600) under the contract's own variable names (the Probot convention).
"""
from __future__ import annotations

import html
import json
import logging
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

log = logging.getLogger(__name__)

MANIFEST = Path(__file__).with_name("app.yml")
STATE = web.AppKey("state", set)
CONFIG = web.AppKey("config", dict)


def web_url(api_url: str) -> str:
    """https://api.github.com -> https://github.com; GHES https://host/api/v3 -> https://host."""
    api_url = api_url.rstrip("/")
    if api_url == "https://api.github.com":
        return "https://github.com"
    return re.sub(r"/api/v3$", "", api_url)


def manifest(base_url: str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """app.yml with this installation's URLs filled in."""
    data: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    data["hook_attributes"] = {**data.get("hook_attributes", {}), "url": f"{base_url}/webhook"}
    data["redirect_url"] = f"{base_url}/setup/callback"
    data["url"] = data.get("url") or base_url
    data.update(extra or {})
    return data


def env_file_text(app: Mapping[str, Any], api_url: str) -> str:
    """The env file: the same variable names `serve` reads."""
    key = str(app["pem"]).strip().replace("\n", "\\n")
    lines = [
        "# Written by flops-bot's setup page. Keep this file secret (mode 0600).",
        f"# App: {app.get('html_url', '')}",
        f"GITHUB_APP_ID={app['id']}",
        f"GITHUB_WEBHOOK_SECRET={app['webhook_secret']}",
        f'GITHUB_PRIVATE_KEY="{key}"',
        f"GITHUB_API_URL={api_url}",
    ]
    return "\n".join(lines) + "\n"


def write_env_file(path: Path, text: str) -> None:
    """Create with 0600 from the start: the key is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.chmod(path, 0o600)


def create_setup_app(env: Mapping[str, str]) -> web.Application:
    app = web.Application()
    app[STATE] = set()
    app[CONFIG] = {
        "api_url": (env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
        "public_url": (env.get("FLOPS_PUBLIC_URL") or "").rstrip("/"),
        "env_file": Path(env.get("FLOPS_ENV_FILE") or ".env"),
        "org": env.get("GITHUB_ORG", ""),
    }
    app.router.add_get("/", setup_page)
    app.router.add_get("/setup/callback", setup_callback)
    app.router.add_get("/healthz", lambda request: web.json_response({"status": "ok", "mode": "setup"}))
    app.router.add_get("/readyz", lambda request: web.json_response(
        {"ready": False, "checks": {"github": "not configured: register the App at /"}}, status=503))
    app.router.add_post("/webhook", lambda request: web.json_response(
        {"message": "flops-bot is not configured yet (setup mode)"}, status=503))
    return app


def _base_url(request: web.Request) -> str:
    return request.app[CONFIG]["public_url"] or f"{request.scheme}://{request.host}"


async def setup_page(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    state = secrets.token_urlsafe(24)
    request.app[STATE].add(state)
    org = config["org"] or request.query.get("org", "")
    target = (f"{web_url(config['api_url'])}/organizations/{org}/settings/apps/new" if org
              else f"{web_url(config['api_url'])}/settings/apps/new")
    body = json.dumps(manifest(_base_url(request)))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>flops-bot setup</title></head>
<body style="font-family:sans-serif;max-width:44em;margin:3em auto">
<h1>flops-bot: register the GitHub App</h1>
<p>No GitHub App credentials are configured. This registers a new App from <code>app.yml</code>
(webhook: <code>{html.escape(_base_url(request))}/webhook</code>) {'for the organization <b>' + html.escape(org) + '</b>'
    if org else 'on your account (add <code>?org=NAME</code> to register it for an organization)'}.
GitHub then sends you back here and the credentials are written to
<code>{html.escape(str(config['env_file']))}</code>.</p>
<form action="{html.escape(target)}?state={html.escape(state)}" method="post">
<input type="hidden" name="manifest" value="{html.escape(body)}">
<button type="submit" style="font-size:1.2em">Register the GitHub App</button></form>
</body></html>"""
    return web.Response(text=page, content_type="text/html")


async def setup_callback(request: web.Request) -> web.Response:
    code, state = request.query.get("code", ""), request.query.get("state", "")
    if state not in request.app[STATE] or not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", code):
        return web.Response(status=400, text="Unknown or expired setup attempt: start again at /.")
    request.app[STATE].discard(state)
    config = request.app[CONFIG]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{config['api_url']}/app-manifests/{code}/conversions",
                                headers={"Accept": "application/vnd.github+json", "User-Agent": "flops-bot"}) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 201:
                message = html.escape(str(data.get("message", resp.status)))
                return web.Response(status=502, text=f"GitHub refused the conversion: {message}. Start again at /.")
    write_env_file(config["env_file"], env_file_text(data, config["api_url"]))
    log.info("github app registered", extra={"app_id": data["id"], "slug": data.get("slug"),
                                             "env_file": str(config["env_file"])})
    install = f"{data.get('html_url', '')}/installations/new"
    page = f"""<!doctype html><html><body style="font-family:sans-serif;max-width:44em;margin:3em auto">
<h1>Registered {html.escape(str(data.get('name', 'flops-bot')))}</h1>
<p>App id {int(data['id'])}. Its private key and webhook secret are in
<code>{html.escape(str(config['env_file']))}</code> (mode 0600).</p>
<ol><li><a href="{html.escape(install)}">Install the App</a> on your code and config repositories.</li>
<li>Add the S3 and Kubernetes settings (README, "Configuration") and restart:
<code>set -a; . {html.escape(str(config['env_file']))}; set +a; python -m bot serve</code></li></ol>
</body></html>"""
    return web.Response(text=page, content_type="text/html")
