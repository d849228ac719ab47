"""One Snakemake run for the app, detached from it: `python -m mnist_pipeline.app.runner SPEC`.

The app starts this in a session of its own, so the run outlives a Streamlit rerun, a closed
tab or the app itself. It holds an exclusive lock on STATE/run.lock for as long as Snakemake
runs (one app run at a time per results directory; the kernel drops the lock if this process
dies, however it dies), records the run in STATE/run.json and Snakemake's output in
STATE/run.log. Stopping is SIGINT to the whole process group, as Ctrl-C in a terminal: Snakemake
and its jobs stop and the next run, with --rerun-incomplete, continues from there.

SPEC is JSON: {"id", "experiment", "state_dir", "workdir", "command"} (command: argv list), and
"lock_fd" when the app took the lock itself and hands it over: the app writes experiments.yaml
and starts this run under one lock, so that no other tab can write or start in between.
Exit status: Snakemake's, or BUSY when another run holds the lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mnist_pipeline.fileio import write_json

BUSY = 75  # EX_TEMPFAIL: try again later
#: the lock file in the state directory that a runner holds while Snakemake runs
LOCK = "run.lock"
# After Stop, how long Snakemake gets to clean up after SIGINT before SIGTERM, then SIGKILL.
GRACE_SECONDS = (60.0, 30.0)


def hold_lock(path: Path):
    """The open lock file, locked; None when another process holds it."""
    handle = open(path, "a")  # noqa: SIM115 - held until this process exits
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def wait_for(child: subprocess.Popen, stop_requested: list) -> int:
    """Snakemake's exit status; once Stop was asked for, escalate if it does not end in time."""
    escalation = [signal.SIGTERM, signal.SIGKILL]
    deadline = None
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        if stop_requested and deadline is None:
            deadline = time.monotonic() + GRACE_SECONDS[0]
        if deadline is not None and time.monotonic() > deadline and escalation:
            child.send_signal(escalation.pop(0))
            deadline = time.monotonic() + GRACE_SECONDS[1]


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    state = Path(spec["state_dir"])
    state.mkdir(parents=True, exist_ok=True)
    # An inherited descriptor shares the app's open lock: held already, as long as this lives.
    lock = os.fdopen(spec["lock_fd"], "a") if "lock_fd" in spec else hold_lock(state / LOCK)
    if lock is None:
        print("another run holds the lock", file=sys.stderr)
        return BUSY
    stop_requested: list[int] = []
    # A handler, not SIG_IGN: an ignored signal would stay ignored in Snakemake after exec.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, frame: stop_requested.append(number))
    record = {**spec, "pid": os.getpid(), "started": time.time(), "state": "running"}
    write_json(state / "run.json", record)
    with open(state / "run.log", "w", encoding="utf-8") as output:
        child = subprocess.Popen(spec["command"], cwd=spec["workdir"], stdin=subprocess.DEVNULL, stdout=output,
                                 stderr=subprocess.STDOUT)
        returncode = wait_for(child, stop_requested)
    outcome = "stopped" if stop_requested else "done" if returncode == 0 else "failed"
    record.update(state=outcome, returncode=returncode, finished=time.time())
    write_json(state / "run.json", record)
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
