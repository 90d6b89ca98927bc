"""``hypergpu swarm --network``, ``hypergpu bench --ab``: bad input fails in one line, before any process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.swarm.emulated import emulated_plan_extras, pair_bytes

pytestmark = pytest.mark.timeout(60)


def _run(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["hypergpu", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    return code, capsys.readouterr().err


def test_unknown_network_and_wrong_agent_count_fail_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "run"
    code, err = _run(
        ["swarm", "--agents", "3", "--network", "nowhere", "--run-dir", str(folder)], capsys, monkeypatch
    )
    assert code == 2 and "neither a built-in" in err and "Traceback" not in err
    assert not (folder / "agents").exists()  # no agent was started
    code, err = _run(
        ["swarm", "--agents", "5", "--network", "regions3", "--run-dir", str(folder)], capsys, monkeypatch
    )
    assert code == 2 and "written for 8 agents" in err
    code, err = _run(["bench", "--ab", "--agents", "3"], capsys, monkeypatch)
    assert code == 2 and "--network regions3" in err


def test_plan_extras_and_pair_accounting() -> None:
    extras = emulated_plan_extras("regions3", 8, Path("/nonexistent-run"))
    network = extras["network"]
    assert network.agent_count == 8 and not network.running  # the launcher starts it, not the plan
    assert [event.at_round for event in network.scenario.round_events()] == []
    rows = [
        {"dialer": 1, "listener": 0, "bytes_to_listener": 10, "bytes_to_dialer": 5},
        {"dialer": 0, "listener": 1, "bytes_to_listener": 7, "bytes_to_dialer": 3},
        {"dialer": None, "listener": 2, "bytes_to_listener": 100, "bytes_to_dialer": 100},
        {"dialer": 10, "listener": 2, "bytes_to_listener": 1, "bytes_to_dialer": 1},
    ]
    assert pair_bytes(rows) == {"0-1": 25, "2-10": 2}
