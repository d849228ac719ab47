"""Which package modules a workflow script runs, found by reading its imports.

Snakemake reruns a job when its script changes, but not when a module the script imports
changes. The rules therefore list, as inputs, every module of this package that a script
reaches through its imports (transitively); reading the import statements instead of keeping
hand-written lists means a new import can never be forgotten.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "mnist_pipeline"


def package_modules_used(script: str | Path, package_dir: str | Path) -> list[Path]:
    """Sorted paths of the modules under `package_dir` that `script` imports, directly or not.

    Each module's enclosing `__init__.py` files are included, since importing a submodule
    runs them.
    """
    package_dir = Path(package_dir)
    seen: set[Path] = set()
    pending = [(Path(script), None)]
    while pending:
        path, module_name = pending.pop()
        for name in _imported_names(path, module_name):
            for found in _module_files(name, package_dir):
                if found not in seen:
                    seen.add(found)
                    pending.append((found, _module_name(found, package_dir)))
    return sorted(seen)


def _imported_names(path: Path, module_name: str | None) -> set[str]:
    """Dotted names that `path` imports, with `from a import b` giving both a and a.b
    (b may be a submodule or an attribute; only files that exist are kept later)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, path, module_name)
            if base is None:
                continue
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _absolute(node: ast.ImportFrom, path: Path, module_name: str | None) -> str | None:
    if node.level == 0:
        return node.module
    if module_name is None:
        return None
    parts = module_name.split(".")
    # For a package's __init__, level 1 is the package itself; for a module, its parent.
    keep = len(parts) - node.level + (1 if path.name == "__init__.py" else 0)
    base = ".".join(parts[:keep])
    return f"{base}.{node.module}" if node.module else base


def _module_files(name: str, package_dir: Path) -> list[Path]:
    parts = name.split(".")[1:]
    files = []
    for depth in range(len(parts) + 1):
        init = package_dir.joinpath(*parts[:depth], "__init__.py")
        if init.is_file():
            files.append(init)
    module = package_dir.joinpath(*parts).with_suffix(".py") if parts else None
    if module is not None and module.is_file():
        files.append(module)
    return files


def _module_name(path: Path, package_dir: Path) -> str:
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PACKAGE, *parts])
