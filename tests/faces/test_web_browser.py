"""The agent page in a real browser (Playwright driving Debian's Chromium at /usr/bin/chromium).

Checks what an operator sees: no console errors, live rounds within 1 s, sortable peers, dark mode,
CSV download, the polling fallback and reconnection, a phone-sized layout, and a screenshot.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faces_fakes import FakeActions

from agent.faces.browser import CHROMIUM_PATH, launch_chromium
from agent.faces.demo import demo_board
from agent.faces.web import WebServerHandle, create_app, serve_in_thread
from agent.protocol.messages import AveragingRoundReport
from agent.status import StatusBoard

pytestmark = pytest.mark.skipif(
    not CHROMIUM_PATH.exists(), reason="needs /usr/bin/chromium (run scripts/setup-system as root)"
)
sync_api = pytest.importorskip("playwright.sync_api")


def _report(number: int) -> AveragingRoundReport:
    return AveragingRoundReport(
        run_id="mnist-demo", round=number, group_id="cafe", members=("a", "b", "c"), samples=2048,
        compute_seconds=0.4, wait_seconds=0.02, bytes_sent=1, bytes_received=1, success=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def agent() -> Iterator[tuple[StatusBoard, WebServerHandle]]:
    board = demo_board()
    handle = serve_in_thread(create_app(board, action_token=None, actions=None))
    yield board, handle
    handle.stop()


@pytest.fixture
def page(browser, agent):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(5000)
    yield page
    context.close()


def _open(page, handle: WebServerHandle) -> None:
    page.goto(handle.url)
    page.wait_for_selector("#connection.live")


def test_page_loads_live_without_console_errors(page, agent) -> None:
    _, handle = agent
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    _open(page, handle)
    page.wait_for_selector("#peers-body tr[data-peer]")
    assert page.text_content("#run-id") == "mnist-demo"
    assert page.text_content("#state").strip() == "training"
    assert page.text_content("#rewards-pending") == "1.25 MON"
    assert page.locator("#rtt-matrix td.cell").count() > 0
    page.wait_for_timeout(300)
    assert problems == []


def test_a_new_round_appears_within_one_second(page, agent) -> None:
    board, handle = agent
    _open(page, handle)
    started = time.monotonic()
    board.record_round(_report(4242))
    page.wait_for_selector('#rounds-body tr[data-round="4242"]', timeout=1000)
    elapsed_ms = (time.monotonic() - started) * 1000
    print(f"\nround on the board -> row on the page: {elapsed_ms:.0f} ms")
    assert elapsed_ms < 1000
    board.update(round=4242)
    sync_api.expect(page.locator("#round")).to_have_text("4,242", timeout=1000)


def _peer_column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#peers-body tr[data-peer]", f"rows => rows.map(r => r.cells[{index}].textContent)"
    )


def test_peers_table_sorts_by_clicking_and_by_keyboard(page, agent) -> None:
    _, handle = agent
    _open(page, handle)
    page.wait_for_selector("#peers-body tr[data-peer]")
    rtts = _peer_column(page, 1)
    known = [float(v) for v in rtts if v != "unknown"]
    assert known == sorted(known) and rtts[-1] == "unknown"  # default: RTT ascending, unknown last
    page.click("th button[data-key='rtt_ms']")
    descending = [float(v) for v in _peer_column(page, 1) if v != "unknown"]
    assert descending == sorted(known, reverse=True)
    assert page.get_attribute("th:has(button[data-key='rtt_ms'])", "aria-sort") == "descending"
    page.focus("th button[data-key='quality']")
    page.keyboard.press("Enter")
    order = ["excellent", "good", "fair", "poor", "critical", "unknown"]
    qualities = _peer_column(page, 4)
    assert qualities == sorted(qualities, key=order.index)
    assert page.get_attribute("th:has(button[data-key='quality'])", "aria-sort") == "ascending"


def test_dark_mode_toggles_and_is_remembered(page, agent) -> None:
    _, handle = agent
    _open(page, handle)
    light = page.evaluate("getComputedStyle(document.body).backgroundColor")
    toggle = page.locator("#theme-toggle")
    assert toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    assert page.get_attribute("html", "data-theme") == "dark"
    assert toggle.get_attribute("aria-pressed") == "true"
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != light
    page.reload()
    page.wait_for_selector("#connection.live")
    assert page.get_attribute("html", "data-theme") == "dark"


def test_csv_download_holds_the_metrics_history(page, agent, tmp_path: Path) -> None:
    board, handle = agent
    _open(page, handle)
    with page.expect_download() as download_info:
        page.click("#csv-link")
    target = tmp_path / "metrics.csv"
    download_info.value.save_as(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == len(board.metrics_history())
    assert rows[-1]["step"] == str(board.metrics_history()[-1].step)


def test_page_polls_while_the_stream_is_down_and_reconnects(page, agent) -> None:
    board, handle = agent
    _open(page, handle)
    page.route("**/api/events", lambda route: route.abort())
    # restart the server on the same port: the open stream drops, new streams are refused by the route
    handle.stop()
    restarted = serve_in_thread(create_app(board, action_token=None, actions=None), port=handle.port)
    try:
        page.wait_for_selector("#connection.polling", timeout=3000)
        board.record_round(_report(777))
        page.wait_for_selector('#rounds-body tr[data-round="777"]', timeout=3500)  # via polling (2 s)
        page.unroute("**/api/events")
        page.wait_for_selector("#connection.live", timeout=10_000)
        board.record_round(_report(778))
        page.wait_for_selector('#rounds-body tr[data-round="778"]', timeout=1000)
    finally:
        restarted.stop()


def test_phone_layout_fits_the_screen_and_keyboard_reaches_controls(browser, agent) -> None:
    _, handle = agent
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        _open(page, handle)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.className") == "skip-link"
        focused = set()
        for _ in range(6):
            page.keyboard.press("Tab")
            focused.add(
                page.evaluate("document.activeElement.id || document.activeElement.dataset.key || ''")
            )
        assert {"theme-toggle", "csv-link", "peer_id"} <= focused
    finally:
        context.close()


def test_screenshot_is_written(page, agent, tmp_path: Path) -> None:
    _, handle = agent
    _open(page, handle)
    page.wait_for_timeout(200)
    shot = tmp_path / "web-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kB


def test_actions_on_the_page_need_the_token_and_confirm_the_claim(browser) -> None:
    board = demo_board()
    actions = FakeActions(board)
    handle = serve_in_thread(create_app(board, action_token="page-token-123", actions=actions))
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(5000)
        _open(page, handle)
        page.wait_for_selector("#actions-form:not([hidden])")
        page.fill("#action-token", "wrong-token-000")
        page.click("#action-pause")
        sync_api.expect(page.locator("#action-result")).to_have_text("Refused (403): wrong token")
        page.fill("#action-token", "page-token-123")
        page.click("#action-pause")
        sync_api.expect(page.locator("#action-result")).to_have_text("local training paused")
        sync_api.expect(page.locator("#action-pause")).to_have_text("Resume training")
        dialogs: list[str] = []
        page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.click("#action-claim")
        page.wait_for_timeout(200)
        assert dialogs == ["Claim 1.25 MON? This sends a transaction from this agent's wallet."]
        assert actions.calls == ["pause"]
        page.once("dialog", lambda dialog: dialog.accept())
        page.click("#action-claim")
        sync_api.expect(page.locator("#action-result")).to_have_text("claimed in tx 0xfeed")
        sync_api.expect(page.locator("#rewards-pending")).to_have_text("0 MON")
        assert actions.calls == ["pause", "claim"]
    finally:
        context.close()
        handle.stop()
