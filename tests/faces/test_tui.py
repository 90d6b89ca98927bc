"""The agent TUI's behaviour, driven with Textual's Pilot: keys, the claim dialog, sorting, live updates."""

from __future__ import annotations

import threading

import pytest
from faces_fakes import FakeActions
from textual.widgets import DataTable, RichLog, Static

from agent.faces.demo import DEMO_PEERS, demo_board
from agent.faces.tui import AgentTui, ConfirmClaim, sort_peers
from agent.protocol.messages import NodeStatus
from agent.status import AlertLevel, PeerView, StatusBoard

SIZE = (160, 48)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _text(app: AgentTui, selector: str) -> str:
    return str(app.query_one(selector, Static).render())


def _column(table: DataTable, key: str) -> list[str]:
    return [str(cell) for cell in table.get_column(key)]


async def test_header_shows_identity_and_follows_updates_from_other_threads() -> None:
    board = demo_board()
    app = AgentTui(board)
    async with app.run_test(size=SIZE) as pilot:
        header = _text(app, "#header")
        for expected in (
            "mnist-demo",
            "12D3Ko…6fJwZa",
            "0x5A…9c4c",
            "cpu (2 CPU threads)",
            "TRAINING",
            "round 40",
        ):
            assert expected in header
        worker = threading.Thread(target=board.update, kwargs={"round": 41, "status": NodeStatus.AVERAGING})
        worker.start()
        worker.join()
        await pilot.pause(0.4)
        header = _text(app, "#header")
        assert "round 41" in header and "AVERAGING" in header


async def test_alerts_arrive_live_with_their_level() -> None:
    board = demo_board()
    app = AgentTui(board)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        log = app.query_one("#alerts", RichLog)
        before = len(log.lines)
        board.alert("quarantined", "this agent is quarantined: loss diverged", level=AlertLevel.ERROR)
        await pilot.pause(0.2)
        text = "\n".join(line.text for line in log.lines[before:])
        assert "ERROR" in text and "quarantined: loss diverged" in text


async def test_p_pauses_and_resumes_through_the_agent() -> None:
    board = demo_board()
    actions = FakeActions(board)
    app = AgentTui(board, actions)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause(0.4)
        assert board.snapshot().paused and "PAUSED" in _text(app, "#header")
        await pilot.press("p")
        await app.workers.wait_for_complete()
        assert actions.calls == ["pause", "resume"] and not board.snapshot().paused


async def test_read_only_tui_refuses_actions_politely() -> None:
    board = demo_board()
    app = AgentTui(board, actions=None)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p", "c")
        await pilot.pause(0.1)
        messages = [n.message for n in app._notifications]
        assert messages.count("read-only: this TUI has no agent actions") == 2
        assert not isinstance(app.screen, ConfirmClaim)


async def test_claim_dialog_cancel_sends_nothing() -> None:
    board = demo_board()
    actions = FakeActions(board)
    app = AgentTui(board, actions)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmClaim)
        assert "Claim 1.25 MON?" in str(app.screen.query_one("#question").render())
        await pilot.press("enter")  # focus starts on Cancel, so Enter is the safe choice
        assert not isinstance(app.screen, ConfirmClaim)
        await pilot.press("c", "escape")
        await app.workers.wait_for_complete()
        assert actions.calls == []
        assert board.snapshot().rewards.pending_wei > 0


async def test_claim_confirmed_runs_in_a_worker_without_blocking_the_ui() -> None:
    board = demo_board()
    gate = threading.Event()
    actions = FakeActions(board, claim_gate=gate)
    app = AgentTui(board, actions)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c", "y")
        await pilot.pause(0.1)
        assert actions.calls == ["claim"]
        await pilot.press("t")  # the claim is still waiting: the UI must still respond
        assert app.query_one("#swarm").has_class("hidden")
        gate.set()
        await app.workers.wait_for_complete()
        await pilot.pause(0.4)
        assert any("claimed in tx 0xfeed" in n.message for n in app._notifications)
        assert "pending 0 MON" in _text(app, "#rewards-text")


async def test_a_refused_claim_shows_the_agents_reason() -> None:
    board = demo_board()
    app = AgentTui(board, FakeActions(board, claim_error="the chain RPC is unreachable; check --rpc-url"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c", "y")
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        errors = [n for n in app._notifications if n.severity == "error"]
        assert [n.message for n in errors] == ["claim: the chain RPC is unreachable; check --rpc-url"]


async def test_rewards_not_configured_and_unknown_rtts_are_said_in_words() -> None:
    board = StatusBoard()
    board.set_peers([PeerView(peer_id="12D3KooWNewPeerWithoutMeasurements00")])
    app = AgentTui(board, FakeActions(board))
    async with app.run_test(size=SIZE) as pilot:
        assert "not configured" in _text(app, "#rewards-text")
        table = app.query_one("#peers", DataTable)
        assert _column(table, "rtt_ms") == ["unknown"] and _column(table, "quality") == ["● unknown"]
        await pilot.press("c")
        assert not isinstance(app.screen, ConfirmClaim)
        assert "rewards are not configured: set up a chain first" in [n.message for n in app._notifications]


async def test_peers_sort_by_header_click_and_by_key() -> None:
    board = demo_board()
    app = AgentTui(board)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#peers", DataTable)
        rtts = _column(table, "rtt_ms")
        assert [float(v) for v in rtts[:-1]] == sorted(float(v) for v in rtts[:-1]) and rtts[-1] == "unknown"
        quality_index = [str(k.value) for k in table.columns].index("quality")
        region = table._get_column_region(quality_index)
        await pilot.click("#peers", offset=(region.x + 2 + table.region.x - table.content_region.x + 1, 1))
        await pilot.pause()
        assert app.sort_key == "quality"
        order = ["excellent", "good", "fair", "poor", "critical", "unknown"]
        qualities = [q.removeprefix("● ") for q in _column(table, "quality")]
        assert qualities == sorted(qualities, key=order.index)
        await pilot.press("s")  # same column again: reversed
        assert app.sort_reverse and str(table.columns["quality"].label) == "Quality ▼"  # type: ignore[index]
        qualities = [q.removeprefix("● ") for q in _column(table, "quality")]
        assert qualities[:-1] == sorted(qualities[:-1], key=order.index, reverse=True)


async def test_current_group_is_marked_and_keeps_the_cursor_across_updates() -> None:
    board = demo_board()
    app = AgentTui(board)
    async with app.run_test(size=SIZE) as pilot:
        table = app.query_one("#peers", DataTable)
        groups = dict(zip(_column(table, "peer_id"), _column(table, "in_group"), strict=True))
        assert groups["12D3Ko…jFwNbQ"] == "★ in group" and groups["12D3Ko…GpEzAi"] == "–"
        await pilot.press("down", "down")
        selected = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        board.set_peers([*board.snapshot().peers, PeerView(peer_id="12D3KooWAaaaFirstByName", rtt_ms=1.0)])
        await pilot.pause(0.4)
        assert table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value == selected


async def test_t_cycles_panels() -> None:
    app = AgentTui(demo_board())
    async with app.run_test(size=SIZE) as pilot:
        training, swarm = app.query_one("#training"), app.query_one("#swarm")
        await pilot.press("t")
        assert training.display and not swarm.display
        await pilot.press("t")
        assert not training.display and swarm.display
        await pilot.press("t")
        assert training.display and swarm.display


async def test_w_opens_the_web_page_and_says_when_it_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    board = demo_board()
    app = AgentTui(board)
    opened: list[str] = []
    monkeypatch.setattr(app, "open_url", lambda url, new_tab=True: opened.append(url))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("w")
        await app.workers.wait_for_complete()
        assert opened == ["http://127.0.0.1:8470/"]
        board.update(web_url=None)
        await pilot.press("w")
        assert opened == ["http://127.0.0.1:8470/"]
        assert "the web page is off: start the agent with --web-port" in [
            n.message for n in app._notifications
        ]


async def test_q_calls_the_shutdown_callback_once_and_exits() -> None:
    calls: list[str] = []
    app = AgentTui(demo_board(), on_quit=lambda: calls.append("stop"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert calls == ["stop"]
    assert app.return_code == 0


def test_sort_peers_puts_unknown_last_in_both_directions() -> None:
    peers = (
        PeerView(peer_id="b", rtt_ms=20.0),
        PeerView(peer_id="a", rtt_ms=None),
        PeerView(peer_id="c", rtt_ms=5.0),
    )
    assert [p.peer_id for p in sort_peers(peers, "rtt_ms", reverse=False)] == ["c", "b", "a"]
    assert [p.peer_id for p in sort_peers(peers, "rtt_ms", reverse=True)] == ["b", "c", "a"]
    assert DEMO_PEERS[0] not in [p.peer_id for p in demo_board().snapshot().peers]


class _FailingAgent(FakeActions):
    def pause(self) -> None:
        raise RuntimeError("training thread is gone")


async def test_a_failing_agent_action_is_reported_and_the_tui_keeps_running() -> None:
    board = demo_board()
    app = AgentTui(board, _FailingAgent(board))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        assert app.is_running
        errors = [n.message for n in app._notifications if n.severity == "error"]
        assert errors == ["pause: failed: training thread is gone"]
