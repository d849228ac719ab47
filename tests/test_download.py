"""fetch_dataset against a real HTTP server on 127.0.0.1, local directories and the real data."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
import logging
import os
import shutil
import stat
import struct
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import mnist_pipeline
from helpers import write_synthetic_dataset
from hostile import MIB, gzip_bomb
from httpserver import IdxServer
from mnist_pipeline.data import download
from mnist_pipeline.data.datasets import IDX_STEMS, DatasetSpec, FileChecksum, get_dataset
from mnist_pipeline.data.download import fetch_dataset
from mnist_pipeline.data.idx import read_images_and_labels
from mnist_pipeline.data.sources import locate_idx
from mnist_pipeline.errors import ChecksumError, ConfigError, DownloadError

# Tiny waits keep the failure paths fast; the server's stalls are a few times longer.
FAST = {"timeout": 0.3, "retries": 1, "backoff": 0.01, "progress": False}


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("tiny"), n_train=20, n_test=10, n_classes=3, seed=1)


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> dict[str, bytes]:
    """File name -> bytes of the four gzipped IDX files."""
    return {f"{stem}.gz": (tiny_dir / f"{stem}.gz").read_bytes() for stem in IDX_STEMS}


def content_sha256(files: dict[str, bytes]) -> dict[str, str]:
    return {name.removesuffix(".gz"): hashlib.sha256(gzip.decompress(data)).hexdigest() for name, data in files.items()}


def corrupted(files: dict[str, bytes], name: str) -> dict[str, bytes]:
    """The same files with one value of `name`'s content changed, re-gzipped."""
    content = bytearray(gzip.decompress(files[name]))
    content[-1] ^= 0xFF
    return {**files, name: gzip.compress(bytes(content), mtime=0)}


def known(monkeypatch, mirrors: list[str], checksums: dict[str, FileChecksum], name: str = "tiny") -> str:
    """Register a known dataset `name` for this test only; fetch_dataset then uses its mirrors."""
    spec = DatasetSpec(name, tuple(mirrors), checksums, ("a", "b", "c"))
    monkeypatch.setattr(download, "get_dataset", lambda wanted: spec if wanted == name else get_dataset(wanted))
    return name


def by_content(files: dict[str, bytes]) -> dict[str, FileChecksum]:
    return {stem: FileChecksum(content_sha256=digest) for stem, digest in content_sha256(files).items()}


def assert_nothing_left(dest: Path) -> None:
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == [], "a temporary directory or .part file was left behind"


# --- HTTP ---------------------------------------------------------------------------------


def test_good_mirror_gives_verified_files_and_manifest(tmp_path, tiny):
    dest = tmp_path / "raw"
    with IdxServer() as server:
        base = server.serve("good", tiny)
        manifest = fetch_dataset("custom", base, dest, content_sha256(tiny), **FAST)
    assert sorted(p.name for p in dest.iterdir()) == sorted([*tiny, "manifest.json"])
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert manifest["dataset"] == "custom" and manifest["source"] == base
    for stem in IDX_STEMS:
        entry = manifest["files"][stem]
        data = tiny[f"{stem}.gz"]
        assert (dest / entry["file"]).read_bytes() == data
        assert entry == {
            "file": f"{stem}.gz",
            "bytes": len(data),
            "content_sha256": content_sha256(tiny)[stem],
            "gz_sha256": hashlib.sha256(data).hexdigest(),
            "verified_by": "content_sha256",
            "origin": f"{base}{stem}.gz",
        }
    images, labels = read_images_and_labels(locate_idx(dest, IDX_STEMS[0]), locate_idx(dest, IDX_STEMS[1]), 3)
    assert images.shape == (20, 28, 28) and labels.shape == (20,)


def test_only_the_last_mirror_works(tmp_path, tiny, monkeypatch, caplog):
    with IdxServer() as server:
        mirrors = [
            server.serve("missing", {}),
            server.serve("corrupt", {name: corrupted(tiny, name)[name] for name in tiny}),
            server.serve("drops", tiny, drop_after=100),
            server.serve("slow", tiny, delay=2.0),
            server.serve("good", tiny),
        ]
        name = known(monkeypatch, mirrors, by_content(tiny))
        with caplog.at_level(logging.INFO, logger="mnist_pipeline.data.download"):
            manifest = fetch_dataset(name, None, tmp_path / "raw", **FAST)
        # A mirror that timed out or dropped is not asked again for the next files.
        assert sum(path.startswith("/slow/") for path, _ in server.requests) == FAST["retries"] + 1
    assert {entry["origin"] for entry in manifest["files"].values()} == {f"{mirrors[-1]}{name}" for name in tiny}
    assert all(entry["verified_by"] == "content_sha256" for entry in manifest["files"].values())
    log = caplog.text
    for mirror in mirrors[:-1]:
        assert mirror in log
    assert "HTTP 404" in log and "content SHA-256 is" in log and "connection closed after 100 of" in log
    assert "timeout" in log
    assert sum(f"bytes from {mirrors[-1]}" in message for message in caplog.messages) == 4


def test_every_mirror_failing_is_one_error_listing_each_and_nothing_is_left(tmp_path, tiny, monkeypatch):
    dest = tmp_path / "results" / "raw"
    dest.parent.mkdir()
    with IdxServer() as server:
        mirrors = [
            server.serve("missing", {}),
            server.serve("corrupt", corrupted(tiny, "train-images-idx3-ubyte.gz")),
            server.serve("drops", tiny, drop_after=50),
            server.serve("slow", tiny, delay=2.0),
        ]
        name = known(monkeypatch, mirrors, by_content(tiny))
        with pytest.raises(DownloadError) as caught:
            fetch_dataset(name, None, dest, **FAST)
    message = str(caught.value)
    assert "train-images-idx3-ubyte" in message
    lines = {mirror: next(line for line in message.splitlines() if mirror in line) for mirror in mirrors}
    assert "HTTP 404" in lines[mirrors[0]]
    assert "content SHA-256 is" in lines[mirrors[1]] and "expected" in lines[mirrors[1]]
    # The second attempt resumed at byte 50 and was dropped 50 bytes later.
    assert "connection closed after 100 of" in lines[mirrors[2]] and "2 attempts" in lines[mirrors[2]]
    assert "timeout" in lines[mirrors[3]]
    assert "source:" in message and "--config source=/path/to/dir" in message
    assert_nothing_left(dest)


def test_a_corrupt_file_is_a_checksum_error_naming_file_and_digests(tmp_path, tiny):
    bad = corrupted(tiny, "t10k-images-idx3-ubyte.gz")
    expected = content_sha256(tiny)["t10k-images-idx3-ubyte"]
    actual = content_sha256(bad)["t10k-images-idx3-ubyte"]
    with IdxServer() as server:
        base = server.serve("corrupt", bad)
        with pytest.raises(ChecksumError) as caught:
            fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **FAST)
    message = str(caught.value)
    assert f"{base}t10k-images-idx3-ubyte.gz" in message and expected in message and actual in message
    assert_nothing_left(tmp_path / "raw")


def test_a_dropped_connection_resumes_with_a_range_request(tmp_path, tiny):
    with IdxServer() as server:
        base = server.serve("flaky", tiny, drop_after=1000, drops=1)
        manifest = fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **FAST)
        ranges = server.ranges_requested("/flaky/train-images-idx3-ubyte.gz")
    assert ranges == ["", "bytes=1000-"]
    assert all(entry["verified_by"] == "content_sha256" for entry in manifest["files"].values())
    assert (tmp_path / "raw" / "train-images-idx3-ubyte.gz").read_bytes() == tiny["train-images-idx3-ubyte.gz"]


def test_without_range_support_a_dropped_file_starts_over(tmp_path, tiny):
    with IdxServer() as server:
        base = server.serve("flaky", tiny, drop_after=1000, drops=1, ranges=False)
        fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **FAST)
    assert (tmp_path / "raw" / "train-images-idx3-ubyte.gz").read_bytes() == tiny["train-images-idx3-ubyte.gz"]


def test_a_changed_file_behind_if_range_is_fetched_whole(tmp_path, tiny):
    with IdxServer() as server:
        base = server.serve("flaky", tiny, drop_after=1000, drops=1)
        for route in server.routes.values():
            route.etag = None  # no validator: the resume is sent without If-Range
        fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **FAST)
        headers = [h for path, h in server.requests if path == "/flaky/train-images-idx3-ubyte.gz"]
    assert "If-Range" not in headers[1] and headers[1]["Range"] == "bytes=1000-"


def test_resume_sends_the_validator_of_the_first_answer(tmp_path, tiny):
    with IdxServer() as server:
        base = server.serve("flaky", tiny, drop_after=1000, drops=1)
        fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **FAST)
        headers = [h for path, h in server.requests if path == "/flaky/train-images-idx3-ubyte.gz"]
    assert headers[1]["If-Range"] == '"v1"'


def test_server_errors_are_retried_with_backoff(tmp_path, tiny, caplog):
    with IdxServer() as server:
        base = server.serve("busy", tiny, fail_first=2)
        with caplog.at_level(logging.WARNING, logger="mnist_pipeline.data.download"):
            fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **{**FAST, "retries": 2})
    assert "HTTP 503" in caplog.text and "attempt 3 of 3" in caplog.text


def test_a_stall_in_the_middle_of_a_file_times_out(tmp_path, tiny):
    with IdxServer() as server:
        base = server.serve("stalls", tiny, delay=2.0, stall_at=500)
        # The retry resumes at byte 500, the server stalls again 500 bytes later.
        with pytest.raises(DownloadError, match=r"connection lost after 1000 bytes: no answer within the 0.3 s timeout"):
            fetch_dataset("custom", base, tmp_path / "raw", content_sha256(tiny), **FAST)
        assert server.ranges_requested("/stalls/train-images-idx3-ubyte.gz") == ["", "bytes=500-"]
    assert_nothing_left(tmp_path / "raw")


def test_raw_files_are_fetched_when_no_gz_exists(tmp_path, tiny):
    raw = {name.removesuffix(".gz"): gzip.decompress(data) for name, data in tiny.items()}
    with IdxServer() as server:
        base = server.serve("raw", raw)
        manifest = fetch_dataset("custom", base.rstrip("/"), tmp_path / "raw", content_sha256(tiny), **FAST)
        paths = [path for path, _ in server.requests]
    assert paths[:2] == ["/raw/train-images-idx3-ubyte.gz", "/raw/train-images-idx3-ubyte"]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == sorted([*raw, "manifest.json"])
    assert all("gz_sha256" not in entry for entry in manifest["files"].values())


def test_proxy_from_the_environment_is_used(tmp_path, tiny, monkeypatch):
    with IdxServer() as proxy:
        proxy.serve("data", tiny)
        for variable in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.setenv("http_proxy", proxy.url)
        # .invalid never resolves: the files can only have come through the proxy.
        manifest = fetch_dataset("custom", "http://mirror.invalid/data/", tmp_path / "raw", content_sha256(tiny), **FAST)
    assert manifest["files"]["train-images-idx3-ubyte"]["origin"] == "http://mirror.invalid/data/train-images-idx3-ubyte.gz"
    assert len(proxy.requests) == 4


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path, tiny, capsys):
    with IdxServer() as server:
        base = server.serve("good", tiny)
        fetch_dataset("custom", base, tmp_path / "a", content_sha256(tiny), **{**FAST, "progress": True})
        assert "\rtrain-images-idx3-ubyte.gz [" in capsys.readouterr().err
        fetch_dataset("custom", base, tmp_path / "b", content_sha256(tiny), **{**FAST, "progress": None})
        assert capsys.readouterr().err == ""  # pytest's captured stderr is no terminal


# --- checksum rules -----------------------------------------------------------------------


def test_gz_digest_verifies_when_no_content_digest_is_known(tmp_path, tiny, monkeypatch):
    gz_only = {name.removesuffix(".gz"): FileChecksum(gz_sha256=hashlib.sha256(data).hexdigest()) for name, data in tiny.items()}
    source = tmp_path / "mirror"
    source.mkdir()
    for name, data in tiny.items():
        (source / name).write_bytes(data)
    name = known(monkeypatch, [], gz_only)
    manifest = fetch_dataset(name, str(source), tmp_path / "raw", **FAST)
    assert {entry["verified_by"] for entry in manifest["files"].values()} == {"gz_sha256"}

    # Same content, re-compressed: with only the .gz digest known it cannot be vouched for.
    label_file = source / "t10k-labels-idx1-ubyte.gz"
    label_file.write_bytes(gzip.compress(gzip.decompress(tiny[label_file.name]), compresslevel=1, mtime=1))
    with pytest.raises(ChecksumError, match=r"gz sha256 of the \.gz is [0-9a-f]{64}, expected"):
        fetch_dataset(name, str(source), tmp_path / "raw2", **FAST)

    label_file.unlink()
    (source / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress(tiny[label_file.name]))
    with pytest.raises(ChecksumError, match=r"not gzipped, and only the digest of the published \.gz is known"):
        fetch_dataset(name, str(source), tmp_path / "raw3", **FAST)
    assert not (tmp_path / "raw2").exists() and not (tmp_path / "raw3").exists()


def test_gz_md5_is_the_last_resort(tmp_path, tiny, monkeypatch):
    md5_only = {name.removesuffix(".gz"): FileChecksum(gz_md5=hashlib.md5(data).hexdigest()) for name, data in tiny.items()}
    with IdxServer() as server:
        name = known(monkeypatch, [server.serve("good", tiny)], md5_only)
        manifest = fetch_dataset(name, None, tmp_path / "raw", **FAST)
    assert {entry["verified_by"] for entry in manifest["files"].values()} == {"gz_md5"}


def test_custom_dataset_without_checksums_is_taken_unverified_and_says_so(tmp_path, tiny_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="mnist_pipeline.data.download"):
        manifest = fetch_dataset("custom", str(tiny_dir), tmp_path / "raw", None, **FAST)
    assert {entry["verified_by"] for entry in manifest["files"].values()} == {"unverified"}
    assert caplog.text.count("no checksum is known") == 4
    assert manifest["files"]["t10k-labels-idx1-ubyte"]["content_sha256"] in caplog.text


def test_partial_custom_checksums_check_the_listed_files_only(tmp_path, tiny_dir, tiny):
    digest = content_sha256(tiny)["t10k-labels-idx1-ubyte"]
    manifest = fetch_dataset("custom", str(tiny_dir), tmp_path / "raw", {"t10k-labels-idx1-ubyte": digest}, **FAST)
    verified = {stem: entry["verified_by"] for stem, entry in manifest["files"].items()}
    assert verified == {**dict.fromkeys(IDX_STEMS, "unverified"), "t10k-labels-idx1-ubyte": "content_sha256"}


def test_an_unverified_file_must_still_be_valid_idx(tmp_path, tiny):
    truncated = {**tiny, "train-labels-idx1-ubyte.gz": tiny["train-labels-idx1-ubyte.gz"][:-20]}
    with IdxServer() as server:
        base = server.serve("cut", truncated)
        with pytest.raises(DownloadError, match=r"train-labels-idx1-ubyte\.gz: bad gzip stream"):
            fetch_dataset("custom", base, tmp_path / "raw", None, **FAST)
    assert_nothing_left(tmp_path / "raw")


# --- hostile files ------------------------------------------------------------------------

# A labels file that declares 1000 labels and holds 64 MiB of zeros after them.
LABELS_HEADER = b"\x00\x00\x08\x01" + struct.pack(">I", 1000)


def bombed(tiny: dict[str, bytes], n_zeros: int) -> dict[str, bytes]:
    return {**tiny, "train-labels-idx1-ubyte.gz": gzip_bomb(LABELS_HEADER, n_zeros)}


@pytest.mark.parametrize("over", ["http", "directory"])
def test_a_gzip_bomb_is_refused_in_bounded_memory(tmp_path, tiny, over):
    files = bombed(tiny, 64 * MIB)
    stored = len(files["train-labels-idx1-ubyte.gz"])
    with IdxServer() as server:
        if over == "http":
            source = server.serve("bomb", files)
        else:
            source = str(tmp_path / "bomb")
            os.mkdir(source)
            for name, data in files.items():
                Path(source, name).write_bytes(data)
        tracemalloc.start()
        try:
            with pytest.raises(DownloadError) as caught:
                fetch_dataset("custom", source, tmp_path / "out" / "raw", None, **FAST)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert f"train-labels-idx1-ubyte.gz: payload is longer than the header says: shape (1000,) of uint8 needs 1000 bytes" \
           f" after the 8-byte header, but the {stored}-byte gzip file decompresses to more than 1008 bytes" in str(caught.value)
    assert peak < 4 * MIB, f"{peak / MIB:.1f} MiB held at once"
    assert_nothing_left(tmp_path / "out" / "raw")


def test_a_server_sending_more_than_any_idx_file_is_stopped(tmp_path, tiny, monkeypatch):
    monkeypatch.setattr(download, "MAX_FILE_BYTES", 100_000)
    files = {**tiny, "t10k-images-idx3-ubyte.gz": bytes(300_000)}
    with IdxServer() as server:
        base = server.serve("endless", files)
        with pytest.raises(DownloadError, match=rf"{base}t10k-images-idx3-ubyte.gz: sent more than 100000 bytes"):
            fetch_dataset("custom", base, tmp_path / "out" / "raw", None, **FAST)
    assert_nothing_left(tmp_path / "out" / "raw")


def peak_memory_of_fetch(source: Path, dest: Path) -> tuple[str, float]:
    """What fetch_dataset raised, and the most memory (MiB) its process ever held, in a fresh process."""
    # VmHWM, not ru_maxrss: exec starts it afresh, where ru_maxrss may count the forked parent.
    script = (
        "import sys\n"
        "from mnist_pipeline.data.download import fetch_dataset\n"
        "try:\n"
        "    fetch_dataset('custom', sys.argv[1], sys.argv[2], None, progress=False)\n"
        "except Exception as error:\n"
        "    print(type(error).__name__, error)\n"
        "print(next(line for line in open('/proc/self/status') if line.startswith('VmHWM:')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(mnist_pipeline.__file__).parents[1])}
    out = subprocess.run([sys.executable, "-c", script, str(source), str(dest)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    text, peak = out.stdout.rsplit("VmHWM:", 1)
    return text, int(peak.split()[0]) / 1024


def test_the_download_job_stays_small_on_a_gigabyte_bomb(tmp_path, tiny_dir, tiny):
    """The issue's case: a small .gz of gigabytes of zeros, fetched by a process of its own."""
    source = tmp_path / "bomb"
    source.mkdir()
    for name, data in bombed(tiny, 1024 * MIB).items():
        (source / name).write_bytes(data)
    text, bomb_peak = peak_memory_of_fetch(source, tmp_path / "bomb-raw")
    assert "DownloadError" in text and "decompresses to more than 1008 bytes" in text
    clean_text, clean_peak = peak_memory_of_fetch(tiny_dir, tmp_path / "clean-raw")
    assert "Error" not in clean_text
    # The content would be 1 GiB; the declared 1000 bytes and a chunk are all that may be read.
    assert bomb_peak < clean_peak + 16, f"{bomb_peak:.0f} MiB for the bomb, {clean_peak:.0f} MiB for good files"


# --- local sources ------------------------------------------------------------------------


@pytest.mark.parametrize("as_url", [False, True], ids=["directory", "file-url"])
def test_local_directory_or_file_url(tmp_path, tiny_dir, tiny, as_url):
    source = tiny_dir.as_uri() if as_url else str(tiny_dir)
    manifest = fetch_dataset("custom", source, tmp_path / "raw", content_sha256(tiny), **FAST)
    for stem in IDX_STEMS:
        entry = manifest["files"][stem]
        assert entry["origin"] == str(tiny_dir / f"{stem}.gz") and entry["verified_by"] == "content_sha256"
        fetched, original = tmp_path / "raw" / f"{stem}.gz", tiny_dir / f"{stem}.gz"
        assert fetched.read_bytes() == original.read_bytes()


def test_local_files_are_copied_never_linked_to_the_users_own(tmp_path, tiny_dir):
    source = tmp_path / "mine"
    shutil.copytree(tiny_dir, source)
    for path in source.iterdir():
        path.chmod(0o600)
    old = os.umask(0o022)
    try:
        fetch_dataset("custom", str(source), tmp_path / "results" / "raw", None, **FAST)
    finally:
        os.umask(old)
    for stem in IDX_STEMS:
        fetched, original = tmp_path / "results" / "raw" / f"{stem}.gz", source / f"{stem}.gz"
        assert not os.path.samefile(fetched, original)
        # Readable like every other output, whatever the user's file allows.
        assert stat.S_IMODE(fetched.stat().st_mode) == 0o644
        fetched.chmod(0o444)
        with open(fetched, "r+b") if os.geteuid() == 0 else open(os.devnull, "wb") as handle:
            handle.write(b"\x00")  # root ignores modes: the write must still not reach the user's file
        assert stat.S_IMODE(original.stat().st_mode) == 0o600
        assert original.read_bytes() == (tiny_dir / f"{stem}.gz").read_bytes()


def test_a_relative_directory_whose_name_looks_like_a_scheme(tmp_path, tiny_dir, monkeypatch):
    shutil.copytree(tiny_dir, tmp_path / "set:2")
    monkeypatch.chdir(tmp_path)
    manifest = fetch_dataset("custom", "set:2", "raw", None, **FAST)
    assert manifest["files"]["train-images-idx3-ubyte"]["origin"] == "set:2/train-images-idx3-ubyte.gz"


def test_local_copy_with_changed_content_is_refused(tmp_path, tiny):
    source = tmp_path / "copy"
    source.mkdir()
    for name, data in corrupted(tiny, "train-labels-idx1-ubyte.gz").items():
        (source / name).write_bytes(data)
    with pytest.raises(ChecksumError, match="train-labels-idx1-ubyte") as caught:
        fetch_dataset("custom", str(source), tmp_path / "out" / "raw", content_sha256(tiny), **FAST)
    assert content_sha256(tiny)["train-labels-idx1-ubyte"] in str(caught.value)
    assert_nothing_left(tmp_path / "out" / "raw")


def test_missing_local_files_are_named(tmp_path, tiny_dir):
    source = tmp_path / "partial"
    shutil.copytree(tiny_dir, source)
    (source / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DownloadError, match=r"neither t10k-images-idx3-ubyte\.gz nor t10k-images-idx3-ubyte is there"):
        fetch_dataset("custom", str(source), tmp_path / "out" / "raw", None, **FAST)
    assert_nothing_left(tmp_path / "out" / "raw")


def test_a_full_disk_stops_at_once_and_cleans_up(tmp_path, tiny_dir, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(download.shutil, "copyfile", full)
    with pytest.raises(DownloadError, match="No space left on device"):
        fetch_dataset("custom", str(tiny_dir), tmp_path / "out" / "raw", None, **FAST)
    assert_nothing_left(tmp_path / "out" / "raw")


def test_an_existing_destination_is_replaced_whole(tmp_path, tiny_dir):
    dest = tmp_path / "out" / "raw"
    dest.mkdir(parents=True)
    (dest / "stale.txt").write_text("from an earlier run")
    fetch_dataset("custom", str(tiny_dir), dest, None, **FAST)
    assert sorted(p.name for p in dest.iterdir()) == sorted([f"{s}.gz" for s in IDX_STEMS] + ["manifest.json"])
    assert sorted(p.name for p in dest.parent.iterdir()) == ["raw"]


def test_locate_idx_prefers_gz_and_names_what_is_missing(tmp_path):
    (tmp_path / "a").write_bytes(b"")
    assert locate_idx(tmp_path, "a") == tmp_path / "a"
    (tmp_path / "a.gz").write_bytes(b"")
    assert locate_idx(tmp_path, "a") == tmp_path / "a.gz"
    with pytest.raises(FileNotFoundError, match="neither b.gz nor b"):
        locate_idx(tmp_path, "b")


# --- configuration errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "source", "checksums", "key"),
    [
        ("custom", None, None, "source"),
        ("custom", "", None, "source"),
        ("custom", "ftp://example.org/data/", None, "source"),
        ("custom", "file://otherhost/data", None, "source"),
        ("custom", "/data", {"train-images-idx3-ubyte.gz": "0" * 64}, "checksums.train-images-idx3-ubyte.gz"),
        ("custom", "/data", {"train-images-idx3-ubyte": "ABC"}, "checksums.train-images-idx3-ubyte"),
        ("fashion-mnist", "/data", {"train-images-idx3-ubyte": "0" * 64}, "checksums"),
    ],
)
def test_configuration_errors_name_the_key(tmp_path, dataset, source, checksums, key):
    with pytest.raises(ConfigError, match=rf"^{key}: "):
        fetch_dataset(dataset, source, tmp_path / "raw", checksums, **FAST)
    assert list(tmp_path.iterdir()) == []


# --- the real Fashion-MNIST files ---------------------------------------------------------


def test_real_fashion_mnist_is_verified_by_content(tmp_path, fashion_dir):
    manifest = fetch_dataset("fashion-mnist", str(fashion_dir), tmp_path / "raw", progress=False)
    expected = get_dataset("fashion-mnist").checksums
    for stem in IDX_STEMS:
        assert manifest["files"][stem]["verified_by"] == "content_sha256"
        assert manifest["files"][stem]["content_sha256"] == expected[stem].content_sha256
    images, labels = read_images_and_labels(tmp_path / "raw" / "train-images-idx3-ubyte.gz", tmp_path / "raw" / "train-labels-idx1-ubyte.gz", 10)
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10


def test_real_fashion_mnist_with_one_changed_byte_is_refused(tmp_path, fashion_dir):
    copy = tmp_path / "copy"
    copy.mkdir()
    for stem in IDX_STEMS:
        (copy / f"{stem}.gz").symlink_to(fashion_dir / f"{stem}.gz")
    labels_file = copy / "t10k-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(labels_file.read_bytes()))
    content[100] = (content[100] + 1) % 10  # still a valid label: only the checksum can tell
    labels_file.unlink()
    (copy / "t10k-labels-idx1-ubyte").write_bytes(bytes(content))
    with pytest.raises(ChecksumError) as caught:
        fetch_dataset("fashion-mnist", str(copy), tmp_path / "out" / "raw", progress=False)
    message = str(caught.value)
    assert "t10k-labels-idx1-ubyte" in message
    assert get_dataset("fashion-mnist").checksums["t10k-labels-idx1-ubyte"].content_sha256 in message
    assert hashlib.sha256(bytes(content)).hexdigest() in message
    assert_nothing_left(tmp_path / "out" / "raw")


def test_real_fashion_mnist_over_http(tmp_path, fashion_dir):
    files = {f"{stem}.gz": (fashion_dir / f"{stem}.gz").read_bytes() for stem in IDX_STEMS}
    with IdxServer() as server:
        base = server.serve("fashion", files, drop_after=3_000_000, drops=1)
        manifest = fetch_dataset("fashion-mnist", base, tmp_path / "raw", timeout=5.0, backoff=0.01, progress=False)
        assert server.ranges_requested("/fashion/train-images-idx3-ubyte.gz") == ["", "bytes=3000000-"]
    assert {entry["verified_by"] for entry in manifest["files"].values()} == {"content_sha256"}
