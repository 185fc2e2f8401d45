"""First run without credentials: the setup page registers the App through GitHub's App-manifest flow.

The test plays the operator's browser: it loads the page, submits its form to the GitHub emulator's
github.com side (which creates the App and redirects back with a code, as GitHub does), and follows
the redirect to the bot's callback, which exchanges the code over the REST API.
"""
from __future__ import annotations

import base64
import json
import shutil
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer

from bot.platform.settings import from_env, needs_setup
from bot.service.setup import MANIFEST, create_setup_app
from tests.conftest import BedFactory, wait_for
from tests.emulators.github import GitHubEmulator

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_URL = "https://flops-bot.example.com"
CONTRACT = {"GITHUB_APP_ID", "GITHUB_PRIVATE_KEY", "GITHUB_WEBHOOK_SECRET", "GITHUB_API_URL", "GITHUB_CLIENT_ID",
            "GITHUB_CLIENT_SECRET"}


class Form(HTMLParser):
    """The page's <form>: its action and its inputs, as a browser would submit them."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.action = ""
        self.method = ""
        self.fields: dict[str, str] = {}
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action, self.method = values["action"], values.get("method", "get")
        elif tag == "input" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


class Setup:
    def __init__(self, server: TestServer, session: aiohttp.ClientSession, env_file: Path) -> None:
        self.server = server
        self.session = session
        self.env_file = env_file

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def page(self, path: str = "/") -> tuple[int, str]:
        async with self.session.get(self.url(path)) as response:
            return response.status, await response.text()

    async def form(self, path: str = "/") -> Form:
        status, text = await self.page(path)
        assert status == 200, text
        return Form(text)

    async def submit(self, form: Form) -> tuple[int, str, str]:
        """Post the form (to GitHub) and follow GitHub's redirect back: (status, page, final URL)."""
        assert form.method == "post"
        async with self.session.post(form.action, data=form.fields) as response:
            return response.status, await response.text(), str(response.url)

    async def register(self, path: str = "/") -> tuple[int, str, str]:
        return await self.submit(await self.form(path))


@pytest.fixture
async def make_setup(github: GitHubEmulator, tmp_path: Path) -> AsyncIterator[Any]:
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []

    async def start(**env: str) -> Setup:
        env_file = tmp_path / "flops.env"
        server = TestServer(create_setup_app({"GITHUB_API_URL": github.url, "FLOPS_PUBLIC_URL": PUBLIC_URL,
                                              "FLOPS_ENV_FILE": str(env_file), **env}), host="127.0.0.1")
        await server.start_server()
        session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))  # a browser: cookies on an IP too
        started.append((server, session))
        return Setup(server, session, Path(env.get("FLOPS_ENV_FILE", env_file)))

    yield start
    for server, session in started:
        await session.close()
        await server.close()


@pytest.fixture
async def setup(make_setup: Any) -> Setup:
    return await make_setup()


def env_file_values(path: Path) -> dict[str, str]:
    """The file as `kubectl create secret --from-env-file` and `docker --env-file` read it: literally."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value
    return values


def sourced(path: Path) -> dict[str, str]:
    """The file as the README loads it: `set -a; . FILE; set +a` in bash."""
    result = subprocess.run(["bash", "-c", 'set -a; . "$1"; set +a; env -0', "bash", str(path)],
                            env={}, capture_output=True, text=True, timeout=30, check=True)
    pairs = (item.partition("=") for item in result.stdout.split("\0") if item)
    return {name: value for name, _, value in pairs if name.startswith("GITHUB_")}


# ------------------------------------------------------------------------------------------ the page

async def test_the_page_posts_app_yml_with_the_public_webhook_url(setup: Setup, github: GitHubEmulator) -> None:
    form = await setup.form()
    action = urlsplit(form.action)
    assert f"{action.scheme}://{action.netloc}{action.path}" == f"{github.url}/settings/apps/new"
    assert parse_qs(action.query)["state"][0]
    posted = json.loads(form.fields["manifest"])
    expected = yaml.safe_load((ROOT / "app.yml").read_text())
    assert posted["hook_attributes"]["url"] == f"{PUBLIC_URL}/webhook"
    assert posted["redirect_url"] == setup.url("/setup/callback")  # back to this page, not to the cluster
    assert {k: v for k, v in posted.items() if k not in ("hook_attributes", "redirect_url")} == \
        {k: v for k, v in expected.items() if k != "hook_attributes"}
    assert posted["hook_attributes"]["active"] is True
    assert set(posted["default_events"]) == {"push", "pull_request", "pull_request_review", "issue_comment",
                                             "check_run", "check_suite", "merge_group"}


async def test_each_visit_starts_its_own_registration(setup: Setup) -> None:
    states = {parse_qs(urlsplit((await setup.form()).action).query)["state"][0] for _ in range(3)}
    assert len(states) == 3


async def test_an_organization_gets_its_own_registration_url(setup: Setup, github: GitHubEmulator) -> None:
    form = await setup.form("/?org=acme-ml")
    assert urlsplit(form.action).path == "/organizations/acme-ml/settings/apps/new"
    status, text = await setup.page("/?org=acme/../../x")
    assert status == 400 and "not a GitHub organization name" in text


async def test_without_a_public_url_the_page_warns_that_github_cannot_deliver(make_setup: Any) -> None:
    setup = await make_setup(FLOPS_PUBLIC_URL="")
    status, text = await setup.page()
    assert status == 200
    assert "FLOPS_PUBLIC_URL is not set" in text
    assert json.loads(Form(text).fields["manifest"])["hook_attributes"]["url"] == setup.url("/webhook")


async def test_setup_mode_is_alive_but_not_ready(setup: Setup) -> None:
    async with setup.session.get(setup.url("/healthz")) as response:
        assert response.status == 200
    async with setup.session.get(setup.url("/readyz")) as response:
        assert response.status == 503
        assert "register the App" in (await response.json())["checks"]["github"]
    async with setup.session.post(setup.url("/webhook"), data=b"{}") as response:
        assert response.status == 503


# ------------------------------------------------------------------------------------------ registration

async def test_registration_writes_the_contract_variables_to_a_0600_file(setup: Setup,
                                                                         github: GitHubEmulator) -> None:
    status, page, final = await setup.register()
    assert status == 200, page
    assert urlsplit(final).path == "/setup/callback"
    [app] = github.registered_apps
    assert app["manifest"]["hook_attributes"]["url"] == f"{PUBLIC_URL}/webhook"
    assert f"App id {app['id']}" in page and f"{app['html_url']}/installations/new" in page
    assert "--from-env-file" in page
    # ... in the namespace deploy/ runs the bot in (flops-system), where its pod can read the Secret
    templates = yaml.safe_load_all((ROOT / "deploy/overlays/example/secrets.example.yaml").read_text())
    [github_secret] = [s for s in templates if s and s["metadata"]["name"] == "flops-bot-github"]
    assert f"kubectl -n {github_secret['metadata']['namespace']} create secret generic flops-bot-github" in page
    assert stat.S_IMODE(setup.env_file.stat().st_mode) == 0o600
    values = env_file_values(setup.env_file)
    assert set(values) == CONTRACT
    assert values["GITHUB_APP_ID"] == str(app["id"])
    assert values["GITHUB_WEBHOOK_SECRET"] == app["webhook_secret"]
    assert values["GITHUB_API_URL"] == github.url
    assert (values["GITHUB_CLIENT_ID"], values["GITHUB_CLIENT_SECRET"]) == (app["client_id"], app["client_secret"])
    assert app["manifest"]["callback_urls"] == [f"{PUBLIC_URL}/auth/callback"]  # sign-in on the run pages
    shell = sourced(setup.env_file)
    assert set(shell) == CONTRACT
    assert shell["GITHUB_PRIVATE_KEY"].replace("\\n", "\n") == app["pem"].strip()
    assert app["pem"] not in page and app["webhook_secret"] not in page and app["client_secret"] not in page
    assert len(github.calls_to("POST", r"^/app-manifests/[^/]+/conversions$")) == 1


async def test_the_written_file_loads_with_the_other_settings_and_the_bot_is_ready(
        setup: Setup, github: GitHubEmulator, env: dict[str, str], make_bed: BedFactory) -> None:
    status, page, _ = await setup.register()
    assert status == 200, page
    [app] = github.registered_apps
    others = {k: v for k, v in env.items() if not k.startswith("GITHUB_")}
    for loaded in (sourced(setup.env_file), env_file_values(setup.env_file)):  # bash, kubectl / docker
        assert not needs_setup(loaded)
        settings = from_env({**others, **loaded})
        assert settings.app_id == app["id"]
        assert settings.private_key.strip() == app["pem"].strip()
        assert settings.webhook_secrets == (app["webhook_secret"],)
        assert settings.api_url == github.url
    bed = await make_bed(**{k: v for k, v in env_file_values(setup.env_file).items()},
                         GITHUB_PRIVATE_KEY_PATH="")
    async with bed.session.get(bed.url("/readyz")) as response:
        body = await response.json()
    assert body["checks"]["github"] == "ok", body  # GitHub accepts a JWT signed with the written key


async def test_the_secret_kubectl_makes_from_the_file_configures_the_bot(setup: Setup, github: GitHubEmulator,
                                                                         env: dict[str, str]) -> None:
    """README: `kubectl create secret generic flops-bot-github --from-env-file=.env`, read by key."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    status, page, _ = await setup.register()
    assert status == 200, page
    made = subprocess.run([kubectl, "create", "secret", "generic", "flops-bot-github", "--dry-run=client",
                           "-o", "json", f"--from-env-file={setup.env_file}"], capture_output=True, text=True,
                          timeout=60)
    assert made.returncode == 0, made.stderr
    data = {k: base64.b64decode(v).decode() for k, v in json.loads(made.stdout)["data"].items()}
    assert set(data) == CONTRACT
    [app] = github.registered_apps
    settings = from_env({**{k: v for k, v in env.items() if not k.startswith("GITHUB_")}, **data})
    assert settings.app_id == app["id"] and settings.private_key.strip() == app["pem"].strip()


async def test_a_used_code_gives_a_clear_error_page(setup: Setup, github: GitHubEmulator) -> None:
    status, _, final = await setup.register()
    assert status == 200
    code = parse_qs(urlsplit(final).query)["code"][0]
    setup.env_file.unlink()
    fresh = parse_qs(urlsplit((await setup.form()).action).query)["state"][0]
    status, text = await setup.page(f"/setup/callback?code={code}&state={fresh}")
    assert status == 400
    assert "GitHub did not accept the registration code" in text and "already used" in text
    assert not setup.env_file.exists()


async def test_an_invalid_code_gives_a_clear_error_page(setup: Setup) -> None:
    state = parse_qs(urlsplit((await setup.form()).action).query)["state"][0]
    status, text = await setup.page(f"/setup/callback?code=0123456789abcdef&state={state}")
    assert status == 400 and "did not accept the registration code" in text
    assert not setup.env_file.exists()


async def test_a_callback_this_page_did_not_start_is_refused_without_asking_github(
        setup: Setup, github: GitHubEmulator) -> None:
    """A forged link must not make the bot adopt someone else's App (the state check)."""
    status, text = await setup.page("/setup/callback?code=attackers-code&state=made-up")
    assert status == 400 and "Unknown or expired registration" in text
    assert not github.calls_to("POST", r"/conversions$")
    assert not setup.env_file.exists()


async def test_an_existing_env_file_is_never_overwritten_and_the_code_is_kept(setup: Setup,
                                                                              github: GitHubEmulator) -> None:
    setup.env_file.write_text("GITHUB_APP_ID=1\n")
    status, text = await setup.page()
    assert "already exists" in text
    status, text, final = await setup.register()
    assert status == 409 and "already exists" in text and "reload this page" in text
    assert setup.env_file.read_text() == "GITHUB_APP_ID=1\n"
    assert not github.calls_to("POST", r"/conversions$")  # the code is still unspent
    setup.env_file.unlink()
    status, text = await setup.page(final.removeprefix(setup.url("")))  # the operator reloads
    assert status == 200, text
    assert set(env_file_values(setup.env_file)) == CONTRACT


async def test_github_unreachable_says_so(make_setup: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    setup = await make_setup(GITHUB_API_URL=dead)
    state = parse_qs(urlsplit((await setup.form()).action).query)["state"][0]
    status, text = await setup.page(f"/setup/callback?code=abc&state={state}")
    assert status == 502 and f"Cannot reach GitHub at {dead}" in text and "reload this page" in text


def test_app_yml_is_the_packaged_manifest() -> None:
    """The setup page reads bot/app.yml (package data); app.yml at the root is the documented copy."""
    assert (ROOT / "app.yml").read_text() == (ROOT / "bot" / "app.yml").read_text()
    assert MANIFEST == ROOT / "bot" / "app.yml"
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "app.yml" in package_data["bot"]  # `pip install .` (the Dockerfile) ships it
    data = yaml.safe_load((ROOT / "app.yml").read_text())
    assert data["default_permissions"] == {"checks": "write", "contents": "write", "pull_requests": "write",
                                           "issues": "write", "metadata": "read", "merge_queues": "read"}


# ------------------------------------------------------------------------------------------ `serve`

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Any]:
    processes: list[subprocess.Popen[str]] = []

    def start(env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.communicate()


async def test_serve_with_an_empty_environment_serves_the_setup_page(serve_process: Any, tmp_path: Path) -> None:
    port = free_port()
    process = serve_process({"PORT": str(port), "PYTHONPATH": str(ROOT)})
    base = f"http://127.0.0.1:{port}"

    async with aiohttp.ClientSession() as session:
        async def answers(path: str) -> tuple[int, str] | None:
            assert process.poll() is None, process.communicate()[1]
            try:
                async with session.get(base + path) as response:
                    return response.status, await response.text()
            except aiohttp.ClientConnectionError:
                return None

        status, text = await wait_for(lambda: answers("/"), timeout=30, what="the setup page")
        assert status == 200 and "Register the GitHub App" in text
        assert "https://github.com/settings/apps/new" in Form(text).action
        assert "<code>.env</code>" in text  # the default env file, in the working directory
        assert (await answers("/healthz"))[0] == 200  # type: ignore[index]
        assert (await answers("/readyz"))[0] >= 400  # type: ignore[index]


def test_serve_with_a_credential_but_no_app_id_fails_instead_of_serving_the_setup_page(tmp_path: Path) -> None:
    """A Secret missing one key must not turn a deployed bot into an open registration page."""
    env = {"PYTHONPATH": str(ROOT), "GITHUB_WEBHOOK_SECRET": "s", "GITHUB_PRIVATE_KEY": "k",
           "MINIO_ENDPOINT": "minio:9000", "MINIO_ACCESS_KEY": "a", "MINIO_SECRET_KEY": "b",
           "KUBERNETES_SERVICE_HOST": "10.0.0.1", "PORT": str(free_port())}
    result = subprocess.run([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("flops-bot: ")]
    assert problems[0] == "flops-bot: GITHUB_APP_ID is not set"
    assert "README.md" in problems[-1] and len(problems) == 2  # one line per problem, then where to look


def test_serve_names_a_kubeconfig_that_does_not_exist_as_the_only_problem(tmp_path: Path) -> None:
    key = tmp_path / "app.pem"
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\nx\n-----END RSA PRIVATE KEY-----\n")
    env = {"PYTHONPATH": str(ROOT), "GITHUB_APP_ID": "12", "GITHUB_PRIVATE_KEY_PATH": str(key),
           "GITHUB_WEBHOOK_SECRET": "s", "MINIO_ENDPOINT": "minio:9000", "MINIO_ACCESS_KEY": "a",
           "MINIO_SECRET_KEY": "b", "KUBECONFIG": str(tmp_path / "missing" / "config"), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "bot", "serve"], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith("flops-bot: ")]
    assert problems[:-1] == [f"flops-bot: KUBECONFIG names '{tmp_path / 'missing' / 'config'}', which does not exist"]
