"""The `ct` Typer app: global options, command registration, and errors -> exit codes.

Exit codes: 0 done; 1 internal failure (a bug: rerun with --debug for the traceback);
2 bad input (one line on stderr saying what is wrong and what to do); 3 a batch finished but some
series failed (`ct diagnose`, `ct prepcache`); 130 interrupted; 143 stopped by SIGTERM (138 by SIGUSR1) at a
safe point, finished results kept.
"""

from __future__ import annotations

import errno
import logging
import os
import sys

import typer
from typer import _click
from typer.core import TyperGroup

from cli.option_names import name_options, name_options_in_logs
from ct_pipeline.atomic import write_failure
from ct_pipeline.errors import CtError
from ct_pipeline.preemption import Terminated
from ct_pipeline.threads import OMP_WAIT_POLICY, cap_omp_num_threads

DISCLAIMER = "Research software, not a medical device: never use it for clinical decisions."
HELP_OPTION_NAMES = ["-h", "--help"]
_DISK_FULL_OR_READ_ONLY = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def _without_flag_types(command: _click.Command) -> None:
    """Flags take no value, so their help shows no ``<bool>`` (typer prints the type unless a
    metavar is set). Walks ``command`` and its subcommands once, when the tree is built."""
    context = _click.Context(command, help_option_names=HELP_OPTION_NAMES)
    for param in command.get_params(context):  # with the help option, which it creates and keeps
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    for subcommand in getattr(command, "commands", {}).values():
        _without_flag_types(subcommand)


class _ErrorMappingGroup(TyperGroup):
    """Turns library errors into one line and an exit code instead of a traceback."""

    def __init__(self, **attrs) -> None:
        super().__init__(**attrs)
        _without_flag_types(self)

    def invoke(self, ctx: typer.Context):
        debug = bool(ctx.params.get("debug")) or os.environ.get("CT_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, SystemExit):
            raise  # usage errors and explicit exits keep their own codes
        except CtError as err:
            if debug:
                raise
            typer.echo(f"error: {name_options(str(err))}", err=True)
            raise typer.Exit(2) from None
        except Terminated as err:  # SIGTERM/SIGUSR1 from a batch system: stopped at a safe point
            typer.echo(f"{err}: stopped cleanly; finished results are kept", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as err:  # an internal failure: keep it short unless asked
            if debug:
                raise
            if isinstance(err, OSError) and err.errno in _DISK_FULL_OR_READ_ONLY:
                # Met outside the writes that check for it (TensorBoard's event file, a log): the
                # user's environment, not a bug, so said as any failed write is (exit 2).
                typer.echo(f"error: {write_failure(err.filename or 'an output file', err)}", err=True)
                raise typer.Exit(2) from None
            typer.echo(
                f"internal error: {type(err).__name__}: {err} (rerun with --debug for the traceback)",
                err=True,
            )
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_ErrorMappingGroup,
    name="ct",
    help=f"CT lung-nodule detection: load, cache, train, diagnose, evaluate.\n\n{DISCLAIMER}",
    epilog="Example: ct synth demo_data --series 4 --size small && ct series list --data-root demo_data",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": HELP_OPTION_NAMES},
)


@app.callback()
def _global_options(
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.", envvar="CT_DEBUG"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details to stderr."),
) -> None:
    # Before torch is imported (the commands import it lazily): libgomp reads this when it loads.
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(levelname)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    name_options_in_logs()  # the library's warnings name its settings; the user typed options
    cap_omp_num_threads()  # also before torch: OpenMP reads it when it loads (after the logging set-up: it may warn)


def _register() -> None:
    # Each module imports the heavy libraries (torch, pandas) inside its commands, so that
    # `ct --help` and the quick commands start fast.
    from cli import (
        cache_cmd,
        compare_cmd,
        data,
        demo_cmd,
        diagnose_cmd,
        evaluate_cmd,
        hard_negatives_cmd,
        merge_cmd,
        models_cmd,
        synth_cmd,
        train_cmd,
    )

    modules = (
        data,
        synth_cmd,
        cache_cmd,
        train_cmd,
        hard_negatives_cmd,
        models_cmd,
        diagnose_cmd,
        merge_cmd,
        compare_cmd,
        evaluate_cmd,
        demo_cmd,
    )
    for module in modules:
        module.register(app)


_register()


def run() -> None:
    """Console-script entry point."""
    app()
