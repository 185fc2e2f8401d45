"""Headless Chromium for the browser tests, installed by the test command itself.

Debian's `chromium` and `chromium-driver` (apt-get on first use when /usr/bin/chromium is missing;
root, as in CI), driven through Playwright's Python package pointed at that system browser:
Playwright's own browser download is never used (it cannot reach its CDN here). npm packages a
page needs (say, `mermaid`) are installed with the machine's npm into the test venv.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
DEBIAN_PACKAGES = ("chromium", "chromium-driver")
# As root, in a sandbox without a display or Google's hosts: no sandbox, no GPU, no calls home.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
NPM_ROOT = Path(sys.prefix) / "npm"


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(["apt-get", *args], env=env, capture_output=True, text=True, timeout=600)


def ensure_chromium() -> Path:
    """The system Chromium, installed from Debian's packages when it is not there yet."""
    if CHROMIUM.exists():
        return CHROMIUM
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail(f"the browser tests need Debian's {' and '.join(DEBIAN_PACKAGES)}: "
                    f"sudo apt-get install -y {' '.join(DEBIAN_PACKAGES)}")
    done = _apt_get("install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES)
    if done.returncode != 0:  # a machine whose package lists are stale or empty
        _apt_get("update")
        done = _apt_get("install", "-y", "--no-install-recommends", *DEBIAN_PACKAGES)
    if done.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(f"apt-get install {' '.join(DEBIAN_PACKAGES)} failed:\n{done.stderr[-2000:]}")
    return CHROMIUM


def ensure_npm(package: str, version: str) -> Path:
    """`node_modules/<package>` of `package@version`, installed once into the test venv."""
    folder = NPM_ROOT / f"{package}-{version}"
    installed = folder / "node_modules" / package
    if installed.exists():
        return installed
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail(f"the tests need Node.js and npm to install {package}@{version}")
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", "--omit=dev",
                           f"{package}@{version}"], capture_output=True, text=True, timeout=600)
    if done.returncode != 0 or not installed.exists():
        pytest.fail(f"npm install {package}@{version} failed:\n{done.stderr[-2000:]}")
    return installed


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium (a fresh profile each time), closed on exit."""
    executable = ensure_chromium()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(executable), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            await browser.close()
