"""The ``snapshot-pipeline`` command line.

Machine-readable output (JSON) goes to stdout; progress and errors go to stderr;
any failure exits non-zero. One module per command group (:mod:`.snapshots`, :mod:`.admin`,
:mod:`.balances`, :mod:`.serve`), the parser in :mod:`.parser`; Dagster, pyarrow and the server
stack are imported by the commands that need them, so ``--help`` stays fast.
"""

from __future__ import annotations

import sys
import warnings

from snapshot_pipeline import db, embedded
from snapshot_pipeline.cli.common import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_INTERRUPTED, BadInput, CliError
from snapshot_pipeline.cli.parser import build_parser
from snapshot_pipeline.cli.process_exit import exit_now
from snapshot_pipeline.parsing import SettingsError, redact
from snapshot_pipeline.settings import load_settings, prefer_jemalloc

__all__ = ["BadInput", "CliError", "build_parser", "main", "run"]


def _one_line(exc: BaseException) -> str:
    """An error as one line of text, passwords of any URL in it hidden."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact(text)


def main(argv: list[str] | None = None) -> int:
    """Parse, load and validate settings, run the command; errors are one line on stderr.

    Exit codes: 0 success, 1 failure, 2 bad input (argument or setting; nothing was done), 130
    interrupted. An unexpected exception is shown as one line too; ``--debug`` shows its traceback.
    """
    prefer_jemalloc()  # before any command imports pyarrow: Arrow picks its allocator on import
    # the embedded PostgreSQL's platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI): not actionable
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, load_settings())
    except (BadInput, SettingsError) as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (CliError, db.DatabaseUnavailable, embedded.EmbeddedDatabaseError) as exc:
        if args.debug:
            raise
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug or an unforeseen failure: one line, the traceback only on request
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {_one_line(exc)} (run with --debug for the traceback)", file=sys.stderr)
        return EXIT_FAILURE


def run() -> None:
    """The ``snapshot-pipeline`` console script: :func:`main`, then the process ends without the interpreter's
    teardown (:mod:`.process_exit`)."""
    exit_now(main())
