"""Run configuration: defaults, edge cases, precedence (TOML < env < flags) and `hypergpu config check`.

Run: .venv/bin/python -m pytest tests/protocol/test_config.py -q
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.errors import ConfigError
from agent.protocol.config import RunConfig, TrainingConfig, load_run_config
from agent.training.datasets import available_datasets
from agent.training.models import available_models

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("HYPERGPU_"):
            monkeypatch.delenv(key)


def _error(overrides: dict[str, Any] | None = None, file: Path | None = None) -> str:
    with pytest.raises(ConfigError) as raised:
        load_run_config(file, overrides)
    assert raised.value.exit_code == 2
    return str(raised.value)


def test_defaults_are_filled_in() -> None:
    config = load_run_config()
    assert config == RunConfig()
    assert config.training.model == "cnn-small" and config.training.dataset == "mnist"
    assert config.training.batch_size == 64 and config.training.data_dir is None
    assert config.swarm.host == "127.0.0.1" and config.swarm.initial_peers == []


def test_a_partial_file_keeps_defaults_for_the_rest(tmp_path: Path) -> None:
    file = tmp_path / "run.toml"
    file.write_text('[training]\nmodel = "mlp"\n\n[swarm]\nrun_id = "exp-1"\n')
    config = load_run_config(file)
    assert config.training.model == "mlp" and config.swarm.run_id == "exp-1"
    assert config.training.learning_rate == TrainingConfig().learning_rate
    assert config.log.level == "INFO"


@pytest.mark.parametrize(
    ("section", "field", "value", "expected"),
    [
        ("swarm", "run_id", "", "at least 1 character"),
        ("training", "model", "", "unknown model; allowed: mlp, cnn-small, cnn, resnet-small"),
        ("training", "dataset", "", "unknown dataset; allowed: mnist, cifar10, synthetic"),
        ("training", "data_dir", "", "empty path"),
        ("swarm", "host", "", "not an IPv4 address"),
        ("swarm", "host", "localhost", "not an IPv4 address"),
        ("training", "learning_rate", -0.1, "greater than 0"),
        ("training", "learning_rate", 0, "greater than 0"),
        ("training", "learning_rate", float("nan"), "finite number"),
        ("training", "weight_decay", float("inf"), "finite number"),
        ("training", "weight_decay", -1e-4, "greater than or equal to 0"),
        ("training", "batch_size", 0, "greater than or equal to 1"),
        ("training", "batch_size", -32, "greater than or equal to 1"),
        ("training", "batch_size", 2.5, "valid integer"),
        ("training", "local_steps", 0, "greater than or equal to 1"),
        ("training", "momentum", 1.0, "less than 1"),
        ("training", "target_accuracy", 1.5, "less than or equal to 1"),
        ("training", "epochs", -1, "greater than 0"),
        ("swarm", "port", -1, "greater than or equal to 0"),
        ("swarm", "port", 70_000, "less than or equal to 65535"),
        ("swarm", "run_id", "has space", "should match pattern"),
        ("log", "level", "LOUD", "should match pattern"),
    ],
)
def test_bad_values_name_field_value_and_what_is_allowed(
    section: str, field: str, value: object, expected: str
) -> None:
    message = _error({section: {field: value}})
    line = next(line for line in message.splitlines() if line.strip().startswith(f"{section}.{field} ="))
    assert f"{section}.{field} = {value!r}" in line
    assert expected in line


def test_unknown_names_match_the_registries() -> None:
    assert f"allowed: {', '.join(available_models())}" in _error({"training": {"model": "gpt"}})
    assert f"allowed: {', '.join(available_datasets())}" in _error({"training": {"dataset": "coco"}})


def test_unknown_fields_and_sections_list_the_allowed_names() -> None:
    message = _error({"training": {"lr": 0.1}})
    assert "training.lr = 0.1: unknown field; allowed: model, dataset, data_dir, learning_rate" in message
    assert "trainin = {...}: unknown field; allowed: training, swarm" in _error({"trainin": {"model": "x"}})


def test_unreadable_data_dir_is_refused_and_a_real_one_accepted(tmp_path: Path) -> None:
    assert "not a readable directory" in _error({"training": {"data_dir": str(tmp_path / "missing")}})
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "not a readable directory" in _error({"training": {"data_dir": str(a_file)}})
    assert load_run_config(overrides={"training": {"data_dir": str(tmp_path)}}).training.data_dir == tmp_path


def test_several_bad_fields_are_reported_together_one_per_line() -> None:
    message = _error({"training": {"batch_size": 0, "learning_rate": -1}, "swarm": {"run_id": ""}})
    lines = message.splitlines()
    assert lines[0].startswith("invalid configuration")
    assert len(lines) == 4
    assert {line.split(" = ")[0].strip() for line in lines[1:]} == {
        "training.batch_size",
        "training.learning_rate",
        "swarm.run_id",
    }


def test_group_sizes_are_checked_against_each_other() -> None:
    message = _error({"swarm": {"min_group_size": 9, "target_group_size": 4}})
    assert "min_group_size (9) must not exceed target_group_size (4)" in message


def test_toml_then_environment_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "run.toml"
    file.write_text("[training]\nbatch_size = 32\nlearning_rate = 0.2\n")
    assert load_run_config(file).training.batch_size == 32
    monkeypatch.setenv("HYPERGPU_TRAINING__BATCH_SIZE", "48")
    config = load_run_config(file)
    assert config.training.batch_size == 48 and config.training.learning_rate == 0.2
    assert load_run_config(file, {"training": {"batch_size": 16}}).training.batch_size == 16
    # unset flags (None) mask neither the environment nor the file
    unset = load_run_config(file, {"training": {"batch_size": None, "learning_rate": None}, "swarm": None})
    assert unset.training.batch_size == 48 and unset.training.learning_rate == 0.2
    assert load_run_config(file, use_env=False).training.batch_size == 32


def test_environment_values_are_validated_and_lists_parse_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = ["/ip4/127.0.0.1/tcp/4001/p2p/QmPeerA", "/ip4/127.0.0.2/tcp/4001/p2p/QmPeerB"]
    monkeypatch.setenv("HYPERGPU_SWARM__INITIAL_PEERS", '["' + '", "'.join(peers) + '"]')
    monkeypatch.setenv("HYPERGPU_LOG__LEVEL", "debug")
    config = load_run_config()
    assert config.swarm.initial_peers == peers and config.log.level == "DEBUG"
    monkeypatch.setenv("HYPERGPU_TRAINING__BATCH_SIZE", "zero")
    assert "training.batch_size = 'zero'" in _error()


def test_bad_files_give_one_clear_error(tmp_path: Path) -> None:
    assert "does not exist" in _error(file=tmp_path / "nope.toml")
    assert "cannot read config file" in _error(file=tmp_path)
    broken = tmp_path / "broken.toml"
    broken.write_text("[training\nmodel = 'mlp'\n")
    assert "is not valid TOML" in _error(file=broken)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00model")
    assert "cannot read config file" in _error(file=binary)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HYPERGPU_")}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_config_check_cli_exits_2_with_the_message_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[training]\nbatch_size = 0\nmodel = "transformer"\n')
    result = _run_cli("config", "check", str(bad))
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "training.batch_size = 0: Input should be greater than or equal to 1" in result.stderr
    assert "training.model = 'transformer': unknown model; allowed: mlp, cnn-small" in result.stderr


def test_config_check_accepts_a_valid_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # in-process through the console script's own entry point: a second interpreter costs seconds here
    from agent.cli.main import main

    good = tmp_path / "good.toml"
    good.write_text('[training]\nmodel = "mlp"\nbatch_size = 128\n')
    monkeypatch.setattr(sys, "argv", ["hypergpu", "config", "check", str(good)])
    try:
        main()  # returns on success (typer runs with standalone_mode=False)
    except SystemExit as exited:
        assert exited.code in (0, None)
    printed = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "is a valid run configuration" in printed and '"batch_size": 128' in printed
