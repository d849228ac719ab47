"""What a reader needs to reproduce a run: data and its checksums, code, config, software, machine."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import mnist_pipeline
from mnist_pipeline.data.datasets import absent_classes

PACKAGES = ("mnist-pipeline", "numpy", "pyarrow", "matplotlib", "pillow", "threadpoolctl", "snakemake")


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, "not installed" where it is missing."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def _git(repo_dir: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(repo_dir), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def code_version(repo_dir: str | Path | None = None) -> dict[str, Any]:
    """The package version and, when the code lives in a git work tree, its commit.

    `dirty` is True when tracked files differ from that commit: the commit alone then does
    not reproduce the run. Defaults to the directory of the installed package.
    """
    repo_dir = Path(repo_dir) if repo_dir is not None else Path(mnist_pipeline.__file__).resolve().parent
    commit = _git(repo_dir, "rev-parse", "HEAD")
    status = _git(repo_dir, "status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "package_version": mnist_pipeline.__version__,
        "git_commit": commit or None,
        "git_dirty": None if status is None else bool(status),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """OS, CPU, core count and the BLAS numpy uses (which decides training speed)."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python_implementation": f"{platform.python_implementation()} {sys.version.split()[0]}",
    }
    try:
        import numpy  # noqa: F401  (loads the BLAS so that threadpoolctl can see it)
        from threadpoolctl import threadpool_info

        info["blas"] = sorted(
            f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})"
            for lib in threadpool_info()
            if lib.get("user_api") == "blas"
        )
    except ImportError:
        info["blas"] = []
    return info


def collect_provenance(
    *,
    config: Mapping[str, Any],
    dataset_info: Mapping[str, Any],
    date: str | None = None,
    repo_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Gather the provenance block of the report.

    `dataset_info` is the parse stage's dataset.json (or the download manifest itself): the
    `dataset`, its `source` and `files`, each file's checksums and how it was verified.
    `date` should come from the run's own records (e.g. when training finished), never from
    the clock at render time, so that re-rendering the same run gives the same report.
    """
    counts = {key: dataset_info[key] for key in ("n_train", "n_test", "classes", "image_shape") if key in dataset_info}
    if "train_class_counts" in dataset_info:
        counts["absent_classes"] = absent_classes(dataset_info)
    return {
        "dataset": dataset_info.get("dataset", config.get("dataset")),
        "source": dataset_info.get("source"),
        "files": dict(dataset_info.get("files") or {}),
        **counts,
        "date": date,
        "code": code_version(repo_dir),
        "config": dict(config),
        "packages": package_versions(),
        "machine": machine(),
    }
