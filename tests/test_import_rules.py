"""The package keeps its import rules (tools/check_imports.py, also run by `make check`): no import cycle,
hidden in a function or not; the core never imports dagster; nothing but the faces imports a face."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_imports", ROOT / "tools" / "check_imports.py")
check_imports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_imports)


def test_the_package_keeps_its_import_rules():
    assert check_imports.violations(ROOT / "snapshot_pipeline") == []


def test_the_checker_sees_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "store").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "store" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg import b\n")
    (package / "b.py").write_text("def f():\n    from pkg.a import x  # noqa\n")
    (package / "store" / "c.py").write_text("import dagster as dg\n")
    (package / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n")
    (package / "e.py").write_text("from pkg import d\n")  # a cycle through a type-only import counts too
    found = check_imports.violations(package)
    assert "import cycle: pkg.a -> pkg.b" in found
    assert "import cycle: pkg.d -> pkg.e" in found
    assert "pkg.store.c imports dagster (the core never does)" in found
    assert len(found) == 3
    ast.parse((package / "b.py").read_text())
