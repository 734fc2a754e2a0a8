"""Command line (``python -m lsio`` or the ``lsio`` console script): ``demo``,
``bench SOURCE...``, ``calibrate PATH``, ``cat SOURCE``. Exit codes: 0 done, 1 an I/O error
(the message names the path or URL), 2 a usage error."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lsio", description="Light Speed IO")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="write a sample dataset, read it with lsio and a plain "
                          "loop")
    demo.add_argument("--quick", action="store_true", help="a little data (a smoke run: the "
                      "timings mean little)")
    cal = sub.add_parser("calibrate", help="measure a storage location; print the tuning "
                         "lsio would use there")
    cal.add_argument("path", help="a file of at least 64 MiB, or a directory to write a "
                     "256 MiB scratch file in (removed afterwards)")
    bench = sub.add_parser("bench", help="time reading files, directories or URLs with lsio "
                           "against a plain Python loop")
    bench.add_argument("sources", nargs="+", help="files, directories (every file under "
                       "them) or URLs, each read whole")
    bench.add_argument("--repeats", type=int, default=5,
                       help="alternated rounds; medians are printed (default 5)")
    cat = sub.add_parser("cat", help="write a file's or URL's bytes (or byte ranges) to stdout")
    cat.add_argument("source", help="a path, or an http(s)://, s3://, gs://, az:// URL")
    cat.add_argument("--range", dest="ranges", action="append", type=_byte_range,
                     metavar="START:END", help="bytes START (inclusive) to END (exclusive); "
                     "END may be left out (to the end), START negative (from the end: "
                     "--range=-100: is the last 100 bytes; the = keeps argparse from "
                     "reading -100: as an option); "
                     "repeat for several ranges, written in order")
    cat.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="show a progress bar on stderr (default: when stderr is a terminal)")
    args = parser.parse_args(argv)
    if args.command == "bench":
        from ._demo import run_bench

        try:
            return run_bench(args.sources, max(1, args.repeats))
        except (OSError, ValueError) as exc:
            print(f"lsio bench: {exc}", file=sys.stderr)
            return 1
    if args.command == "cat":
        return _cat(args.source, args.ranges or [(0, None)], args.progress)
    if args.command == "demo":
        from ._demo import FULL, QUICK, WrongResult, run_demo

        try:
            return run_demo(sizes=QUICK if args.quick else FULL)
        except WrongResult as exc:
            print(f"lsio demo: {exc}", file=sys.stderr)
            return 1
    if args.command == "calibrate":
        from ._calibrate import main as calibrate

        try:
            return calibrate(args.path)
        except (OSError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2


def _byte_range(text: str) -> tuple[int, int | None]:
    start, sep, end = text.partition(":")
    try:
        if not sep:
            raise ValueError
        first = int(start) if start else 0
        last = int(end) if end else None
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:END (e.g. 0:4096, -100:, "
                                         "4096:)") from None
    if last is not None and (first < 0 or last < first):
        raise argparse.ArgumentTypeError(f"{text!r}: END must be >= START >= 0")
    return first, None if last is None else last - first


def _cat(source: str, ranges: list[tuple[int, int | None]], progress: bool | None) -> int:
    from . import read_many_sync

    show = sys.stderr.isatty() if progress is None else progress
    try:
        results = read_many_sync([(source, start, length) for start, length in ranges],
                                 progress=show)
    except (OSError, ValueError, TypeError) as exc:
        print(f"lsio cat: {exc}", file=sys.stderr)
        return 1
    out = sys.stdout.buffer
    try:
        for chunk in results:
            out.write(chunk)
        out.flush()
    except BrokenPipeError:  # `lsio cat big | head`: the reader left, as for cat(1)
        sys.stdout = None  # no second error at exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
