"""Command-line entry point: ``trianflow <command> ...``.

Each command lives in its own module ``trianflow/cli/<name>.py`` exposing
``add_parser(subparsers)`` (which registers the sub-parser and sets ``func``) and is imported
lazily, so ``trianflow --help`` stays fast. User mistakes raise :class:`trianflow.InputError`,
which is printed as one line on stderr with exit code 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# command name -> module under trianflow.cli
COMMANDS = {
    "vo": "vo",
    "two-view": "two_view",
    "eval-traj": "eval_traj",
    "eval-depth": "eval_depth",
    "demo": "demo",
    "train": "train",
    "flow": "infer",
    "depth": "infer",
    "export": "export",
    "report": "report",
    "view": "view",
}


def build_parser() -> argparse.ArgumentParser:
    from trianflow import __version__

    parser = argparse.ArgumentParser(
        prog="trianflow",
        description="Self-supervised depth and visual odometry from video (TrianFlow, Monodepth, M3Depth).",
    )
    parser.add_argument("--version", action="version", version=f"trianflow {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for name, module in COMMANDS.items():
        try:
            mod = importlib.import_module(f"trianflow.cli.{module}")
        except ModuleNotFoundError as exc:  # a command not built yet
            if exc.name == f"trianflow.cli.{module}":
                continue
            raise
        if module in seen:
            continue
        seen.add(module)
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from trianflow.errors import InputError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = args.func(args)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
