"""`ukehi-jepsen` command line (typer).

Commands live in their own modules, each exposing ``register(app)``; this file
builds the app and maps outcomes to Jepsen's exit codes:
0 valid, 1 invalid, 2 unknown, 254 bad arguments, 255 crashed.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from typing import Sequence

import click
import typer

try:  # typer >= 0.24 ships its own copy of click and raises that copy's exceptions
    from typer._click import exceptions as _typer_click_errors

    _USAGE_ERRORS: tuple[type[BaseException], ...] = (_typer_click_errors.UsageError, click.UsageError)
    _NO_ARGS_HELP: tuple[type[BaseException], ...] = (_typer_click_errors.NoArgsIsHelpError,)
except ImportError:  # older typer: plain click
    _USAGE_ERRORS = (click.UsageError,)
    _NO_ARGS_HELP = ()

EXIT_VALID = 0
EXIT_INVALID = 1
EXIT_UNKNOWN = 2
EXIT_BAD_ARGUMENT = 254
EXIT_CRASHED = 255

# Modules that add commands to the app, in help order.
_COMMAND_MODULES: list[str] = [
    "harness.commands.run",
    "harness.commands.check",
    "harness.commands.image",
    "harness.commands.cluster",
    "harness.commands.matrix",
    "harness.commands.regress",
    "harness.commands.serve",
]


class BadArgument(Exception):
    """Raised by a command for bad user input; the message must say how to fix it."""


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="ukehi-jepsen",
        help="Jepsen-style verification of Ukehi: run tests, inject faults, check histories.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module_path in _COMMAND_MODULES:
        importlib.import_module(module_path).register(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    app = build_app()
    command = typer.main.get_command(app)
    try:
        result = command.main(args=list(argv) if argv is not None else None,
                              prog_name="ukehi-jepsen", standalone_mode=False)
    except (click.exceptions.Exit, typer.Exit) as exit_:
        return int(getattr(exit_, "exit_code", 0) or 0)
    except _NO_ARGS_HELP as help_:
        help_.show()  # type: ignore[attr-defined]
        return EXIT_VALID
    except _USAGE_ERRORS as err:
        err.show()  # type: ignore[attr-defined]
        return EXIT_BAD_ARGUMENT
    except (click.Abort, typer.Abort):
        print("aborted", file=sys.stderr)
        return EXIT_CRASHED
    except BadArgument as err:
        print(f"ukehi-jepsen: error: {err}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    except Exception:  # noqa: BLE001 - the last line of defence maps a crash to 255
        traceback.print_exc()
        return EXIT_CRASHED
    return int(result or 0)


if __name__ == "__main__":
    # Run through the importable module so BadArgument & co. are the same classes the
    # command modules raise (``python -m harness.cli`` would otherwise load this file twice).
    from harness.cli import main as _main

    sys.exit(_main())
