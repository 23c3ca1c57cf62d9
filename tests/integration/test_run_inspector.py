"""The run inspector page (``/ui``) in a real browser: Debian's Chromium, headless, driven by Playwright,
against a real API and worker (uvicorn over redis-server, the scripted engine: ``conftest_api``).

Used with the keyboard alone: the key is typed and submitted, the runs list is reached with Tab, a run in
progress is opened with Enter; its model text and tool calls then arrive live, without a reload. No
console errors; the API key never appears in a URL. A screenshot is saved as a test artifact
(``CADUCEUS_TEST_ARTIFACTS``, default ``build/test-artifacts``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import ConsoleMessage, Page, sync_playwright

from tests.api_support import A
from tests.integration.conftest_api import Service, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("CADUCEUS_TEST_ARTIFACTS", "build/test-artifacts"))


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[tuple[Page, list[str]]]:
    """A page of a fresh headless Chromium (its own user data dir), and the console errors it logs."""
    assert shutil.which(CHROMIUM), "Debian's chromium package is missing: `make test` installs it (apt-get)"
    errors: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        try:
            page = context.new_page()
            page.set_viewport_size({"width": 1400, "height": 1000})

            def console(message: ConsoleMessage) -> None:
                if message.type == "error":
                    errors.append(message.text)

            page.on("console", console)
            page.on("pageerror", lambda error: errors.append(str(error)))
            yield page, errors
        finally:
            context.close()


def _submit(http: httpx.Client, text: str, **body: Any) -> str:
    response = http.post("/v1/runs", json={"input": text, **body}, headers=A)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["id"]
    return run_id


def _tab_to(page: Page, selector: str, presses: int = 40) -> None:
    """Press Tab until the element ``selector`` has the focus."""
    for _ in range(presses):
        if page.evaluate("s => document.activeElement === document.querySelector(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_the_inspector_lists_runs_and_follows_one_live_with_the_keyboard_alone(
    redis_url: str, browser_page: tuple[Page, list[str]]
) -> None:
    page, errors = browser_page
    with Service(redis_url, worker=True).running() as service, httpx.Client(base_url=service.url) as http:
        done = _submit(http, "tool hello", tools=["echo"])
        wait_for(http, done, "completed")
        # Many short steps, each calling a tool: in progress for a while, with new text and calls as it goes.
        slow = _submit(http, "slow steps", tools=["pause"], limits={"max_steps": 400})
        wait_for(http, slow, "in_progress")
        try:
            page.goto(f"{service.url}/ui")
            _tab_to(page, "#key")
            page.keyboard.type("key-a")
            page.keyboard.press("Enter")
            page.wait_for_selector(f"tr[data-run='{done}'] .st-completed")
            open_slow = f"tr[data-run='{slow}'] button"
            page.wait_for_selector(open_slow)
            page.evaluate("() => { window.notReloaded = true; }")
            _tab_to(page, open_slow)
            page.keyboard.press("Enter")
            page.wait_for_selector("#calls li .result.ok")
            text, calls = page.inner_text("#text"), page.locator("#calls li").count()
            steps = page.locator("#timeline li").count()
            page.wait_for_function(
                "([n, c, s]) => document.querySelectorAll('#calls li').length > c"
                " && document.getElementById('text').textContent.length > n"
                " && document.querySelectorAll('#timeline li').length > s",
                arg=[len(text), calls, steps],
            )
            assert page.evaluate("() => window.notReloaded === true")  # new tokens and calls, no reload
            assert page.is_visible("#run-facts") and "pause" in page.inner_text("#calls")
            trace = page.inner_text("#run-facts")
            assert http.get(f"/v1/runs/{slow}", headers=A).json()["trace_id"] in trace
            page.keyboard.press("Tab")  # the thread's messages, by the keyboard too
            _tab_to(page, "#load-thread")
            page.keyboard.press("Enter")
            page.wait_for_selector("#thread li")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.evaluate("() => window.scrollTo(0, 0)")
            page.screenshot(path=str(ARTIFACTS / "run-inspector.png"))
            assert "key-a" not in page.url
        finally:
            http.post(f"/v1/runs/{slow}/cancel", headers=A)
    assert errors == []
