"""Doctest collection of the package (``--doctest-modules`` over the package, see pyproject.toml): a module that imports an
optional dependency at top level (triton, hydra, matplotlib, av, lightning, ...) is skipped where that
dependency is not installed, so ``python3 -m pytest -q`` collects everywhere; with the [dev] extras (CI)
every module is collected."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent  # the repository (this file: met3r_metrics/conftest.py, as numpy keeps its own)
_PACKAGES = ("met3r_metrics", "lightning_callbacks")


def _top_level_imports(path: Path) -> set[str]:
    """The top-level package names ``path`` imports at module level (absolute imports only)."""
    names: set[str] = set()
    body = list(ast.parse(path.read_text()).body)
    for node in body:
        if isinstance(node, (ast.Try, ast.If)):  # guarded imports at module level (``try: import lightning``)
            body.extend(node.body)
        elif isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _missing_dependency(path: Path) -> str | None:
    return next((name for name in sorted(_top_level_imports(path))
                 if name not in _PACKAGES and importlib.util.find_spec(name) is None), None)


def pytest_ignore_collect(collection_path: Path, config) -> bool | None:  # noqa: ANN001 - pytest's hook
    path = Path(collection_path)
    if path.suffix != ".py" or not any(path.is_relative_to(_ROOT / p) for p in _PACKAGES):
        return None
    return True if _missing_dependency(path) else None
