"""``hypergpu config schema`` and ``hypergpu config check FILE``: inspect and validate run configuration."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from agent.protocol.config import RunConfig, load_run_config

config_app = typer.Typer(help="Inspect and validate run configuration files.", no_args_is_help=True)


@config_app.command("schema")
def schema() -> None:
    """Print the JSON Schema of a run configuration (TOML sections = top-level keys)."""
    typer.echo(json.dumps(RunConfig.model_json_schema(), indent=2))


@config_app.command("check")
def check(file: Path = typer.Argument(..., help="TOML run configuration to validate")) -> None:
    """Validate FILE (plus HYPERGPU_* environment variables) without training: a dry run."""
    config = load_run_config(file)
    console = Console()
    console.print(f"[green]ok[/green]: {file} is a valid run configuration")
    console.print_json(config.model_dump_json())
