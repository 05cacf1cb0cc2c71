"""`ukehi-jepsen serve`: browse the results store in a web browser (harness/serve/)."""

from __future__ import annotations

import typer

from ..cli import BadArgument


def register(app: typer.Typer) -> None:
    @app.command()
    def serve(
        results_dir: str = typer.Option("results", help="the results store to browse"),
        host: str = typer.Option("127.0.0.1", help="address to listen on (loopback by default; "
                                 "anything else warns: every run becomes readable from the network)"),
        port: int = typer.Option(8080, help="TCP port (0: any free port)"),
    ) -> None:
        """Browse runs, groups and comparisons in a browser (read-only; re-analysis from loopback only)."""
        from pathlib import Path

        from ..serve.server import serve as run_server

        if not 0 <= port <= 65535:
            raise BadArgument(f"--port {port}: give a TCP port between 0 and 65535")
        if not Path(results_dir).is_dir():
            raise BadArgument(f"--results-dir {results_dir!r} is not a directory; give the store that "
                              "`ukehi-jepsen run --results-dir` wrote (default: results)")
        try:
            run_server(results_dir, host, port)
        except OSError as err:
            raise BadArgument(f"cannot listen on {host}:{port} ({err.strerror or err}); choose another "
                              "--port or --host") from None
