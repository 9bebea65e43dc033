"""Fixtures for tests in a real browser.

- ``chromium_path`` (session): Debian's Chromium binary (not its shell wrapper), or skip.
- ``browser`` (module): a headless Chromium driven by Playwright.
- ``page``: a fresh browser context and page for one test.
"""

from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]


@pytest.fixture(scope="session")
def chromium_path():
    for candidate in CHROMIUM_CANDIDATES:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if not found:
        pytest.skip("Chromium is not installed (Debian package chromium; `make test` installs "
                    "it when run as root)")
    return found


@pytest.fixture(scope="module")
def browser(chromium_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    yield page
    context.close()
