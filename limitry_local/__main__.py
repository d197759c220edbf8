"""``python -m limitry_local demo [--db PATH]``."""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from limitry_local import demo
from limitry_local.errors import LimitryError
from limitry_local.inputs import seconds_argument


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m limitry_local")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="run a short scenario on a ledger file")
    run_demo.add_argument(
        "--db",
        type=Path,
        default=Path("limitry-demo.db"),
        help="ledger file to (re)create (default: ./limitry-demo.db)",
    )
    run_demo.add_argument(
        "--date",
        type=date.fromisoformat,
        default=None,
        help="simulated day, YYYY-MM-DD (default: today, UTC)",
    )
    # As limitry-local demo takes it (docs/cli.md: this "runs the same").
    run_demo.add_argument(
        "--timeout",
        type=seconds_argument,
        default=5.0,
        metavar="SECONDS",
        help="how long to wait for another process's write lock on the ledger (default: 5)",
    )
    run_demo.add_argument(
        "--force",
        action="store_true",
        help="delete the --db file even if it is not a ledger the demo made",
    )
    args = parser.parse_args(argv)
    try:
        demo.run(args.db, sys.stdout, args.date, force=args.force, timeout=args.timeout)
    except demo.DemoError as exc:
        sys.stderr.write(f"{parser.prog} demo: error: {exc}\n")
        return 2
    except LimitryError as exc:  # the ledger file cannot be opened or written
        sys.stderr.write(f"{parser.prog} demo: error: {exc}\n")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
