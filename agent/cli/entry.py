"""Running a typer app as a console script: one clear line per user error, never a traceback for one."""

from __future__ import annotations

import logging
import sys

import typer

from agent.errors import UserFacingError

log = logging.getLogger("hypergpu")


def run_app(app: typer.Typer) -> None:
    """Run ``app`` and turn user errors, Ctrl+C and click usage errors into a message and an exit code.

    :class:`UserFacingError` prints its line and exits with its ``exit_code`` (the traceback goes to the
    log at DEBUG); Ctrl+C exits 130; anything else is a bug and keeps its traceback.
    """
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
