"""The ``limitry-local`` command: limits as code, usage tables, event export and import.

Needs the ``[cli]`` extra (rich, pyyaml): ``pip install 'limitry_local[cli]'``.
Every command and exit code is in docs/cli.md.

    $ limitry-local --db usage.db limits apply limits.toml --dry-run
"""

from __future__ import annotations

import sys

from limitry_local.cli.exits import ExitCode

# The third-party modules the command imports; the core library needs none of them.
_EXTRA_MODULES = {"rich", "yaml", "tomli"}


def main(argv: list[str] | None = None) -> int:
    """Run the command (the ``limitry-local`` console script); returns the exit code."""
    try:
        from limitry_local.cli.main import run  # noqa: PLC0415 - after the extra is known present
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _EXTRA_MODULES:
            raise
        sys.stderr.write(
            f"limitry-local: the {exc.name!r} module is missing; the command needs the "
            "[cli] extra: pip install 'limitry_local[cli]'\n"
        )
        return ExitCode.MISSING_EXTRA
    return run(argv)
