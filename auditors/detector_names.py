"""The detector names `auditors/detectors/` declares, read from its source files without
importing them: importing the detectors loads scikit-learn, cleanlab and faiss (about two
seconds), too slow for refusing a mistyped `--detectors` name at once. The registry stays
the authority (`runner.detector_config` checks again); a test keeps the two equal."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent / "detectors"


def split_names(text: str) -> list[str]:
    """`"trigger, outlier"` -> `["trigger", "outlier"]`, as `--detectors` and configs give them."""
    return [name.strip() for name in text.split(",") if name.strip()]


def declared_names() -> list[str]:
    """`name` of every class decorated with `register` in the detectors package, sorted."""
    names = []
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and any(_is_register(d) for d in node.decorator_list):
                names += [value for value in map(_name_assignment, node.body) if value]
    return sorted(names)


def _is_register(decorator: ast.expr) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(target, ast.Name) and target.id == "register"


def _name_assignment(statement: ast.stmt) -> str | None:
    if (isinstance(statement, ast.Assign) and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "name"
            and isinstance(statement.value, ast.Constant) and isinstance(statement.value.value, str)):
        return statement.value.value
    return None


def unknown_names(names: list[str]) -> str | None:
    """The error for names no detector declares, or None. Detectors registered from outside
    the package count too once the registry is loaded."""
    import sys

    known = set(declared_names())
    if "auditors.detectors" in sys.modules:
        known |= set(sys.modules["auditors.detectors"].REGISTRY)
    unknown = sorted(set(names) - known)
    if not unknown:
        return None
    return f"unknown detector(s) {', '.join(unknown)}; available: {', '.join(sorted(known))}"
