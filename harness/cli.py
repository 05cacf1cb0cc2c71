"""`ukehi-jepsen` command line (typer; `check FILE` has a fast path without it).

Commands live in their own modules, each exposing ``register(app)``; this file
builds the app and maps outcomes to Jepsen's exit codes:
0 valid, 1 invalid, 2 unknown, 254 bad arguments, 255 crashed.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

# typer, click (and the pydantic that typer imports at run time) take hundreds of ms to
# import: they are imported only when a command line goes through typer, never by
# `ukehi-jepsen check FILE`'s fast path (issue 17: start-up <= 150 ms).
if TYPE_CHECKING:
    import click
    import typer


def _click_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(usage errors, no-args-is-help errors) of the click that typer raises."""
    import click

    try:  # typer >= 0.24 ships its own copy of click and raises that copy's exceptions
        from typer._click import exceptions as _typer_click_errors

        return ((_typer_click_errors.UsageError, click.UsageError),
                (_typer_click_errors.NoArgsIsHelpError,))
    except ImportError:  # older typer: plain click
        return (click.UsageError,), ()

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
    "harness.commands.mutate",
    "harness.commands.serve",
    "harness.commands.sim",
]

# A command named here is given its module alone (no other command's imports), so that
# `ukehi-jepsen check` starts in well under the 150 ms goal of issue 17.
_ALONE: dict[str, str] = {"check": "harness.commands.check"}
# Set by main() while it builds the app: the modules this command line needs.
_needed: Sequence[str] | None = None


class BadArgument(Exception):
    """Raised by a command for bad user input; the message must say how to fix it."""


def _version(value: bool) -> None:
    import typer

    if value:
        from ukehi import __version__

        print(f"ukehi-jepsen {__version__} (Python {sys.version.split()[0]})")
        raise typer.Exit(EXIT_VALID)


def build_app(modules: Sequence[str] | None = None) -> typer.Typer:
    """The app with the commands of ``modules`` (default: every command module)."""
    import typer

    app = typer.Typer(
        name="ukehi-jepsen",
        help="Jepsen-style verification of Ukehi: run tests, inject faults, check histories.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        # click's plain help wraps at the terminal's width (readable at 80 columns); the rich
        # tables squeezed help text into a narrow column and cut values with "…".
        rich_markup_mode=None,
    )

    @app.callback()
    def root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                          help="print the version and exit")) -> None:
        """Jepsen-style verification of Ukehi: run tests, inject faults, check histories.

        Exit codes: 0 valid, 1 invalid, 2 unknown, 254 bad arguments, 255 crashed."""

    for module_path in modules if modules is not None else (_needed or _COMMAND_MODULES):
        importlib.import_module(module_path).register(app)
    return app


def _command_path(command: click.Command, args: Sequence[str]) -> str:
    """``ukehi-jepsen run``, ``ukehi-jepsen cluster up``...: the words naming the command."""
    words = ["ukehi-jepsen"]
    for arg in args:
        commands = getattr(command, "commands", None)  # a group (typer may bring its own click)
        if arg.startswith("-") or not isinstance(commands, dict):
            break
        sub = commands.get(arg)
        if sub is None:
            break
        words.append(arg)
        command = sub
    return " ".join(words)


_TYPE_NEEDS = {"float": "give a number", "integer": "give a whole number", "int": "give a whole number",
               "boolean": "give true or false", "bool": "give true or false"}


def _given(args: Sequence[str], opts: Sequence[str]) -> str | None:
    """The value typed after one of ``opts`` (``--x V`` or ``--x=V``), the last one given."""
    value = None
    for i, arg in enumerate(args):
        for opt in opts:
            if arg == opt and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(opt + "="):
                value = arg[len(opt) + 1:]
    return value


def _usage_error_text(err: BaseException, where: str, args: Sequence[str]) -> str:
    """A click/typer usage error as one line in the CLI's own style (``--flag 'value': what to
    give``, like the commands' own errors), with where to find help."""
    format_message = getattr(err, "format_message", None)  # names the option: "Invalid value for ..."
    message = " ".join(str(format_message() if callable(format_message) else err).split())
    param = getattr(err, "param", None)
    opts = list(getattr(param, "opts", None) or [])
    if param is not None and opts and message.startswith("Invalid value"):
        flag = max(opts, key=len)
        value = _given(args, opts)
        # typer >= 0.24 describes the annotation; click names its parameter types
        annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
        kind = getattr(annotation, "__name__", None) or getattr(getattr(param, "type", None), "name", "")
        need = _TYPE_NEEDS.get(kind, message.partition(": ")[2])
        message = f"{flag} {value!r}: {need}" if value is not None else f"{flag}: {need}"
    ctx = getattr(err, "ctx", None)
    path = getattr(ctx, "command_path", None) or where
    return f"{path}: error: {message} (see {path} --help)"


def _guarded(run: Callable[[], Any], where: str) -> int:
    """Run a command's body, mapping BadArgument to one line and exit 254 and a crash to 255."""
    try:
        return int(run() or 0)
    except BadArgument as err:
        print(f"{where}: error: {err}", file=sys.stderr)
        return EXIT_BAD_ARGUMENT
    except Exception:  # noqa: BLE001 - the last line of defence maps a crash to 255
        import traceback

        traceback.print_exc()
        return EXIT_CRASHED


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; every error is one line ``ukehi-jepsen CMD: error: what; what to do``,
    as the ``ukehi`` CLI writes them."""
    args = list(argv) if argv is not None else sys.argv[1:]
    if args[:1] == ["check"]:
        # Fast path: `check` parses its own options (the same table its typer command is made
        # from) without typer; help and usage errors go on to typer below, so they read alike.
        from harness.commands.check import check_command, parse_fast

        values = parse_fast(args[1:])
        if values is not None:
            return _guarded(lambda: check_command(**values), "ukehi-jepsen check")
    import click
    import typer

    usage_errors, no_args_help = _click_errors()
    first = next((arg for arg in args if not arg.startswith("-")), None)
    global _needed
    _needed = [_ALONE[first]] if first in _ALONE else None
    try:
        app = build_app()
    finally:
        _needed = None
    command = typer.main.get_command(app)
    where = _command_path(command, args)

    def run() -> int:
        try:
            return int(command.main(args=args, prog_name="ukehi-jepsen", standalone_mode=False) or 0)
        except (click.exceptions.Exit, typer.Exit) as exit_:
            return int(getattr(exit_, "exit_code", 0) or 0)
        except no_args_help as help_:
            help_.show()  # type: ignore[attr-defined]
            return EXIT_VALID
        except usage_errors as err:
            print(_usage_error_text(err, where, args), file=sys.stderr)
            return EXIT_BAD_ARGUMENT
        except (click.Abort, typer.Abort):
            print("aborted", file=sys.stderr)
            return EXIT_CRASHED

    return _guarded(run, where)

if __name__ == "__main__":
    # Run through the importable module so BadArgument & co. are the same classes the
    # command modules raise (``python -m harness.cli`` would otherwise load this file twice).
    from harness.cli import main as _main

    sys.exit(_main())
