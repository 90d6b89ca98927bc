"""Real agent processes on loopback, each with its own libp2p peer, training on the shared MNIST."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.protocol.config import load_run_config
from agent.swarm.launcher import LocalSwarm, SwarmPlan, evaluate_checkpoints
from agent.training.checkpoint import load_checkpoint
from agent.training.models import build_model
from agent.training.parameters import pack

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"

pytestmark = [
    pytest.mark.swarm,
    pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST folder is missing"),
]


def _config(agents: int, target: float, run_id: str, **training: object):
    return load_run_config(
        None,
        {
            "training": {"data_dir": str(MNIST.resolve()), "target_accuracy": target, **training},
            "swarm": {"run_id": run_id, "expected_agents": agents},
            "checkpoint": {"every_rounds": 5},
        },
        use_env=False,
    )


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def _status(swarm: LocalSwarm, index: int) -> dict:
    swarm.read_statuses()
    return next(a.last_status for a in swarm.agents if a.index == index)


def test_swarm_survives_a_killed_agent_takes_a_late_joiner_and_reaches_95_percent(tmp_path: Path) -> None:
    """4 agents train; one is SIGKILLed mid-run, a fifth joins late and loads the swarm's state."""
    plan = SwarmPlan(agents=4, config=_config(4, 0.98, "it-kill-join"), run_dir=tmp_path, max_seconds=120)
    with LocalSwarm(plan) as swarm:
        _wait_for(lambda: all(_status(swarm, i).get("round", 0) >= 1 for i in range(4)), 120, "a round")
        swarm.kill_agent(3)
        late = swarm.start_agent(4)
        swarm.wait(timeout_s=200)
        swarm.stop_all()
    statuses = {a.index: a.last_status for a in swarm.agents}

    # The survivors were not stopped by the crash: they ran on to the target (or the time limit).
    for agent in swarm.agents:
        if agent.index != 3:
            assert agent.process.returncode == 0, (agent.index, statuses[agent.index]["stop_reason"])
    for index in (0, 1, 2):
        assert statuses[index]["rounds_ok"] >= 3, statuses[index]

    # The late joiner downloaded the swarm's state instead of starting from scratch, and its first
    # evaluation was close to the swarm's accuracy at that time.
    joiner = statuses[4]
    assert late.process.returncode == 0, joiner["stop_reason"]
    assert joiner["loaded_state"] is not None and joiner["loaded_state"]["round"] >= 1
    assert joiner["first_eval"]["at"] - joiner["clock"]["train_start"] < 5.0  # its first evaluation
    assert joiner["first_eval"]["accuracy"] > 0.9, joiner["first_eval"]  # a fresh model would be near 0.1

    final = evaluate_checkpoints(tmp_path, plan.config)
    assert {"0", "1", "2", "4"} <= set(final)
    assert min(final[i] for i in ("0", "1", "2")) >= 0.95, final


def test_checkpoint_and_resume_restore_exactly_the_saved_parameters(tmp_path: Path) -> None:
    config = _config(2, 0.999, "it-resume", epochs=50)
    plan = SwarmPlan(agents=2, config=config, run_dir=tmp_path, max_seconds=8)
    with LocalSwarm(plan) as swarm:
        swarm.wait(timeout_s=120)
    saved = load_checkpoint(tmp_path / "agents" / "0" / "checkpoints")
    assert saved is not None and saved.samples > 0
    model = build_model("cnn-small")
    model.load_state_dict(saved.model_state)
    expected = pack(model, version=saved.round, model_name="cnn-small").sha256

    # Resume agent 0 alone; it restores the checkpoint before training one more short stretch.
    one = _config(1, 0.999, "it-resume", epochs=50)
    resumed = tmp_path / "resumed.toml"
    from agent.swarm.launcher import write_config_toml

    write_config_toml(one, resumed)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "join",
            "--no-tui",
            "--config",
            str(resumed),
            "--resume",
            "--workdir",
            str(tmp_path / "agents" / "0"),
            "--max-seconds",
            "1",
            "--threads",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    status = json.loads((tmp_path / "agents" / "0" / "status.json").read_text())
    assert status["resumed_from"] == {"round": saved.round, "params_sha256": expected}
    assert status["samples_total"] > saved.samples  # it went on counting from the checkpoint


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "join",
            "--no-tui",
            "--resume",
            "--workdir",
            str(tmp_path),
            "--data-dir",
            str(MNIST.resolve()),
            "--max-seconds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "no checkpoint" in result.stderr and "Traceback" not in result.stderr
