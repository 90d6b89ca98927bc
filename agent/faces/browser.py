"""Driving the system's Chromium with Playwright: screenshots of the web page, and the browser tests.

``scripts/screenshot-web RUN_DIR [--url URL]`` writes ``RUN_DIR/web-page.png``. Playwright is a dev
dependency and the browser comes from the OS (``apt-get install chromium``, see scripts/setup-system);
Playwright must never download its own browser (that fails offline).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import UserFacingError

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_PATH = Path("/usr/bin/chromium")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
)


def launch_chromium(playwright: object) -> Browser:
    """Start the system Chromium through a started ``sync_playwright()`` object.

    Raises:
        UserFacingError: Chromium is not installed.
    """
    if not CHROMIUM_PATH.exists():
        raise UserFacingError(f"{CHROMIUM_PATH} is missing; install it with `sudo bash scripts/setup-system`")
    return playwright.chromium.launch(  # type: ignore[attr-defined]
        executable_path=str(CHROMIUM_PATH), headless=True, args=list(CHROMIUM_ARGS)
    )


def screenshot_page(
    url: str, out: Path, *, width: int = 1280, height: int = 900, dark: bool = False, full_page: bool = True
) -> Path:
    """Open ``url``, wait for the first live data, and write a PNG to ``out``.

    Args:
        url: the agent page, e.g. ``http://127.0.0.1:8470/``.
        out: the PNG file to write (its folder is created).
        width, height: viewport in CSS pixels (390x844 looks like a phone).
        dark: switch the page to dark mode first.
        full_page: capture the whole scrollable page, not only the viewport.
    """
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        raise UserFacingError("playwright is missing; run `.venv/bin/pip install -e .[dev]`") from error
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            try:
                page.goto(url, wait_until="load", timeout=15_000)
                page.wait_for_selector("#connection.live", timeout=10_000)
            except PlaywrightError as error:
                raise UserFacingError(f"could not load the agent page at {url}: {error.message}") from error
            if dark:
                page.click("#theme-toggle")
            page.wait_for_timeout(300)  # let the charts paint after the last render
            page.screenshot(path=str(out), full_page=full_page)
        finally:
            browser.close()
    return out
