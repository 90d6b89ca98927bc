"""``hypergpu swarm``: a whole local run on this machine — a bootstrap peer and N agent processes."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.cli.join_cmd import build_config
from agent.logging_setup import setup_logging
from agent.protocol.config import RunConfig
from agent.protocol.timeutil import format_utc, utc_now
from agent.swarm.launcher import (
    LocalSwarm,
    ProgressPoint,
    SwarmPlan,
    default_run_dir,
    evaluate_checkpoints,
    plot_progress,
)

log = logging.getLogger("hypergpu.swarm")

DEFAULT_MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"


def progress_line(point: ProgressPoint | None, agents: int) -> Text:
    if point is None:
        return Text(f"starting {agents} agents (DHT, bootstrap, data)...", style="dim")
    acc = f"{point.accuracy:.4f}" if point.accuracy is not None else "  -   "
    loss = f"{point.loss:.3f}" if point.loss is not None else "  -  "
    return Text.assemble(
        (f"t={point.t:6.1f}s ", "bold"),
        ("acc ", "dim"),
        (acc, "green"),
        ("  loss ", "dim"),
        loss,
        ("  samples/s ", "dim"),
        f"{point.samples_per_s:,.0f}",
        ("  round ", "dim"),
        str(point.round),
        ("  alive ", "dim"),
        f"{point.alive}/{agents}",
    )


class SwarmHooks(Protocol):
    """Called by :func:`run_local_swarm`: once every process is started, and once every agent has exited
    (the bootstrap peer is still up then, so the run's DHT records can still be read)."""

    def started(self, swarm: LocalSwarm) -> None: ...

    def agents_done(self, swarm: LocalSwarm) -> None: ...


def run_local_swarm(
    config: RunConfig,
    agents: int,
    *,
    run_dir: Path,
    max_seconds: float,
    web_port_base: int | None = None,
    console: Console | None = None,
    label: str = "swarm",
    plan_extras: dict[str, Any] | None = None,
    hooks: SwarmHooks | None = None,
) -> dict[str, Any]:
    """Run a local swarm to its end and return the report (also written to ``run_dir/report.json``)."""
    console = console or Console(stderr=True)
    plan = SwarmPlan(
        agents=agents,
        config=config,
        run_dir=run_dir,
        max_seconds=max_seconds,
        web_port_base=web_port_base,
        **(plan_extras or {}),
    )
    with LocalSwarm(plan) as swarm:
        if hooks is not None:
            hooks.started(swarm)
        if web_port_base is not None:
            for index in range(agents):
                console.print(f"agent {index}: http://127.0.0.1:{web_port_base + index}/")
        with Live(
            progress_line(None, agents), console=console, refresh_per_second=2, transient=False
        ) as live:
            swarm.wait(on_tick=lambda point: live.update(progress_line(point, agents)))
        if hooks is not None:
            hooks.agents_done(swarm)
        swarm.stop_all()
    samples, samples_per_s = swarm.throughput()
    final = evaluate_checkpoints(run_dir, config)
    finals = list(final.values())
    report = {
        "label": label,
        "run_id": config.swarm.run_id,
        "finished_at": format_utc(utc_now()),
        "agents": agents,
        "model": config.training.model,
        "dataset": config.training.dataset,
        "batch_size": config.training.batch_size,
        "local_steps": config.training.local_steps,
        "learning_rate": config.training.learning_rate,
        "target_accuracy": config.training.target_accuracy,
        "final_accuracy": finals[0] if finals else None,
        "final_accuracy_per_agent": final,
        "time_to_target_s": swarm.time_to_target_s(),
        "samples": samples,
        "samples_per_s": samples_per_s,
        "peak_rss_mb_per_agent": max((a.peak_pss_mb for a in swarm.agents), default=0.0),
        "memory_measure": "PSS of each agent's process tree (agent, DHT, averager, p2pd), peak, MiB",
        "rounds": max((int(a.last_status.get("round", 0)) for a in swarm.agents), default=0),
        "rounds_failed": sum(int(a.last_status.get("rounds_failed", 0)) for a in swarm.agents),
        "stop_reasons": {str(a.index): a.last_status.get("stop_reason", "") for a in swarm.agents},
        "exit_codes": {str(a.index): a.process.returncode for a in swarm.agents},
        "progress": [p.__dict__ for p in swarm.progress[:: max(1, len(swarm.progress) // 400)]],
    }
    network = swarm.network_summary()
    if network is not None:
        report["network"] = network
    (run_dir / "report.json").write_text(json.dumps(report, indent=2))
    plot_progress(
        swarm.progress,
        run_dir / "progress.png",
        f"{agents} agents, {config.training.model} on {config.training.dataset}",
        target=config.training.target_accuracy,
    )
    return report


def summary_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"run {report['run_id']}", show_header=True)
    table.add_column("measure")
    table.add_column("value", justify="right")
    ttt = report["time_to_target_s"]
    rows = [
        ("agents", str(report["agents"])),
        (
            "final accuracy (full test set)",
            f"{report['final_accuracy']:.4f}" if report["final_accuracy"] else "-",
        ),
        (f"time to {report['target_accuracy']:g}", f"{ttt:.1f} s" if ttt is not None else "not reached"),
        ("samples/s (all agents)", f"{report['samples_per_s']:,.0f}"),
        ("averaging rounds", str(report["rounds"])),
        ("peak memory per agent (PSS)", f"{report['peak_rss_mb_per_agent']:.0f} MiB"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def swarm(
    agents: Annotated[int, typer.Option(min=1, max=64, help="number of agent processes")] = 4,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML run configuration")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="dataset folder (default: the shared MNIST)")] = None,
    model: Annotated[str | None, typer.Option(help="model name")] = None,
    target_accuracy: Annotated[float | None, typer.Option(help="stop when the swarm reaches this")] = None,
    max_seconds: Annotated[float, typer.Option(help="stop after this much training time")] = 180.0,
    run_id: Annotated[str | None, typer.Option(help="run id (default: from config)")] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="run folder (default runs/<UTC stamp>-<run id>)")
    ] = None,
    web_port_base: Annotated[int | None, typer.Option(help="agent i serves its page on this + i")] = None,
    network: Annotated[str | None, typer.Option(help="network scenario: built-in name or TOML file")] = None,
    adaptive: Annotated[
        bool | None,
        typer.Option(
            "--adaptive/--no-adaptive", help="network-aware groups, local work, timeouts (swarm.adaptive)"
        ),
    ] = None,
    attest: Annotated[
        bool,
        typer.Option("--attest", help="attest on chain: local anvil, contract, wallets, coordinator, claims"),
    ] = False,
    reward_pool: Annotated[
        float, typer.Option(help="--attest: MON funded into the run's reward pool")
    ] = 10.0,
    epoch_reward: Annotated[
        float | None, typer.Option(help="--attest: MON paid per epoch (default: the pool over --max-seconds)")
    ] = None,
    epoch_length: Annotated[float, typer.Option(help="--attest: seconds per coordinator epoch")] = 10.0,
) -> None:
    """Start a bootstrap peer and N agents on this machine, train to the target, write report.json + plot."""
    setup_logging("WARNING", None)
    # SIGTERM unwinds like Ctrl+C, so the launcher stops its agents (they run in their own sessions).
    signal.signal(signal.SIGTERM, _raise_interrupt)
    if data_dir is None and DEFAULT_MNIST.is_dir():
        data_dir = DEFAULT_MNIST.resolve()
    cfg = build_config(
        config,
        run_id=run_id,
        data_dir=data_dir,
        model=model,
        target_accuracy=target_accuracy,
        expected_agents=agents,
    )
    if adaptive is not None:
        cfg = cfg.model_copy(update={"swarm": cfg.swarm.model_copy(update={"adaptive": adaptive})})
    folder = run_dir or default_run_dir(cfg.swarm.run_id)
    extras = _network_plan(network, agents, folder) if network else None
    console = Console(stderr=True)
    if attest:
        from agent.swarm.attested import AttestOptions, run_attested_swarm

        options = AttestOptions.from_mon(reward_pool, epoch_reward, epoch_length)
        console.print(f"run folder: {folder}")
        run_attested_swarm(cfg, agents, folder, max_seconds, options, console, web_port_base, extras)
        return
    console.print(f"run folder: {folder}")
    report = run_local_swarm(
        cfg,
        agents,
        run_dir=folder,
        max_seconds=max_seconds,
        web_port_base=web_port_base,
        console=console,
        plan_extras=extras,
    )
    Console().print(summary_table(report))
    console.print(f"wrote {folder / 'report.json'} and {folder / 'progress.png'}")


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _network_plan(network: str, agents: int, folder: Path) -> dict[str, Any]:
    from agent.swarm.emulated import emulated_plan_extras

    return emulated_plan_extras(network, agents, folder)
