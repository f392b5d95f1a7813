"""DESIGN §9: sevd.formats depends only on the standard library and ``cryptography``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import sevd.formats

FORMATS_DIR = Path(sevd.formats.__file__).parent


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            names.add(node.module or "")
    return names


def test_formats_imports_only_stdlib_cryptography_and_itself() -> None:
    modules = sorted(FORMATS_DIR.glob("*.py"))
    assert len(modules) >= 10
    for path in modules:
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top == "cryptography"
                or name == "sevd.formats"
                or name.startswith("sevd.formats.")
            )
            assert allowed, f"{path.name} imports {name}"


def test_every_module_has_a_docstring_saying_what_it_must_not_import() -> None:
    for path in FORMATS_DIR.glob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text()))
        assert doc, f"{path.name} has no module docstring"
        assert "must not import" in " ".join(doc.lower().split()), path.name
