"""The `broadcaster` command: one module per subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from broadcaster import __version__
from broadcaster.cli import cluster, node, presence, publish, subscribe
from broadcaster.cli.options import load_settings

__all__ = ["load_settings", "main"]


def parser() -> argparse.ArgumentParser:
    """Every subcommand's arguments."""
    root = argparse.ArgumentParser(
        prog="broadcaster", description="Horizontally scaled Server-Sent Events."
    )
    root.add_argument("--version", action="version", version=f"broadcaster {__version__}")
    commands = root.add_subparsers(dest="command", required=True)
    node.add_serve(commands)
    publish.add(commands)
    subscribe.add(commands)
    presence.add(commands)
    cluster.add(commands)
    node.add_demo(commands)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `broadcaster` console script."""
    args = parser().parse_args(argv)
    args.run(args)
