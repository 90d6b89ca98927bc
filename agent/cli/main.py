"""``hypergpu`` — the agent's command line.

Every sub-command lives in its own module under ``agent.cli`` and is registered here. User mistakes
raise :class:`agent.errors.UserFacingError`; :func:`main` prints its one-line message and exits with
its code, while the traceback goes to the log file at DEBUG level.
"""

from __future__ import annotations

import logging
import sys

import typer

from agent.errors import UserFacingError

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
    try:
        # typer turns Ctrl+C into Exit(130) and, outside standalone mode, returns that code
        code = app(standalone_mode=False)
        if code == 130:
            typer.echo("stopped.", err=True)
        if isinstance(code, int) and code:
            sys.exit(code)
    except UserFacingError as error:
        log.debug("user-facing error", exc_info=True)
        typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        typer.echo("stopped.", err=True)
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except typer.Abort:
        typer.echo("aborted.", err=True)
        sys.exit(1)
    except Exception as click_error:  # click usage errors: show click's own message, not a traceback
        import click

        if isinstance(click_error, click.ClickException):
            click_error.show()
            sys.exit(click_error.exit_code)
        raise


if __name__ == "__main__":
    main()
