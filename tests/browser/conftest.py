"""A real portal server and one headless Chromium for the browser tests.

The server is uvicorn on a free loopback port, in a thread of the test process, over a
SQLite file filled by running the seed scenarios through the Runner (roaming included) with
Alice left charging; it shares the utility services and their stopped clock with the tests,
so a test can drive a session through the same service the portal reads.

The browser is Debian's chromium (/usr/bin/chromium, or EVROAM_CHROMIUM) driven by
Playwright; Playwright's own browser downloads are never used. Both fixtures are scoped to
this package: Playwright's sync API keeps an event loop running while it is open, which
would break `asyncio.run` in the tests collected after these. Without it the tests fail
under CI (CI=true: .ci/run installs it) and are skipped with the reason elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evroam.portal.demo import Demo, ServerThread, demo_portal, prepare

CHROMIUM = os.environ.get("EVROAM_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "browser-test-password"


def _no_browser(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}; CI must run the browser tests (.ci/run installs chromium)")
    pytest.skip(reason)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@dataclass
class Portal:
    url: str
    demo: Demo


@pytest.fixture(scope="package")
def portal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Portal]:
    folder = tmp_path_factory.mktemp("browser")
    demo = prepare(f"sqlite:///{folder / 'demo.db'}")
    app, _ = demo_portal(demo, PASSWORD)
    with ServerThread(app) as server:
        yield Portal(server.url, demo)
    demo.engine.dispose()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        _no_browser(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context (no cookies) per test."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    context.set_default_timeout(10_000)
    yield context.new_page()
    context.close()


def sign_in(page: Any, portal: Portal, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{portal.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state()
