"""The ``twinml`` typer app and what every command shares: the one-line error rule and the help texts."""

from __future__ import annotations

import typer

from ._cli_tables import _console

__all__ = ["app", "run", "TRACKING_HELP"]

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="twinml: machine-learning digital twins of patients."
)

TRACKING_HELP = "MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db here)."


def run(fn):
    """Run a command body; a user's error prints one clear line and exits 2 (no traceback)."""
    from ._validation import user_error_message

    try:
        return fn()
    except Exception as err:
        message = user_error_message(err)
        if message is None:
            raise
        _console().print(f"[red]error:[/red] {message}", soft_wrap=True)
        raise typer.Exit(code=2) from None
