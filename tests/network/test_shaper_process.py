"""The shaper as a separate process: addressing file, control commands on stdin, clean exits."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(60)


def start(*arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agent.network.shaper", "--priority", "normal", *arguments],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ask(process: subprocess.Popen[str], command: dict | str) -> dict:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write((command if isinstance(command, str) else json.dumps(command)) + "\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def test_process_writes_addressing_and_obeys_control_commands(tmp_path: Path) -> None:
    ports_file = tmp_path / "run" / "netem.json"
    stats_file = tmp_path / "run" / "stats.json"
    process = start(
        "--scenario", "regions3", "--ports-file", str(ports_file), "--stats-file", str(stats_file)
    )
    try:
        assert process.stdout is not None
        ready = json.loads(process.stdout.readline())
        assert ready == {"ready": True, "ports_file": str(ports_file), "agents": 8}
        table = json.loads(ports_file.read_text())
        assert table["scenario"] == "regions3" and len(table["agents"]) == 8
        seven = table["agents"][7]
        assert seven["listen_host"] == "127.0.0.17" and seven["announce_host"] == "127.0.1.17"
        assert seven["announce_maddr"] == f"/ip4/127.0.1.17/tcp/{seven['announce_port']}"
        assert seven["host_maddr"] == f"/ip4/127.0.0.17/tcp/{seven['listen_port']}"

        applied = ask(process, {"kind": "degrade", "agents": [3], "profile": "poor", "at_round": 20})
        assert applied["applied"]["kind"] == "degrade" and applied["applied"]["profile"]["name"] == "poor"
        bad = ask(process, {"kind": "partition", "agents": "9-3"})
        assert "error" in bad and "agents" in bad["error"] and "backwards" in bad["error"]
        assert "not JSON" in ask(process, "degrade agent 3")["error"]
        stats = ask(process, {"kind": "stats"})
        assert stats["stats"] == [] and stats["timer_lateness_ms"] >= 0
    finally:
        assert process.stdin is not None
        process.stdin.close()  # end of stdin = the launcher is gone: the shaper must exit
        assert process.wait(timeout=10) == 0
    assert json.loads(stats_file.read_text()) == []


def test_sigterm_stops_it_while_stdin_stays_open(tmp_path: Path) -> None:
    process = start("--scenario", "perfect", "--agents", "2", "--ports-file", str(tmp_path / "p.json"))
    try:
        assert process.stdout is not None
        assert json.loads(process.stdout.readline())["ready"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()


def test_stop_command_and_scenario_errors(tmp_path: Path) -> None:
    process = start("--scenario", "perfect", "--agents", "2", "--ports-file", str(tmp_path / "p.json"))
    assert process.stdout is not None
    assert json.loads(process.stdout.readline())["ready"]
    assert process.stdin is not None
    process.stdin.write('{"kind": "stop"}\n')
    process.stdin.flush()
    assert process.wait(timeout=10) == 0

    bad = tmp_path / "bad.toml"
    bad.write_text('default = "terrible"\n')
    failed = start("--scenario", str(bad), "--ports-file", str(tmp_path / "q.json"))
    _out, err = failed.communicate(timeout=30)
    assert failed.returncode == 2
    assert err.strip().startswith("error: invalid network scenario") and "default" in err
    assert "Traceback" not in err
