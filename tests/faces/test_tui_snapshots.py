"""How the agent TUI looks, as SVG snapshots at a fixed terminal size (pytest-textual-snapshot).

The data is the deterministic demo board (fixed timestamps). After an intended change of looks, run
``pytest tests/faces/test_tui_snapshots.py --snapshot-update`` and review the SVGs before committing.
"""

from __future__ import annotations

from faces_fakes import FakeActions

from agent.faces.demo import demo_board
from agent.faces.tui import AgentTui
from agent.status import StatusBoard

TERMINAL = (160, 48)


async def _settle(pilot) -> None:
    await pilot.pause(0.1)


def test_main_screen(snap_compare) -> None:
    board = demo_board()
    assert snap_compare(AgentTui(board, FakeActions(board)), terminal_size=TERMINAL, run_before=_settle)


def test_training_panel_only(snap_compare) -> None:
    assert snap_compare(AgentTui(demo_board()), terminal_size=TERMINAL, press=["t"], run_before=_settle)


def test_claim_confirmation_dialog(snap_compare) -> None:
    board = demo_board()
    assert snap_compare(AgentTui(board, FakeActions(board)), terminal_size=TERMINAL, press=["c"])


def test_fresh_agent_without_chain_or_peers(snap_compare) -> None:
    assert snap_compare(AgentTui(StatusBoard()), terminal_size=TERMINAL, run_before=_settle)
