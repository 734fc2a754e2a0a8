"""Command line: ``python -m lsio demo`` (also the ``lsio`` console script)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lsio", description="Light Speed IO")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="write a sample dataset, read it with lsio and a plain loop")
    cal = sub.add_parser("calibrate", help="measure a storage location; print the tuning "
                         "lsio would use there")
    cal.add_argument("path", help="a file of at least 64 MiB, or a directory to write a "
                     "256 MiB scratch file in (removed afterwards)")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from ._demo import run_demo

        return run_demo()
    if args.command == "calibrate":
        from ._calibrate import main as calibrate

        try:
            return calibrate(args.path)
        except (OSError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2


if __name__ == "__main__":
    sys.exit(main())
