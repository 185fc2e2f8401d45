"""The setup page cannot be taken over (issue 16, finding 7): it binds 127.0.0.1 unless FLOPS_SETUP_HOST
says otherwise, a registration's `state` belongs to the browser that opened `/` (an HttpOnly,
SameSite=Strict cookie), and no URL it hands out comes from the `Host` header.

In-process tests drive the page with browser-like sessions (each its own cookie jar); the `serve`
tests run `python -m bot serve` with no App credentials, as an operator does, over real HTTP.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests import test_setup as setup_tests
from tests.conftest import wait_for
from tests.emulators.github import GitHubEmulator
from tests.test_setup import PUBLIC_URL, ROOT, Form, Setup, free_port

make_setup, setup, serve_process = setup_tests.make_setup, setup_tests.setup, setup_tests.serve_process  # fixtures
EVIL = "evil.example.com"


def browser() -> aiohttp.ClientSession:
    """Another browser: its own cookie jar (cookies on IP addresses kept, as browsers keep them)."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def callback_url(session: aiohttp.ClientSession, setup: Setup) -> str:
    """Open `/` in `session`, post its form to GitHub, and return where GitHub sends the browser back."""
    async with session.get(setup.url("/")) as response:
        form = Form(await response.text())
    async with session.post(form.action, data=form.fields, allow_redirects=False) as response:
        assert response.status in (302, 303), await response.text()
        return response.headers["Location"]


async def get(session: aiohttp.ClientSession, url: str, **options: Any) -> tuple[int, str, aiohttp.ClientResponse]:
    async with session.get(url, **options) as response:
        return response.status, await response.text(), response


async def test_the_page_ties_its_state_to_an_httponly_samesite_strict_cookie(setup: Setup) -> None:
    _, _, response = await get(setup.session, setup.url("/"))
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("flops_setup=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie


async def test_a_state_taken_by_another_browser_is_refused(setup: Setup, github: GitHubEmulator) -> None:
    """The attacker starts a registration, creates their App, and sends the operator the link back."""
    async with browser() as attacker:
        link = await callback_url(attacker, setup)
    await get(setup.session, setup.url("/"))  # the operator has a cookie of their own
    status, page, _ = await get(setup.session, link)
    assert status == 403 and "another browser" in page
    async with browser() as cookieless:
        status, page, _ = await get(cookieless, link + "&again=1")
    assert status == 403 and "only the browser that opened this page may complete it" in page
    assert not setup.env_file.exists()
    assert github.calls_to("POST", r"^/app-manifests/[^/]+/conversions$") == []  # the code was never spent


async def test_the_operators_browser_completes_after_the_same_site_reload(setup: Setup) -> None:
    """Browsers withhold a SameSite=Strict cookie on GitHub's cross-site redirect: the first answer
    reloads the same URL once from this page, which sends it."""
    link = await callback_url(setup.session, setup)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as withheld:
        status, page, _ = await get(withheld, link)
    assert status == 403 and 'http-equiv="refresh"' in page
    again = html.unescape(re.search(r'content="0;url=([^"]+)"', page)[1])  # type: ignore[index]
    assert again.startswith("/setup/callback?") and again.endswith("&again=1")
    status, page, _ = await get(setup.session, setup.url(again))
    assert status == 200 and "Registered" in page
    assert setup.env_file.exists()


async def test_a_forged_host_header_changes_no_url(make_setup: Any) -> None:
    setup = await make_setup(FLOPS_PUBLIC_URL="")
    status, _, response = await get(setup.session, setup.url("/?org=acme"), headers={"Host": EVIL},
                                    allow_redirects=False)
    assert status == 307 and response.headers["Location"] == setup.url("/?org=acme")
    status, _, elsewhere = await get(setup.session, setup.url("/setup/callback?code=c&state=s"),
                                     headers={"Host": EVIL}, allow_redirects=False)
    assert status == 307 and EVIL not in elsewhere.headers["Location"]
    status, page, _ = await get(setup.session, response.headers["Location"])  # the browser follows: the page
    assert status == 200 and EVIL not in page
    manifest = json.loads(Form(page).fields["manifest"])
    assert manifest["hook_attributes"]["url"] == setup.url("/webhook")  # the bound address
    assert manifest["redirect_url"] == setup.url("/setup/callback")


# ------------------------------------------------------------------------------------------ `serve`

def listening(port: int) -> set[str]:
    """The local addresses listening on `port` (IPv4, /proc/net/tcp: hex address, state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if int(hex_port, 16) == port and state == "0A":
            found.add(".".join(str(int(address[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return found


async def page_of(process: Any, url: str, **options: Any) -> tuple[int, str, dict[str, str]] | None:
    assert process.poll() is None, process.communicate()[1]
    try:
        async with aiohttp.ClientSession() as session, session.get(url, **options) as response:
            return response.status, await response.text(), dict(response.headers)
    except aiohttp.ClientConnectionError:
        return None


async def test_serve_binds_127_0_0_1_by_default_and_builds_urls_from_the_bound_address(serve_process: Any) -> None:
    port = free_port()
    process = serve_process({"PORT": str(port), "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"
    status, page, _ = await wait_for(lambda: page_of(process, base + "/"), timeout=30, what="the setup page")
    assert status == 200
    assert listening(port) == {"127.0.0.1"}
    manifest = json.loads(Form(page).fields["manifest"])
    assert (manifest["hook_attributes"]["url"], manifest["redirect_url"]) == (f"{base}/webhook",
                                                                            f"{base}/setup/callback")
    status, _, headers = await page_of(process, base + "/", headers={"Host": EVIL},  # type: ignore[misc]
                                       allow_redirects=False)
    assert status == 307 and headers["Location"] == f"{base}/"


async def test_serve_refuses_a_state_without_its_cookie(serve_process: Any) -> None:
    port = free_port()
    process = serve_process({"PORT": str(port), "PYTHONPATH": str(ROOT), "FLOPS_PUBLIC_URL": PUBLIC_URL,
                             "GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"})  # never asked
    base = f"http://127.0.0.1:{port}"
    status, page, _ = await wait_for(lambda: page_of(process, base + "/"), timeout=30, what="the setup page")
    manifest = json.loads(Form(page).fields["manifest"])
    assert manifest["hook_attributes"]["url"] == f"{PUBLIC_URL}/webhook"
    state = parse_qs(urlsplit(Form(page).action).query)["state"][0]
    status, page, _ = await page_of(process, f"{base}/setup/callback?code=abc&state={state}&again=1")  # type: ignore[misc]
    assert status == 403 and "another browser" in page


async def test_flops_setup_host_widens_the_bind(serve_process: Any) -> None:
    port = free_port()
    process = serve_process({"PORT": str(port), "PYTHONPATH": str(ROOT), "FLOPS_SETUP_HOST": "0.0.0.0"})
    await wait_for(lambda: page_of(process, f"http://127.0.0.1:{port}/healthz"), timeout=30, what="the setup page")
    assert listening(port) == {"0.0.0.0"}
    process.terminate()
    assert f"open http://0.0.0.0:{port}/" in process.communicate(timeout=30)[1]

