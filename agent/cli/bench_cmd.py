"""``hypergpu bench``: the single-process baseline and the N-agent swarm, measured in one invocation.

Example: ``hypergpu bench --agents 8 --model cnn-small --target-accuracy 0.98 --max-seconds 120
--report runs/bench.json``. Prints a table and writes JSON with the fields README.md lists.

With ``--ab --network regions3`` it runs the same swarm under the emulated network twice, adaptive
(``swarm.adaptive``) and plain (StaticPolicy), then the adaptive swarm on the ``perfect`` network
(``--no-perfect`` skips it): ``hypergpu bench --agents 8 --network regions3 --ab --model cnn
--target-accuracy 0.97 --report FILE`` (see :mod:`agent.bench.ab`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from agent.bench.baseline import run_baseline
from agent.cli.join_cmd import build_config
from agent.cli.swarm_cmd import DEFAULT_MNIST, run_local_swarm
from agent.errors import ConfigError
from agent.logging_setup import setup_logging
from agent.swarm.emulated import emulated_plan_extras
from agent.swarm.launcher import default_run_dir


def _fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    if value is None:
        return "not reached"
    return f"{value:{spec}}{unit}"


def bench(
    agents: Annotated[int, typer.Option(min=1, max=64, help="agents in the swarm")] = 8,
    model: Annotated[str, typer.Option(help="model name")] = "cnn-small",
    target_accuracy: Annotated[float, typer.Option(help="accuracy to reach")] = 0.98,
    max_seconds: Annotated[float, typer.Option(help="training time limit for each side")] = 120.0,
    data_dir: Annotated[Path | None, typer.Option(help="dataset folder (default: the shared MNIST)")] = None,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML run configuration")] = None,
    skip_baseline: Annotated[bool, typer.Option(help="swarm only (no ratios)")] = False,
    network: Annotated[
        str | None, typer.Option(help="emulated network for the swarm: built-in name or TOML file")
    ] = None,
    ab: Annotated[
        bool, typer.Option("--ab", help="adaptive vs plain swarm under --network (A/B), same invocation")
    ] = False,
    perfect: Annotated[
        bool, typer.Option(help="--ab: also run the adaptive swarm on the perfect network")
    ] = True,
) -> None:
    """Measure the swarm against a single-process baseline on the same machine, in the same run."""
    setup_logging("WARNING", None)
    console = Console(stderr=True)
    if data_dir is None and DEFAULT_MNIST.is_dir():
        data_dir = DEFAULT_MNIST.resolve()
    cfg = build_config(
        config, data_dir=data_dir, model=model, target_accuracy=target_accuracy, expected_agents=agents
    )
    if ab:
        from agent.bench.ab import ab_table, run_ab

        if network is None:
            raise ConfigError(
                "--ab compares adaptive and plain swarms under a network: add --network regions3"
            )
        result = run_ab(cfg, agents, network, max_seconds, console=console, perfect=perfect)
        Console().print(ab_table(result))
        if report is not None:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(json.dumps(result, indent=2))
            console.print(f"wrote {report}")
        return
    baseline = None
    if not skip_baseline:
        with console.status(
            f"baseline: one process, {model}, until {target_accuracy:g} or {max_seconds:g} s"
        ):
            baseline = run_baseline(cfg.training, max_seconds)
        console.print(
            f"baseline: {baseline.samples_per_s:,.0f} samples/s, "
            f"time to target {_fmt(baseline.time_to_target_s, '.1f', ' s')}"
        )
    run_dir = default_run_dir(f"bench-{cfg.swarm.run_id}")
    extras = emulated_plan_extras(network, agents, run_dir) if network else None
    swarm_report = run_local_swarm(
        cfg, agents, run_dir=run_dir, max_seconds=max_seconds, console=console, plan_extras=extras
    )
    result = {
        "agents": agents,
        "model": model,
        "target_accuracy": target_accuracy,
        "final_accuracy": swarm_report["final_accuracy"],
        "time_to_target_s": swarm_report["time_to_target_s"],
        "samples_per_s": swarm_report["samples_per_s"],
        "baseline_samples_per_s": baseline.samples_per_s if baseline else None,
        "baseline_time_to_target_s": baseline.time_to_target_s if baseline else None,
        "baseline_final_accuracy": baseline.final_accuracy if baseline else None,
        "throughput_ratio": (swarm_report["samples_per_s"] / baseline.samples_per_s) if baseline else None,
        "time_to_target_ratio": (
            swarm_report["time_to_target_s"] / baseline.time_to_target_s
            if baseline and baseline.time_to_target_s and swarm_report["time_to_target_s"]
            else None
        ),
        "peak_rss_mb_per_agent": swarm_report["peak_rss_mb_per_agent"],
        "rounds": swarm_report["rounds"],
        "run_dir": str(run_dir),
        "baseline_threads": baseline.threads if baseline else None,
    }
    table = Table(title=f"hypergpu bench: {agents} agents, {model}, target {target_accuracy:g}")
    table.add_column("measure")
    table.add_column("baseline (1 process)", justify="right")
    table.add_column(f"swarm ({agents} agents)", justify="right")
    table.add_column("ratio", justify="right")
    table.add_row(
        "samples/s",
        _fmt(result["baseline_samples_per_s"], ",.0f"),
        _fmt(result["samples_per_s"], ",.0f"),
        _fmt(result["throughput_ratio"], ".2f"),
    )
    table.add_row(
        f"time to {target_accuracy:g}",
        _fmt(result["baseline_time_to_target_s"], ".1f", " s"),
        _fmt(result["time_to_target_s"], ".1f", " s"),
        _fmt(result["time_to_target_ratio"], ".2f"),
    )
    table.add_row(
        "final accuracy",
        _fmt(result["baseline_final_accuracy"], ".4f"),
        _fmt(result["final_accuracy"], ".4f"),
        "",
    )
    table.add_row("peak memory per agent", "", _fmt(result["peak_rss_mb_per_agent"], ".0f", " MiB"), "")
    Console().print(table)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {report}")
