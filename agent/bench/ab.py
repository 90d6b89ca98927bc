"""The network A/B benchmark: the same local swarm under an emulated network, adaptive vs plain hivemind.

``hypergpu bench --agents 8 --network regions3 --ab --model cnn --target-accuracy 0.97 --report FILE``
calls :func:`run_ab`. Three runs, one after the other, on the same machine in one invocation:

1. **adaptive**: ``swarm.adaptive`` on (link monitor, latency groups, adaptive local work, timeouts,
   quarantine) under the network;
2. **baseline**: plain hivemind behaviour (:class:`agent.swarm.policy.StaticPolicy`: one global group
   key, i.e. random groups, the configured local steps and batch, the configured timeouts), same network;
3. **perfect** (optional): the adaptive swarm on the ``perfect`` network, for its samples/s.

Figures (see :func:`run_ab` for the JSON): time to target per run (from the first agent's start of
training to the first moment the swarm's pooled test accuracy reached the target, seen by an agent
or by the launcher from the agents' slice evaluations; the agents are stopped 10 s later), ``speedup`` =
baseline / adaptive, final accuracy (mean over the agents' final checkpoints on the full test set),
``adaptation_overhead_fraction`` = seconds the adaptive agents spent deciding and monitoring / their
wall time, and ``monitoring_traffic_fraction`` = the monitors' estimated bytes / the other bytes through
the shaper.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from agent.protocol.config import RunConfig
from agent.swarm.emulated import emulated_plan_extras
from agent.swarm.launcher import default_run_dir


def _statuses(run_dir: Path) -> list[dict[str, Any]]:
    statuses = []
    for path in sorted((run_dir / "agents").glob("*/status.json")):
        try:
            statuses.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return statuses


def summarize_run(report: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """The figures of one run from its ``report.json`` contents and the agents' ``status.json`` files."""
    statuses = _statuses(run_dir)
    finals = [value for value in (report.get("final_accuracy_per_agent") or {}).values() if value is not None]
    wall = sum(
        max(
            0.0,
            (s["clock"].get("train_end") or s.get("written_at") or 0.0)
            - (s["clock"].get("train_start") or 0.0),
        )
        for s in statuses
        if s.get("clock", {}).get("train_start")
    )
    decisions = sum(float(s.get("decision_seconds") or 0.0) for s in statuses)
    monitors = [(s.get("policy_report") or {}).get("monitor") or {} for s in statuses]
    monitoring_bytes = sum(int(m.get("bytes_estimate", 0)) for m in monitors)
    network = report.get("network") or {}
    shaped = int(network.get("bytes_total", 0))
    training_bytes = max(0, shaped - monitoring_bytes)
    return {
        "time_to_target_s": report.get("time_to_target_s"),
        "final_accuracy": statistics.fmean(finals) if finals else None,
        "final_accuracy_min": min(finals) if finals else None,
        "samples_per_s": report.get("samples_per_s"),
        "samples": report.get("samples"),
        "rounds": report.get("rounds"),
        "rounds_failed": report.get("rounds_failed"),
        "stop_reasons": report.get("stop_reasons"),
        "policy": sorted({str(s.get("policy")) for s in statuses}),
        "agent_wall_seconds": wall,
        "decision_seconds": decisions,
        "adaptation_overhead_fraction": decisions / wall if wall > 0 else None,
        "shaped_bytes": shaped,
        "monitoring_bytes": monitoring_bytes,
        "monitoring_traffic_fraction": monitoring_bytes / training_bytes if training_bytes else None,
        "decisions_total": sum(
            int((s.get("policy_report") or {}).get("decisions_total", 0)) for s in statuses
        ),
        "run_dir": str(run_dir),
    }


def _one_run(
    config: RunConfig,
    agents: int,
    network: str,
    max_seconds: float,
    *,
    adaptive: bool,
    label: str,
    console: Console,
) -> dict[str, Any]:
    from agent.cli.swarm_cmd import run_local_swarm

    run_config = config.model_copy(
        update={"swarm": config.swarm.model_copy(update={"adaptive": adaptive, "run_id": f"ab-{label}"})}
    )
    run_dir = default_run_dir(f"bench-ab-{label}")
    console.print(
        f"[bold]{label}[/]: {agents} agents, network {network}, adaptive={adaptive}, folder {run_dir}"
    )
    report = run_local_swarm(
        run_config,
        agents,
        run_dir=run_dir,
        max_seconds=max_seconds,
        console=console,
        label=f"bench --ab {label}",
        plan_extras=emulated_plan_extras(network, agents, run_dir) | {"stop_at_target": True},
    )
    return summarize_run(report, run_dir)


def run_ab(
    config: RunConfig,
    agents: int,
    network: str,
    max_seconds: float,
    *,
    console: Console | None = None,
    perfect: bool = True,
) -> dict[str, Any]:
    """Run adaptive, baseline (and perfect) swarms; return the JSON report (see the module docstring).

    ``speedup`` is None when a side did not reach the target; ``speedup_at_least`` then gives the bound
    the time limit allows (baseline limit / adaptive time) when only the baseline missed it.
    """
    console = console or Console(stderr=True)
    with contextlib.suppress(ValueError):  # not the main thread: the caller handles signals
        # SIGTERM unwinds like Ctrl+C, so each LocalSwarm stops its agents (they run in their own sessions).
        signal.signal(signal.SIGTERM, _raise_interrupt)
    started = time.time()
    load_before = os.getloadavg()
    adaptive = _one_run(
        config, agents, network, max_seconds, adaptive=True, label="adaptive", console=console
    )
    baseline = _one_run(
        config, agents, network, max_seconds, adaptive=False, label="baseline", console=console
    )
    on_perfect = (
        _one_run(config, agents, "perfect", max_seconds, adaptive=True, label="perfect", console=console)
        if perfect
        else None
    )
    a_time, b_time = adaptive["time_to_target_s"], baseline["time_to_target_s"]
    result: dict[str, Any] = {
        "agents": agents,
        "model": config.training.model,
        "network": network,
        "target_accuracy": config.training.target_accuracy,
        "max_seconds": max_seconds,
        "adaptive": adaptive,
        "baseline": baseline,
        "perfect": on_perfect,
        "speedup": b_time / a_time if a_time and b_time else None,
        "speedup_at_least": max_seconds / a_time if a_time and b_time is None else None,
        "adaptation_overhead_fraction": adaptive["adaptation_overhead_fraction"],
        "monitoring_traffic_fraction": adaptive["monitoring_traffic_fraction"],
        "adaptive_samples_per_s_vs_perfect": (
            adaptive["samples_per_s"] / on_perfect["samples_per_s"]
            if on_perfect and on_perfect.get("samples_per_s")
            else None
        ),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "wall_seconds": time.time() - started,
    }
    return result


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _fmt(value: Any, spec: str = ".1f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def ab_table(result: dict[str, Any]) -> Table:
    """The A/B figures as a table."""
    title = f"hypergpu bench --ab: {result['agents']} agents, {result['model']}, network {result['network']}"
    table = Table(title=title)
    table.add_column("measure")
    table.add_column("adaptive", justify="right")
    table.add_column("plain hivemind", justify="right")
    table.add_column("adaptive, perfect net", justify="right")
    runs = [result["adaptive"], result["baseline"], result["perfect"] or {}]
    rows = [
        (f"time to {result['target_accuracy']:g}", "time_to_target_s", ".1f", " s"),
        ("final accuracy (mean)", "final_accuracy", ".4f", ""),
        ("samples/s", "samples_per_s", ",.0f", ""),
        ("averaging rounds", "rounds", "d", ""),
        ("failed rounds", "rounds_failed", "d", ""),
    ]
    for name, key, spec, unit in rows:
        table.add_row(name, *(_fmt(run.get(key), spec, unit) for run in runs))
    table.add_row("speedup (plain / adaptive)", _fmt(result["speedup"], ".2f"), "", "")
    table.add_row("adaptation overhead", _fmt(result["adaptation_overhead_fraction"], ".3%"), "", "")
    table.add_row("monitoring / training bytes", _fmt(result["monitoring_traffic_fraction"], ".3%"), "", "")
    return table
