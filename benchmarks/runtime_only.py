"""``snapshot-pipeline`` as a user's install runs it, from the benchmarks' development environment.

The development environment adds test-only packages that the runtime install (``pip install .``) does not
have, and two of them change what a command does at start-up: pyarrow and the ADBC driver import pandas and
polars whenever they are installed (about 0.4–0.7 s of the command's start-up here, none of it the user's).
This script hides them from imports, as if they were not installed, then runs the CLI with its arguments.

Usage: ``python benchmarks/runtime_only.py snapshot --date ...``; the benchmarks' worker processes call
:func:`hide_test_only_packages` the same way.
"""

from __future__ import annotations

import importlib.abc
import sys

# In the test and bench extras of pyproject.toml, not in the runtime dependencies or what they pull in.
TEST_ONLY_PACKAGES = frozenset({"pandas", "polars"})


class HiddenPackages(importlib.abc.MetaPathFinder):
    """An import finder that answers "not installed" for :data:`TEST_ONLY_PACKAGES` and their modules."""

    def find_spec(self, fullname, path, target=None):
        if fullname.partition(".")[0] in TEST_ONLY_PACKAGES:
            raise ModuleNotFoundError(f"No module named {fullname!r} (hidden: not in the runtime install)",
                                      name=fullname)
        return None


def hide_test_only_packages() -> None:
    """From now on, in this process, :data:`TEST_ONLY_PACKAGES` are not installed (call before other imports)."""
    if not any(isinstance(finder, HiddenPackages) for finder in sys.meta_path):
        sys.meta_path.insert(0, HiddenPackages())


def main() -> None:
    hide_test_only_packages()
    from snapshot_pipeline.cli import run  # after the finder is in place

    sys.argv[0] = "snapshot-pipeline"
    run()


if __name__ == "__main__":
    main()
