"""Fetch a dataset's four IDX files into one directory, verified, or fail saying why.

Sources are tried in order: a known dataset's mirrors, or the one `source` the user gave (a
directory, file:// or http(s):// base; what a `source` names is `sources.resolve_sources`). Each HTTP file gets retries with exponential backoff
and resumes from where a dropped connection left it when the server honours Range; then the
next mirror. A file is streamed to `<name>.part` and renamed only once its checksum passed,
and the whole directory is built beside `dest` and renamed into place at the end, so the
next stage never sees a wrong, partial or half-populated raw directory.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import shutil
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from http.client import HTTPException
from pathlib import Path

from mnist_pipeline import __version__
from mnist_pipeline.data.datasets import IDX_STEMS, DatasetSpec, FileChecksum, get_dataset
from mnist_pipeline.data.idx import GZIP_MAGIC, MAX_IDX_BYTES, content_sha256
from mnist_pipeline.data.sources import Source, locate_idx, resolve_sources
from mnist_pipeline.errors import ChecksumError, ConfigError, DownloadError, IdxFormatError
from mnist_pipeline.fileio import write_json

# parsed.py and benchmarks/ still import locate_idx from here (they change on other branches):
# it is the same function, whose home is sources.py.
__all__ = ["fetch_dataset", "keep_download", "locate_idx"]

log = logging.getLogger(__name__)

# Some hosts refuse urllib's default agent; a named one is also politer.
USER_AGENT = f"mnist-pipeline/{__version__} (Python urllib)"
CHUNK_BYTES = 1 << 16
# No file we accept is larger (gzip adds a little to incompressible content): a server that
# sends more is stopped there, before it fills the disk.
MAX_FILE_BYTES = MAX_IDX_BYTES + MAX_IDX_BYTES // 100
# Answers that mean "this file is not here": S3 says 403 for a missing key.
NOT_FOUND = {403, 404, 410}
# Answers worth asking again, as are dropped connections and timeouts.
TRANSIENT = {408, 425, 429, 500, 502, 503, 504}
LOCAL_HINT = (
    "To use a copy you already have, put the four files (.gz or raw) in one directory and point"
    " `source:` at it: snakemake --config source=/path/to/dir (or set `source:` in config.yaml)."
)


def fetch_dataset(
    dataset: str,
    source: str | None,
    dest: str | os.PathLike,
    checksums: Mapping[str, str] | None = None,
    *,
    timeout: float = 30.0,
    retries: int = 3,
    progress: bool | None = None,
    backoff: float = 1.0,
) -> dict:
    """Fetch and verify the four IDX files of `dataset` into the new directory `dest`.

    `source` None means the dataset's own mirrors; otherwise a directory, file:// or
    http(s):// base holding the files. `checksums` (custom datasets only) maps a stem to the
    SHA-256 of its decompressed content. `timeout` (s) bounds the connect and each read;
    `retries` more attempts follow a failed one, after backoff * 2**k s. `progress` None
    shows a progress bar only when stderr is a terminal.

    Returns the manifest also written to `dest`/manifest.json. On failure `dest` is not
    created (an existing one is left as it was) and no temporary file remains.
    """
    spec = get_dataset(dataset)
    sources = resolve_sources(dataset, spec, source)
    expected = _expected_checksums(dataset, spec, checksums)
    fetcher = _Fetcher(timeout, retries, backoff, sys.stderr.isatty() if progress is None else progress)
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Not mkdtemp: its 0700 mode would become the mode of `dest`; mkdir honours the umask.
        tmp = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}.tmp")
        tmp.mkdir()
    except OSError as error:
        raise DownloadError(f"{dest}: cannot create the download directory: {error}") from None
    try:
        files = {stem: _fetch_file(dataset, stem, sources, expected[stem], tmp, fetcher) for stem in IDX_STEMS}
        manifest = {"dataset": dataset, "source": source, "files": files}
        write_json(tmp / "manifest.json", manifest)
        _replace_dir(tmp, dest)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, OSError) and not isinstance(error, DownloadError):
            raise DownloadError(f"{dest}: {error}") from error
        raise
    log.info("%s: the four IDX files are in %s", dataset, dest)
    return manifest


def keep_download(fetched: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Move the directory `fetch_dataset` verified into place as `dest`, replacing any old one."""
    _replace_dir(Path(fetched), Path(dest))
    log.info("%s: now holds the files verified in %s", dest, fetched)


def _expected_checksums(
    dataset: str, spec: DatasetSpec | None, checksums: Mapping[str, str] | None
) -> dict[str, FileChecksum | None]:
    """Stem -> what its file must match; None where nothing is known (taken unchecked)."""
    if spec is not None:
        if checksums:
            raise ConfigError(
                f"checksums: {dataset!r} is a known dataset, whose published checksums always apply;"
                " `checksums` is for custom datasets only"
            )
        return dict(spec.checksums)
    checksums = dict(checksums or {})
    for stem, digest in checksums.items():
        if stem not in IDX_STEMS:
            raise ConfigError(f"checksums.{stem}: not one of the IDX files (expected {', '.join(IDX_STEMS)}, without .gz)")
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ConfigError(f"checksums.{stem}: {digest!r} is not a SHA-256 digest (64 lower-case hex digits)")
    return {stem: FileChecksum(content_sha256=checksums[stem]) if stem in checksums else None for stem in IDX_STEMS}


class _SourceFailed(Exception):
    """This source cannot provide this file; `kind` is missing, network, corrupt or checksum."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind = kind


class _Transient(Exception):
    """A failure worth retrying: timeout, dropped connection, 5xx."""


def _fetch_file(
    dataset: str, stem: str, sources: Sequence[Source], expected: FileChecksum | None, tmp: Path, fetcher: _Fetcher
) -> dict:
    failures: list[tuple[Source, _SourceFailed]] = []
    for source in sources:
        try:
            if source.url in fetcher.unreachable:
                raise _SourceFailed("network", f"skipped: it failed earlier ({fetcher.unreachable[source.url]})")
            if source.directory is not None:
                record = _fetch_local(source.directory, stem, expected, tmp, dataset)
            else:
                record = fetcher.fetch_http(source.url, stem, expected, tmp, dataset)
        except _SourceFailed as failure:
            if failure.kind == "network" and source.url is not None:
                fetcher.unreachable.setdefault(source.url, str(failure))
            log.warning("%s: %s: %s", stem, source.label, failure)
            failures.append((source, failure))
            continue
        log.info(
            "%s: %d bytes from %s, %s",
            record["file"],
            record["bytes"],
            record["origin"],
            "NOT verified (no checksum known)" if record["verified_by"] == "unverified" else f"{record['verified_by']} verified",
        )
        return record
    listing = "\n".join(f"  - {source.label}: {failure}" for source, failure in failures)
    if all(failure.kind == "checksum" for _, failure in failures):
        raise ChecksumError(
            f"{stem} of dataset {dataset!r} failed its checksum at every source:\n{listing}\n"
            f"Its content differs from the published {dataset} data. If it is meant to be another dataset,"
            " give it another `dataset` name (with its own `checksums`, if you have them)."
        )
    raise DownloadError(f"could not fetch {stem} of dataset {dataset!r} from any of {len(sources)} source(s):\n{listing}\n{LOCAL_HINT}")


def _fetch_local(directory: Path, stem: str, expected: FileChecksum | None, tmp: Path, dataset: str) -> dict:
    try:
        path = locate_idx(directory, stem)
    except FileNotFoundError as error:
        raise _SourceFailed("missing", str(error)) from None
    part = tmp / f"{path.name}.part"
    try:
        # A copy, never a hard link: a link would make the user's file and raw/ one inode, so a
        # chmod or an in-place edit under results/ would change the user's own file.
        shutil.copyfile(path, part)
    except OSError as error:
        _raise_if_local_disk(error, part)
        raise _SourceFailed("missing", f"cannot read {path}: {error.strerror or error}") from None
    return _accept(part, stem, expected, str(path), dataset)


def _raise_if_local_disk(error: OSError, path: Path) -> None:
    """A full or read-only disk here is no fault of the source: stop instead of trying others."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        raise DownloadError(f"{path}: cannot write the download: {os.strerror(error.errno)}") from error


def _accept(part: Path, stem: str, expected: FileChecksum | None, origin: str, dataset: str) -> dict:
    """Verify the finished `<name>.part`, rename it to `<name>`, and describe it for the manifest."""
    try:
        record = _verify(part, stem, expected, origin, dataset)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, part.with_suffix(""))
    return record


def _verify(part: Path, stem: str, expected: FileChecksum | None, origin: str, dataset: str) -> dict:
    name = part.with_suffix("").name
    # Streamed, never read whole: the file may be a small gzip of gigabytes.
    with open(part, "rb") as handle:
        stored = _stored_digests(handle)
        handle.seek(0)
        try:
            content = content_sha256(handle, origin)  # also checks the header against the size
        except IdxFormatError as error:
            raise _SourceFailed("corrupt", str(error)) from None
    is_gz = stored["head"] == GZIP_MAGIC
    record = {
        "file": name,
        "bytes": stored["bytes"],
        "content_sha256": content,
        "origin": origin,
        "verified_by": "unverified",
    }
    if is_gz:
        record["gz_sha256"] = stored["sha256"]
    if expected is None:
        log.warning(
            "%s: no checksum is known for this file of custom dataset %r; taken unchecked (content SHA-256 %s)",
            name,
            dataset,
            record["content_sha256"],
        )
        return record
    if expected.content_sha256:
        kind, want, got = "content_sha256", expected.content_sha256, record["content_sha256"]
    elif not is_gz:
        raise _SourceFailed(
            "checksum",
            f"{origin} is not gzipped, and only the digest of the published .gz is known for {stem}"
            f" of {dataset}, so this copy cannot be verified; use the original .gz file",
        )
    elif expected.gz_sha256:
        kind, want, got = "gz_sha256", expected.gz_sha256, record["gz_sha256"]
    else:
        kind, want, got = "gz_md5", expected.gz_md5, stored["md5"]
    if got != want:
        what = "content SHA-256" if kind == "content_sha256" else f"{kind.replace('_', ' ')} of the .gz"
        raise _SourceFailed("checksum", f"{origin}: {what} is {got}, expected {want}")
    record["verified_by"] = kind
    return record


def _stored_digests(handle) -> dict:
    """Size, first two bytes, SHA-256 and MD5 of a file's bytes as stored, in one streaming pass."""
    sha256, md5, size, head = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0, b""
    while chunk := handle.read(CHUNK_BYTES):
        head = head or chunk[:2]
        sha256.update(chunk)
        md5.update(chunk)
        size += len(chunk)
    return {"bytes": size, "head": head, "sha256": sha256.hexdigest(), "md5": md5.hexdigest()}


class _Fetcher:
    """HTTP transfers with timeouts, retries, resume and an optional progress bar."""

    def __init__(self, timeout: float, retries: int, backoff: float, progress: bool):
        self.timeout, self.retries, self.backoff, self.progress = timeout, retries, backoff, progress
        # build_opener keeps urllib's defaults, among them the proxies of the environment.
        self.opener = urllib.request.build_opener()
        self.unreachable: dict[str, str] = {}

    def fetch_http(self, base: str, stem: str, expected: FileChecksum | None, tmp: Path, dataset: str) -> dict:
        absent = []
        for name in (f"{stem}.gz", stem):
            url = base + name
            part = tmp / f"{name}.part"
            try:
                self._download(url, part)
            except _SourceFailed as failure:
                part.unlink(missing_ok=True)
                if failure.kind != "missing":
                    raise
                absent.append(f"{name}: {failure}")
                continue
            return _accept(part, stem, expected, url, dataset)
        raise _SourceFailed("missing", "; ".join(absent))

    def _download(self, url: str, part: Path) -> None:
        attempts = max(self.retries, 0) + 1
        validator: list[str] = []  # ETag or Last-Modified of the first answer, for If-Range
        problem: _Transient | None = None
        for attempt in range(attempts):
            if problem is not None:
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("%s: %s; attempt %d of %d in %.1f s", url, problem, attempt + 1, attempts, delay)
                time.sleep(delay)
            try:
                self._transfer(url, part, validator)
                return
            except _Transient as error:
                problem = error
        raise _SourceFailed("network", f"{problem} (gave up after {attempts} attempt{'s' * (attempts > 1)})")

    def _transfer(self, url: str, part: Path, validator: list[str]) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            headers.update({"If-Range": validator[0]} if validator else {})
        try:
            response = self.opener.open(urllib.request.Request(url, headers=headers), timeout=self.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if error.code == 416 and have:
                part.unlink()
                raise _Transient("the server refused to resume (HTTP 416); starting over") from None
            reason = f"HTTP {error.code} {error.reason}"
            if error.code in NOT_FOUND:
                raise _SourceFailed("missing", reason) from None
            if error.code in TRANSIENT:
                raise _Transient(reason) from None
            raise _SourceFailed("network", reason) from None
        except (urllib.error.URLError, OSError, HTTPException) as error:
            raise _Transient(self._describe(error)) from None
        with response:
            resumed = have and response.status == 206
            if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
                part.unlink()
                raise _Transient(f"the server resumed at the wrong offset ({response.headers.get('Content-Range')})")
            start = have if resumed else 0
            if not validator:
                tag = response.headers.get("ETag", "")
                # If-Range needs a strong validator; a weak ETag would always restart.
                strong = tag if tag and not tag.startswith("W/") else response.headers.get("Last-Modified")
                validator.extend([strong] if strong else [])
            length = response.headers.get("Content-Length")
            total = start + int(length) if length and length.isdigit() else None
            self._stream(response, part, start, total, url)

    def _stream(self, response, part: Path, start: int, total: int | None, url: str) -> None:
        done = start
        bar = _ProgressBar(part.with_suffix("").name, total) if self.progress else None
        try:
            with open(part, "ab" if start else "wb") as out:
                while True:
                    try:
                        # read1: what has arrived, so a stall keeps the bytes before it for resuming.
                        chunk = response.read1(CHUNK_BYTES)
                    except (OSError, HTTPException) as error:
                        raise _Transient(f"connection lost after {done} bytes: {self._describe(error)}") from None
                    if not chunk:
                        break
                    try:
                        out.write(chunk)
                    except OSError as error:
                        _raise_if_local_disk(error, part)
                        raise
                    done += len(chunk)
                    if done > MAX_FILE_BYTES:
                        raise _SourceFailed(
                            "corrupt", f"{url}: sent more than {MAX_FILE_BYTES} bytes, more than any IDX file can be; stopped there"
                        )
                    if bar:
                        bar.update(done)
        finally:
            if bar:
                bar.close()
        # http.client returns b"" when the peer closes early instead of raising, so count.
        if total is not None and done < total:
            raise _Transient(f"connection closed after {done} of {total} bytes")

    def _describe(self, error: BaseException) -> str:
        reason = getattr(error, "reason", None) if isinstance(error, urllib.error.URLError) else error
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"no answer within the {self.timeout:g} s timeout"
        return str(reason) or type(reason).__name__


class _ProgressBar:
    """One self-overwriting line on stderr, redrawn at most ten times a second."""

    def __init__(self, name: str, total: int | None):
        self.name, self.total, self.drawn = name, total, 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if now - self.drawn < 0.1:
            return
        self.drawn = now
        if self.total:
            filled = int(30 * done / self.total)
            text = f"{self.name} [{'#' * filled}{'.' * (30 - filled)}] {done / 1e6:.1f}/{self.total / 1e6:.1f} MB"
        else:
            text = f"{self.name} {done / 1e6:.1f} MB"
        sys.stderr.write(f"\r{text}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _replace_dir(tmp: Path, dest: Path) -> None:
    """Rename the finished `tmp` to `dest`; an existing `dest` is swapped out, then removed."""
    if not (dest.exists() or dest.is_symlink()):
        os.rename(tmp, dest)
        return
    old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    os.rename(dest, old)
    os.rename(tmp, dest)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    else:
        old.unlink()
