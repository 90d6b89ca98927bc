"""``hypergpu netem check|serve|show``: measure, run and inspect emulated network scenarios.

``hypergpu netem check --scenario regions3 --messages 1000`` starts the shaper with echo servers
behind it, measures every link and exits 0 only when RTT, bandwidth and drop rates match the scenario.
``hypergpu netem serve --scenario regions3 --agents 8 --ports-file F`` runs the shaper for a launcher
(the same as ``python -m agent.network.shaper``). ``hypergpu netem show regions3`` prints the link
matrix and events without starting anything.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from agent.errors import ConfigError
from agent.network.check import LinkCheckFailed, LinkResult, run_check, stall_threshold_ms
from agent.network.conditions import NetworkConditions
from agent.network.scenario import load_scenario
from agent.network.serve import elevated_priority, raise_priority, run_fast
from agent.network.serve import serve as run_shaper

netem_app = typer.Typer(help="Emulated WAN links for local swarms (user-space netem).", no_args_is_help=True)


def _mark(ok: bool | None) -> str:
    if ok is None:
        return "[dim]-[/dim]"
    return "[green]ok[/green]" if ok else "[bold red]FAIL[/bold red]"


def _rtt_configured(result: LinkResult) -> str:
    if result.plan.configured_rtt_ms is None:
        low, high = result.plan.profile.rtt_ms
        return f"{low:g}-{high:g} (varying)"
    return f"{result.plan.configured_rtt_ms:.1f}"


def results_table(results: list[LinkResult], title: str) -> Table:
    """The configured-vs-measured table of ``hypergpu netem check``."""
    table = Table(title=title, show_lines=False)
    for column in ("link", "profile", "RTT cfg ms", "RTT meas ms", "", "Mbit/s cfg", "Mbit/s meas", ""):
        table.add_column(column, justify="left" if column in ("link", "profile") else "right")
    for column in ("drops", "expected", "99% bounds", ""):
        table.add_column(column, justify="right")
    for result in results:
        plan = result.plan
        cap = plan.profile.bandwidth_mbps
        low, high = result.drop_bounds
        table.add_row(
            f"{plan.dialer}->{plan.listener}",
            plan.profile.name,
            _rtt_configured(result),
            "-" if result.measured_rtt_ms is None else f"{result.measured_rtt_ms:.1f}",
            _mark(result.rtt_ok),
            "unlimited" if cap is None else f"{cap:g}",
            "-" if result.measured_mbps is None else f"{result.measured_mbps:.2f}",
            _mark(result.bandwidth_ok),
            f"{result.drops}/{result.messages}",
            f"{result.expected_drop_rate * result.messages:.1f}",
            f"{low}-{high}",
            _mark(result.drops_ok),
        )
    return table


@netem_app.command("check")
def check(
    scenario: str = typer.Option("regions3", "--scenario", help="built-in name or .toml/.json file"),
    agents: int | None = typer.Option(None, "--agents", help="number of agents (default: the scenario's)"),
    messages: int = typer.Option(1000, "--messages", min=10, max=100_000, help="round trips per link"),
    max_links: int = typer.Option(64, "--max-links", min=1, help="measure a seeded sample beyond this many"),
    target_seconds: float = typer.Option(
        10.0, "--target-seconds", min=0.5, help="spread each link's messages over about this long"
    ),
) -> None:
    """Measure every emulated link: configured vs measured RTT, bandwidth and drop rate."""
    loaded = load_scenario(scenario)
    count = loaded.agent_count(agents if agents is not None else (None if loaded.agents else 4))
    if count < 2:
        raise ConfigError("--agents must be at least 2 to have a link to measure")
    console = Console()
    started = time.perf_counter()
    # real-time only while measuring: the client side's wake-ups count in every round trip too
    with elevated_priority("realtime"):
        results = run_fast(
            run_check(
                loaded,
                count,
                messages=messages,
                max_links=max_links,
                target_s=target_seconds,
                progress=lambda m: console.print(m),
            )
        )
    elapsed = time.perf_counter() - started
    console.print(results_table(results, f"netem check: {loaded.name}, {count} agents"))
    failed = [result for result in results if not result.ok]
    console.print(
        "RTT within 15% of configured (5 ms slack below 5 ms; varying links: within their range ± 15%); "
        "bandwidth within 15% (measured with loss off); drops = round trips stalled past "
        "(rtt_min + rtt_max + rto) / 2 or reset, against Binomial(n, 1 - (1 - loss)^2) at 99%."
    )
    if failed:
        # an error, not typer.Exit: main() runs click with standalone_mode=False, which swallows Exit codes
        raise LinkCheckFailed(
            f"{len(failed)} of {len(results)} links off their configuration ({elapsed:.0f} s)"
        )
    console.print(f"[green]all {len(results)} links match their configuration[/green] ({elapsed:.0f} s)")


@netem_app.command("serve")
def serve(
    scenario: str = typer.Option("perfect", "--scenario", help="built-in name or .toml/.json file"),
    agents: int | None = typer.Option(None, "--agents", help="number of agents (default: the scenario's)"),
    ports_file: Path = typer.Option(..., "--ports-file", help="where to write the addressing JSON"),
    base_port: int | None = typer.Option(
        None, "--base-port", help="agent i uses base_port + i; default free"
    ),
    control: str = typer.Option("-", "--control", help="'-' = stdin, a file to follow, or 'none'"),
    stats_file: Path | None = typer.Option(None, "--stats-file", help="rewrite pair stats JSON here"),
    priority: str = typer.Option("realtime", "--priority", help="realtime, nice or normal (best effort)"),
) -> None:
    """Run the shaper for a launcher (same as ``python -m agent.network.shaper``)."""
    raise_priority(priority)
    run_fast(run_shaper(scenario, agents, ports_file, base_port, control, stats_file))


@netem_app.command("show")
def show(
    scenario: str = typer.Argument("regions3", help="built-in name or .toml/.json file"),
    agents: int | None = typer.Option(None, "--agents", help="number of agents (default: the scenario's)"),
) -> None:
    """Print a scenario's links (drawn RTTs), agent profiles and events without starting anything."""
    loaded = load_scenario(scenario)
    count = loaded.agent_count(agents if agents is not None else (None if loaded.agents else 4))
    conditions = NetworkConditions(loaded, count)
    console = Console()
    console.print(f"[bold]{loaded.name}[/bold]: {loaded.description or 'custom scenario'} ({count} agents)")
    matrix = Table(title="RTT ms (drawn within each link's range; * = varying)")
    matrix.add_column("")
    for j in range(count):
        matrix.add_column(str(j), justify="right")
    for i in range(count):
        cells = []
        for j in range(count):
            profile = conditions.profile(i, j)
            mark = "*" if profile.is_varying else ""
            cells.append("-" if i == j else f"{conditions.base_rtt_ms(i, j):.0f}{mark}")
        matrix.add_row(f"{i} {loaded.region_of(i) or ''}", *cells)
    console.print(matrix)
    seen = set()
    for i in range(count):
        for j in range(i + 1, count):
            profile = conditions.profile(i, j)
            if profile not in seen:
                seen.add(profile)
                console.print(
                    f"  {profile.describe()}; RTO {profile.rto_ms:g} ms, stall above "
                    f"{stall_threshold_ms(profile):g} ms"
                )
    for event in loaded.events:
        console.print(f"  event: {event.model_dump_json(exclude_none=True)}")
    if loaded.random_events is not None:
        console.print(
            f"  random events: {len(loaded.random_events.generate(count))} drawn (seed "
            f"{loaded.random_events.seed})"
        )
