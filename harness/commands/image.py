"""`ukehi-jepsen image build`: the node image, with or without a container registry."""

from __future__ import annotations

import sys
from typing import Optional

import typer

from ..cli import BadArgument


def register(app: typer.Typer) -> None:
    image_app = typer.Typer(help="Build the Ukehi node image for --backend docker and `cluster up`.",
                            no_args_is_help=True)

    @image_app.command("build")
    def build(
        offline: bool = typer.Option(False, help="build the base from Debian packages (mmdebstrap + docker import); "
                                                 "needs no container registry"),
        base: Optional[str] = typer.Option(None, help="base image (default python:3.11-slim-bookworm; "
                                                      "ukehi-base:bookworm with --offline)"),
        tag: Optional[str] = typer.Option(None, help="image tag (default ukehi-node:<version>; "
                                                     "<repo>:latest is tagged too)"),
    ) -> None:
        """Build the wheel, the base when needed, then the node image; reuse it when nothing changed."""
        from ..image import ImageError, build_node_image

        if tag is not None and (":" not in tag or tag.endswith(":")):
            raise BadArgument(f"--tag {tag!r}: give REPOSITORY:TAG, e.g. ukehi-node:dev")
        try:
            result = build_node_image(offline=offline, base=base, tag=tag)
        except ImageError as err:
            print(f"ukehi-jepsen image build: {err}", file=sys.stderr)
            raise typer.Exit(1)
        word = "reused" if result.cached else "built"
        print(f"{word} {result.tag} ({result.image_id[:19]}) on {result.base}")

    app.add_typer(image_app, name="image")
