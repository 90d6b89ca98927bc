"""``hypergpu netem check|show`` as a user runs them: real measurement, verdicts, exit codes, errors."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.cli import netem_cmd
from agent.cli.main import main
from agent.network.check import LinkPlan, LinkResult
from agent.network.profiles import LinkProfile

pytestmark = pytest.mark.timeout(90)

SMALL = """
name = "small"
agents = 3
seed = 2
default = { rtt_ms = [30, 60], loss = 0.02, bandwidth_mbps = 16 }
"""


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> CliResult:
    monkeypatch.setattr(sys, "argv", ["hypergpu", *args])
    monkeypatch.setenv("COLUMNS", "200")
    try:
        main()
        code = 0
    except SystemExit as done:
        code = int(done.code or 0)
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def test_check_measures_a_small_scenario_and_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    policy = os.sched_getscheduler(0)
    result = run_cli(
        ["netem", "check", "--scenario", str(scenario), "--messages", "300", "--target-seconds", "2"],
        capsys,
        monkeypatch,
    )
    assert result.code == 0, result.out + result.err
    assert "all 3 links match their configuration" in result.out
    for link in ("1->0", "0->2", "2->1"):
        assert link in result.out
    assert "16" in result.out and "FAIL" not in result.out
    assert os.sched_getscheduler(0) == policy  # real-time priority only while measuring


def _result(**changes: object) -> LinkResult:
    plan = LinkPlan(0, 1, LinkProfile(name="p", rtt_ms=100, loss=0.01, bandwidth_mbps=20), 100.0)
    values: dict[str, object] = {
        "plan": plan,
        "messages": 1000,
        "measured_rtt_ms": 101.0,
        "drops": 20,
        "measured_mbps": 19.5,
    }
    values.update(changes)
    return LinkResult(**values)  # type: ignore[arg-type]


def test_verdicts() -> None:
    assert _result().ok
    assert not _result(measured_rtt_ms=116.0).rtt_ok and _result(measured_rtt_ms=114.0).rtt_ok
    assert not _result(measured_rtt_ms=None).ok
    low, high = _result().drop_bounds
    assert low < 20 < high and not _result(drops=high + 1).ok and not _result(drops=max(0, low - 1)).ok
    assert not _result(measured_mbps=23.5).bandwidth_ok and not _result(measured_mbps=None).ok
    uncapped = _result(plan=LinkPlan(0, 1, LinkProfile(rtt_ms=3), 3.0), drops=0, measured_rtt_ms=4.0)
    assert uncapped.bandwidth_ok is None and uncapped.ok
    varying = LinkPlan(0, 1, LinkProfile(rtt_ms=(50, 500), rtt_change_s=2), None)
    assert _result(plan=varying, drops=0, measured_rtt_ms=300.0).rtt_ok
    assert not _result(plan=varying, drops=0, measured_rtt_ms=600.0).rtt_ok


def test_check_exits_1_and_marks_failing_links(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fake_check(*_args: object, **_kwargs: object) -> list[LinkResult]:
        return [_result(), _result(measured_rtt_ms=130.0)]

    monkeypatch.setattr(netem_cmd, "run_check", fake_check)
    result = run_cli(["netem", "check", "--scenario", "regions3"], capsys, monkeypatch)
    assert result.code == 1
    assert "FAIL" in result.out and "1 of 2 links off their configuration" in result.err


def test_show_and_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = run_cli(["netem", "show", "regions3"], capsys, monkeypatch)
    assert shown.code == 0 and "r2-r3: RTT 250 ms, loss 0.50%, 20 Mbit/s" in shown.out
    assert "7 region3" in shown.out
    bad = tmp_path / "bad.toml"
    bad.write_text('[[regions]]\nname = "a"\nagents = "x"\n')
    failed = run_cli(["netem", "show", str(bad)], capsys, monkeypatch)
    assert failed.code == 2 and "regions.0.agents" in failed.err and "Traceback" not in failed.err
    counted = run_cli(["netem", "check", "--scenario", "regions3", "--agents", "5"], capsys, monkeypatch)
    assert counted.code == 2 and "written for 8 agents" in counted.err
