"""The swarm page in a real browser (Playwright driving Debian's Chromium at /usr/bin/chromium), against a
coordinator whose epoch is posted on a real anvil with one forged record."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from swarm_page_fixtures import PEERS, WALLETS, closed_state, more_rounds, post_on_chain

from agent.chain.anvil import AnvilProcess, find_anvil
from agent.faces.browser import CHROMIUM_PATH, launch_chromium
from agent.faces.web import WebServerHandle, serve_in_thread
from coordinator_lite.api import create_app

pytestmark = pytest.mark.skipif(
    not CHROMIUM_PATH.exists(), reason="needs /usr/bin/chromium (run scripts/setup-system as root)"
)
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory) -> Iterator[WebServerHandle]:
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup (npm ci installs @foundry-rs/anvil)")
    folder = tmp_path_factory.mktemp("coordinator")
    state = closed_state(folder, extra_bound_peer=True)
    with AnvilProcess(accounts=3) as anvil:
        run = post_on_chain(state, anvil, tamper=lambda c: more_rounds(c, WALLETS[1].address))
        handle = serve_in_thread(create_app(state, proofs_need_chain=True, chain=run.chain))
        yield handle
        handle.stop()
    state.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


def _open(browser, url: str, problems: list[str], **context_options):
    context = browser.new_context(**{"viewport": {"width": 1280, "height": 900}, **context_options})
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#connection.live")
    page.wait_for_selector("#check-body tr[data-verdict]")
    return context, page


def test_page_shows_agents_epochs_and_highlights_the_forged_record(
    browser, coordinator, tmp_path: Path
) -> None:
    problems: list[str] = []
    context, page = _open(browser, coordinator.url, problems)
    try:
        assert page.text_content("#run-id") == "page-test"
        assert page.text_content("#network") == "local (chain 31337)"
        rows = page.locator("#agents-body tr[data-peer]")
        assert rows.count() == 4
        assert page.get_attribute(f'#agents-body tr[data-peer="{PEERS[1]}"]', "class") == "diff"
        late = page.locator('#agents-body tr[data-peer="12D3KooWLateJoiner"]')
        assert late.locator(".agent-status").text_content() == "bound"
        epoch = page.locator('#epochs-body tr[data-epoch="0"]')
        assert "✓ posted" in epoch.text_content()
        assert epoch.locator(".txs li").count() == 3
        assert epoch.locator(".txs a").count() == 0  # anvil: hashes without explorer links
        summary = page.text_content("#check-summary")
        assert summary.startswith("✗ 1 difference between the chain and the coordinator")
        first = page.locator("#check-body tr").first
        assert first.get_attribute("data-verdict") == "mismatch" and first.get_attribute("class") == "diff"
        assert first.locator("mark").count() == 2 and "rounds" in first.locator("mark").first.text_content()
        assert page.locator('#check-body tr[data-verdict="match"]').count() == 3  # 2 records + the root
        page.screenshot(path=str(tmp_path / "swarm-page.png"), full_page=True)
        page.click("#theme-toggle")
        assert page.get_attribute("html", "data-theme") == "dark"
        page.screenshot(path=str(tmp_path / "swarm-page-dark.png"), full_page=True)
        print(f"\nscreenshots: {tmp_path}")
        assert (tmp_path / "swarm-page.png").stat().st_size > 50_000
        assert problems == []
    finally:
        context.close()


def test_agents_sort_and_the_check_reruns(browser, coordinator) -> None:
    problems: list[str] = []
    context, page = _open(browser, coordinator.url, problems)
    try:
        page.click("th button[data-key='compute_seconds']")
        values = page.eval_on_selector_all(
            "#agents-body tr[data-peer]", "rows => rows.map(r => parseFloat(r.cells[4].textContent))"
        )
        assert values == sorted(values)
        assert page.get_attribute("th:has(button[data-key='compute_seconds'])", "aria-sort") == "ascending"
        page.focus("th button[data-key='check']")
        page.keyboard.press("Enter")
        checks = page.eval_on_selector_all(
            "#agents-body tr[data-peer]", "rows => rows.map(r => r.cells[8].textContent)"
        )
        assert checks[0] == "✗ differs" and checks[-1] == "–"  # the bound agent has no record: last
        with page.expect_response("**/api/chain-check"):
            page.click("#check-run")
        sync_api.expect(page.locator("#check-run")).to_have_text("Check again")
        assert problems == []
    finally:
        context.close()


def test_phone_layout_fits_the_screen(browser, coordinator, tmp_path: Path) -> None:
    problems: list[str] = []
    context, page = _open(
        browser,
        coordinator.url,
        problems,
        viewport={"width": 390, "height": 844},
        is_mobile=True,
        has_touch=True,
    )
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 390  # wide tables scroll inside
        page.screenshot(path=str(tmp_path / "swarm-page-phone.png"), full_page=True)
        assert problems == []
    finally:
        context.close()
