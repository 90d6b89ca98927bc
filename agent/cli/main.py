"""``hypergpu`` — the agent's command line.

Every sub-command lives in its own module under ``agent.cli`` and is registered here. User mistakes
raise :class:`agent.errors.UserFacingError`; :func:`main` prints its one-line message and exits with
its code, while the traceback goes to the log file at DEBUG level.
"""

from __future__ import annotations

import logging

import typer

from agent.cli.entry import run_app

app = typer.Typer(
    name="hypergpu",
    help="HyperGPU agent: train neural networks with peers over the internet, earn attested rewards.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# ---- sub-commands (one module each; keep this block sorted) ----------------------------------------
from agent.cli import bench_cmd, config_cmd, join_cmd, netem_cmd, swarm_cmd, wallet_cmd  # noqa: E402

app.add_typer(config_cmd.config_app, name="config")
app.add_typer(netem_cmd.netem_app, name="netem")
app.command("join")(join_cmd.join)
app.command("bootstrap")(join_cmd.bootstrap)
app.command("swarm")(swarm_cmd.swarm)
app.command("bench")(bench_cmd.bench)
app.add_typer(wallet_cmd.wallet_app, name="wallet")
app.command("rewards")(wallet_cmd.rewards)
app.command("claim")(wallet_cmd.claim)
# ---- end of sub-commands ------------------------------------------------------------------------------

log = logging.getLogger("hypergpu")


def main() -> None:
    """Entry point of the ``hypergpu`` console script."""
    run_app(app)


if __name__ == "__main__":
    main()
