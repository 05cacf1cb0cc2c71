"""`ukehi` command line: one entry point, one module per command family.

Each command family lives in its own module and exposes
``add_arguments(parser)`` and ``run(args) -> int``; this file only wires them
together. To add a command, add a row to ``_COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# (command words, module path, one-line help)
_COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("wal", "dump"), "ukehi.storage.dump", "print every WAL entry and the corruption report"),
    (("node",), "ukehi.nodecli", "run one Ukehi node in the foreground"),
    (("kv",), "ukehi.kvcli", "get/put/cas/delete/status... against a running cluster"),
    (("certs",), "ukehi.certs", "make a cluster CA and node/client/admin certificates (mutual TLS)"),
]

EXIT_BAD_ARGUMENT = 254


class _Parser(argparse.ArgumentParser):
    """argparse exits 2 on bad arguments; the project's convention is 254, and one line
    ``ukehi CMD: error: what (see ukehi CMD --help)``, as ukehi-jepsen writes them."""

    def error(self, message: str) -> None:  # type: ignore[override]
        message = " ".join(message.split())
        self.exit(EXIT_BAD_ARGUMENT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from ukehi import __version__

    parser = _Parser(prog="ukehi", description="Ukehi: a Raft-replicated key-value node.")
    parser.add_argument("--version", action="version",
                        version=f"ukehi {__version__} (Python {sys.version.split()[0]})")
    groups: dict[str, argparse._SubParsersAction] = {}
    top = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    top.required = True
    for words, module_path, help_text in _COMMANDS:
        subparsers = top
        prefix = ""
        for word in words[:-1]:
            prefix = f"{prefix} {word}".strip()
            if prefix not in groups:
                group = subparsers.add_parser(word, help=f"{word} commands")
                groups[prefix] = group.add_subparsers(dest=f"{prefix}_command", metavar="COMMAND")
                groups[prefix].required = True
            subparsers = groups[prefix]
        leaf = subparsers.add_parser(words[-1], help=help_text, description=help_text)
        module = importlib.import_module(module_path)
        module.add_arguments(leaf)
        leaf.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
