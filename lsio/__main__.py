"""Command line: ``python -m lsio demo`` (also the ``lsio`` console script)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lsio", description="Light Speed IO")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="write a sample dataset, read it with lsio and a plain loop")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo()
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
