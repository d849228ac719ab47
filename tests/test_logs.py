"""A failed stage ends its log with its reason even when the disk is full (issue 21), and never
prints an error of its own in place of that reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.workflow.terminal import failed_logs, failure_text

# A stage as the workflow runs one: its log, 200 epoch lines, a log that ends at a block
# boundary (so that the next line needs a new block), then the disk fills and saving fails.
STAGE = """
import logging, os, sys
from mnist_pipeline.workflow.logs import log_to
log_to({log!r})
for epoch in range(200):
    logging.getLogger("mnist_pipeline.nn.train").info("epoch %d: train loss 0.1234 accuracy 0.9876", epoch)
size, block = os.stat({log!r}).st_size, os.stat({log!r}).st_blksize
sys.stderr.write("." * ((-size - 1) % block) + "\\n")
{fill}
with open({model!r}, "wb") as handle:
    handle.write(b"\\0" * 1_000_000)
"""
# Fill the file system up to its last byte.
FILL_DISK = """
with open({filler!r}, "wb") as filler:
    try:
        while True:
            filler.write(b"\\0" * 4096)
            filler.flush()
    except OSError:
        pass
"""
# Where no file system can be mounted: no file may grow past the log's size, which fails
# writes as a full disk does (EFBIG instead of ENOSPC).
NO_FILE_MAY_GROW = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = os.stat({log!r}).st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""
# What Python prints when an excepthook fails, instead of the reason.
LOST = ("Error in sys.excepthook", "lost sys.stderr", "Traceback", "Exception ignored")


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MB file system of its own (a tmpfs: root only), or None where none can be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        yield None
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def run_stage(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_a_stage_failing_on_a_full_disk_ends_its_log_with_the_reason(tmp_path, small_disk):
    where = small_disk or tmp_path
    log, model = where / "logs" / "train.log", where / "model.npz"
    log.parent.mkdir()
    if small_disk is not None:
        fill, reason = FILL_DISK.format(filler=str(where / "filler")), "OSError: [Errno 28] No space left on device"
    else:
        fill, reason = NO_FILE_MAY_GROW.format(log=str(log)), "OSError: [Errno 27] File too large"
    result = run_stage(STAGE.format(log=str(log), model=str(model), fill=fill), tmp_path)
    assert result.returncode == 1
    assert not any(word in result.stderr for word in LOST), result.stderr
    [(stage, _, said)] = failed_logs(where, since=0)
    assert stage == "train" and said == reason
    assert f"Why it failed:\n  train ({log}):\n    {reason}" in failure_text(where, since=0)
    text = log.read_text()
    assert "epoch 0:" in text and "its last lines were cut to make room for the reason" in text


def test_a_log_that_takes_nothing_gives_the_reason_to_the_terminal(tmp_path):
    code = "from mnist_pipeline.workflow.logs import log_to; log_to('/dev/full'); raise ValueError('the reason')"
    result = run_stage(code, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "FAILED: ValueError: the reason"


def test_a_stage_that_fails_with_room_to_spare_logs_the_traceback_and_the_reason(tmp_path):
    log = tmp_path / "prepare.log"
    result = run_stage(f"from mnist_pipeline.workflow.logs import log_to; log_to({str(log)!r}); raise ValueError('the reason')", tmp_path)
    assert result.returncode == 1 and result.stderr == ""
    text = log.read_text()
    assert text.startswith("Traceback") and text.endswith("\nFAILED: ValueError: the reason\n")
