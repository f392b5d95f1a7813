"""The guest owner's code builds on sevd.formats only, never on daemon code (DESIGN §2, §9)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import sevctl
import sevowner

OWNER_FILES = [
    *sorted(Path(sevowner.__file__).parent.glob("*.py")),
    Path(sevctl.__file__).parent / "owner_cli.py",
]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.name}: use absolute imports"
            names.add(node.module or "")
    return names


def test_owner_imports_only_formats_and_cryptography() -> None:
    assert len(OWNER_FILES) >= 7
    for path in OWNER_FILES:
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = (
                top in sys.stdlib_module_names
                or top in ("cryptography", "sevowner")
                or name == "sevd.formats"
                or name.startswith("sevd.formats.")
            )
            assert allowed, f"{path.name} imports {name}"


def test_owner_modules_have_docstrings() -> None:
    for path in OWNER_FILES:
        doc = " ".join((ast.get_docstring(ast.parse(path.read_text())) or "").lower().split())
        assert "must not import" in doc or "imports only" in doc, path.name
