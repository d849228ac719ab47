"""Which code a workflow stage runs, and a digest of what that code does.

Snakemake does not track the modules a script imports. Each stage therefore carries, as a
rule parameter, one digest of its script and of every module of this package that the script
reaches through its imports (transitively): reading the import statements instead of keeping
hand-written lists means a new import can never be forgotten.

The digest is of the code's meaning, not its bytes: each file's syntax tree, with docstrings
dropped (comments and formatting never reach the tree), labelled by its place in the checkout.
So a reworded comment or docstring, a reformat, a move or a copy of the checkout changes
nothing, while any change to what the code does changes the digest of exactly the stages whose
code reaches that module.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "mnist_pipeline"


def code_identity(script: str | Path, package_dir: str | Path) -> str:
    """SHA-256 (hex) of what `script` and the package modules it imports do."""
    package_dir = Path(package_dir)
    files = {f"workflow/scripts/{Path(script).name}": Path(script)}
    files.update({f"{PACKAGE}/{module.relative_to(package_dir).as_posix()}": module for module in package_modules_used(script, package_dir)})
    return meaning_digest(files.items())


def meaning_digest(files: Iterable[tuple[str, str | Path]]) -> str:
    """One digest of several Python files, each given as (label, path) and read for its meaning."""
    digest = hashlib.sha256()
    for label, path in sorted(files):
        digest.update(f"{label}\0{_file_meaning(*_stamp(path))}\n".encode())
    return digest.hexdigest()


def _stamp(path: str | Path) -> tuple[Path, int, int]:
    """A file and what tells an edit of it apart (time and size), as a cache key: the stages
    share most of their modules, and each is read once per process unless it changes."""
    path = Path(path).resolve()
    stat = path.stat()
    return path, stat.st_mtime_ns, stat.st_size


@cache
def _file_meaning(path: Path, mtime_ns: int, size: int) -> str:
    return source_meaning(path.read_text(encoding="utf-8"))


def source_meaning(source: str) -> str:
    """The syntax tree of `source` as text, without docstrings, positions or comments.

    Fields left empty (None, []) are omitted, so that a newer Python whose tree grows optional
    fields (3.12's type_params, say) spells unchanged code the same way.
    """
    return _spell(_without_docstrings(ast.parse(source)))


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                # A body must not be empty: a function that was only a docstring keeps a `pass`.
                node.body = node.body[1:] or [ast.Pass()]
    return tree


def _spell(node) -> str:
    if isinstance(node, ast.AST):
        fields = [(name, getattr(node, name, None)) for name in node._fields]
        inner = ",".join(f"{name}={_spell(value)}" for name, value in fields if value not in (None, []))
        return f"{type(node).__name__}({inner})"
    if isinstance(node, list):
        return "[" + ",".join(_spell(item) for item in node) + "]"
    return repr(node)


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


def direct_imports(path: str | Path, package_dir: str | Path) -> set[str]:
    """Dotted names of this package's modules that the file `path` (inside `package_dir`)
    imports itself, each as the module its file is (a name that is an attribute counts as
    the module that defines it)."""
    path, package_dir = Path(path), Path(package_dir)
    names = _imported_names(path, _module_name(path, package_dir))
    return {_module_name(found, package_dir) for name in names for found in _module_files(name, package_dir)[-1:]}


def _imported_names(path: Path, module_name: str | None) -> set[str]:
    """Dotted names that `path` imports, with `from a import b` giving both a and a.b
    (b may be a submodule or an attribute; only files that exist are kept later)."""
    return _file_imports(*_stamp(path), module_name)


@cache
def _file_imports(path: Path, mtime_ns: int, size: int, module_name: str | None) -> frozenset[str]:
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
    return frozenset(name for name in names if name == PACKAGE or name.startswith(PACKAGE + "."))


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
