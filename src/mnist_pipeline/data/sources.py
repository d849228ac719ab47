"""What a `source` names, and where a stage finds an IDX file in a directory.

A `source` is null (a known dataset's own mirrors), a directory, a file:// URL or an
http(s):// base. The config check, the workflow's rule inputs, the data checks and the
download stage all read it through `resolve_sources`, so they agree on what it means;
download.py fetches from what it resolves to.
"""

from __future__ import annotations

import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mnist_pipeline.data.datasets import KNOWN_DATASETS, DatasetSpec, get_dataset
from mnist_pipeline.errors import ConfigError


def locate_idx(raw_dir: str | os.PathLike, stem: str) -> Path:
    """The file holding `stem` in `raw_dir`: `<stem>.gz`, else `<stem>`."""
    raw_dir = Path(raw_dir)
    for name in (f"{stem}.gz", stem):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise FileNotFoundError(f"{raw_dir}: neither {stem}.gz nor {stem} is there")


@dataclass(frozen=True)
class Source:
    """Where the files may be: a directory (`url` None) or an http(s) base URL ending in /."""

    label: str
    directory: Path | None = None
    url: str | None = None


def local_source_dir(dataset: str, source: str | None) -> Path | None:
    """The directory a local `source` names (a path or file:// URL), else None (mirrors, http)."""
    sources = resolve_sources(dataset, get_dataset(dataset), source)
    return sources[0].directory if len(sources) == 1 else None


def resolve_sources(dataset: str, spec: DatasetSpec | None, source: str | None) -> tuple[Source, ...]:
    """Where to look for the files, in order; a ConfigError naming `source` when it cannot be used."""
    if source is None:
        if spec is None:
            raise ConfigError(
                f"source: dataset {dataset!r} is not a known dataset ({', '.join(sorted(KNOWN_DATASETS))}),"
                " so `source` must name a directory, file:// or http(s):// URL holding its four IDX files"
            )
        return tuple(Source(label=mirror, url=mirror) for mirror in spec.mirrors)
    parts = urlsplit(source)
    if parts.scheme in ("http", "https"):
        url = source if source.endswith("/") else source + "/"
        return (Source(label=url, url=url),)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"source: {source!r} names host {parts.netloc!r}; a file:// URL must be on this machine")
        return (Source(label=source, directory=Path(urllib.request.url2pathname(parts.path))),)
    if not source:
        raise ConfigError("source: an empty string is not a directory; use null for the dataset's own mirrors")
    # "x:" may be a scheme or a relative directory name; one letter is a Windows drive.
    if len(parts.scheme) > 1 and not Path(source).exists():
        raise ConfigError(f"source: {source!r} has unsupported scheme {parts.scheme!r}; expected a directory, file://, http:// or https://")
    return (Source(label=source, directory=Path(source).expanduser()),)
