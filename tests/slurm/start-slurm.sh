#!/usr/bin/env bash
# A single-node SLURM cluster on 127.0.0.1 (munged, slurmctld, slurmd) for the `cluster`
# tests, its state, logs and generated slurm.conf kept in one directory.
#
#   tests/slurm/start-slurm.sh start    start it, or reuse the one already running (idempotent)
#   tests/slurm/start-slurm.sh status   exit 0 when it is up and its node accepts jobs
#   tests/slurm/start-slurm.sh stop     cancel its jobs and stop the daemons this script started
#
# `start` prints `export SLURM_CONF=...` as its last line; while slurmd runs, the SLURM
# commands on this machine also find the config without it, through /run/slurm/conf.
#   eval "$(tests/slurm/start-slurm.sh start)" && srun hostname
#
# Environment: MNIST_SLURM_DIR (state, logs, slurm.conf; default /tmp/mnist-pipeline-slurm),
# MNIST_SLURM_TIMEOUT (seconds any one wait may take; default 60), MNIST_SLURM_MEM_MARGIN_MB
# (memory kept back from the node for the OS; default 1024), MNIST_SLURMCTLD_PORT and
# MNIST_SLURMD_PORT (default 6817 and 6818).
# Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge).
# Exit status: 0 up, 1 failed to start or stop, 3 prerequisites missing (not root, not installed,
# or another SLURM set up on this machine).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STATE_DIR="${MNIST_SLURM_DIR:-/tmp/mnist-pipeline-slurm}"
TIMEOUT="${MNIST_SLURM_TIMEOUT:-60}"
MEM_MARGIN_MB="${MNIST_SLURM_MEM_MARGIN_MB:-1024}"
CTLD_PORT="${MNIST_SLURMCTLD_PORT:-6817}"
SLURMD_PORT="${MNIST_SLURMD_PORT:-6818}"
export SLURM_CONF="$STATE_DIR/slurm.conf"
NODE="$(hostname -s)"
# Where configless slurmd publishes the config it fetched (SLURM 22.05 and later).
CONF_LINK=/run/slurm/conf

log() { echo "start-slurm: $*" >&2; }
die() { log "$*"; exit 1; }
# Dies with the end of a daemon's log, so the reason shows where the failure is reported.
die_see() {
    local logfile="$1"
    shift
    log "$*; the end of $logfile:"
    tail -n 15 "$logfile" >&2 2>/dev/null || true
    exit 1
}

# Waits up to $TIMEOUT seconds for the command to succeed; the command is quiet.
wait_for() {
    local what="$1"
    shift
    local deadline=$((SECONDS + TIMEOUT))
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "timed out after ${TIMEOUT}s waiting for $what"
            return 1
        fi
        sleep 0.5
    done
}

# The pid in a pid file, if that process is alive and is the named program (pids get reused).
live_pid() {
    local pidfile="$1" program="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(<"$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] && [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$program" || return 1
    echo "$pid"
}

check_prerequisites() {
    local missing=()
    for program in munged mungekey munge unmunge slurmctld slurmd scontrol sinfo squeue sbatch srun scancel; do
        command -v "$program" >/dev/null 2>&1 || missing+=("$program")
    done
    if ((${#missing[@]})); then
        log "not installed: ${missing[*]} (apt-get install slurm-wlm munge)"
        exit 3
    fi
    if ((EUID != 0)); then
        log "must run as root: slurmd starts jobs as their owner, and the daemons here run as root"
        exit 3
    fi
    # Jobs' own SLURM commands read /etc/slurm/slurm.conf before /run/slurm/conf: a machine
    # with a SLURM of its own would send them to that cluster.
    if [[ -e /etc/slurm/slurm.conf ]]; then
        log "/etc/slurm/slurm.conf exists: this machine has a SLURM of its own; not starting a second one"
        exit 3
    fi
}

munge_works() { munge -n | unmunge; }

node_ready() {
    local state
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null)"
    [[ "$state" =~ ^(idle|mixed|allocated|completing)$ ]]
}

status() {
    munge_works >/dev/null 2>&1 &&
        live_pid "$STATE_DIR/run/slurmctld.pid" slurmctld >/dev/null &&
        live_pid "$STATE_DIR/run/slurmd.pid" slurmd >/dev/null &&
        scontrol ping 2>/dev/null | grep -q UP &&
        node_ready
}

write_config() {
    local cpus total_mb real_mb
    cpus="$(nproc)"
    total_mb="$(free -m | awk '/^Mem:/ {print $2}')"
    # slurmd drains a node whose configured RealMemory exceeds what it finds, so keep a margin.
    real_mb=$((total_mb - MEM_MARGIN_MB))
    ((real_mb >= 1024)) || die "only ${total_mb} MB of memory; need at least $((1024 + MEM_MARGIN_MB))"
    sed -e "s|@HOSTNAME@|$NODE|g" -e "s|@STATE_DIR@|$STATE_DIR|g" -e "s|@CPUS@|$cpus|g" \
        -e "s|@REAL_MEMORY@|$real_mb|g" -e "s|@SLURMCTLD_PORT@|$CTLD_PORT|g" \
        -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$HERE/slurm.conf.in" >"$SLURM_CONF"
    log "node $NODE: CPUs=$cpus RealMemory=${real_mb} MB (config $SLURM_CONF)"
}

start_munged() {
    # A munged already answering (the system's) serves us as well; it is not ours to stop.
    if munge_works >/dev/null 2>&1; then
        log "using the munged already running"
        return 0
    fi
    # A fresh key: this munged serves only this cluster, so nothing else needs the key.
    mungekey --create --force --keyfile="$STATE_DIR/munge/munge.key"
    chmod 0600 "$STATE_DIR/munge/munge.key"
    mkdir -p /run/munge
    # --force: munged refuses root by default, and root is who runs this throwaway cluster.
    munged --force --key-file="$STATE_DIR/munge/munge.key" \
        --pid-file="$STATE_DIR/run/munged.pid" --log-file="$STATE_DIR/log/munged.log" \
        --seed-file="$STATE_DIR/munge/munged.seed" ||
        die_see "$STATE_DIR/log/munged.log" "munged did not start"
    wait_for "munged to answer" munge_works || die_see "$STATE_DIR/log/munged.log" "munged is not answering"
}

start() {
    check_prerequisites
    if status; then
        log "reusing the running cluster in $STATE_DIR"
        echo "export SLURM_CONF=$SLURM_CONF"
        return 0
    fi
    # Half-started leftovers (say slurmd died) are stopped so the start below is clean, and
    # whatever this start gets going is stopped again if it fails.
    stop_daemons
    trap 'stop_daemons' EXIT
    mkdir -p "$STATE_DIR"/{munge,run,log,ctld,spool}
    chmod 0700 "$STATE_DIR/munge"
    # Fresh logs, so the job ids a test finds there belong to this cluster's life only.
    rm -f "$STATE_DIR"/log/*.log
    write_config
    start_munged
    # -c: forget jobs and node states from an earlier life of this directory.
    slurmctld -c -f "$SLURM_CONF" || die_see "$STATE_DIR/log/slurmctld.log" "slurmctld did not start"
    wait_for "slurmctld to answer scontrol ping" bash -c 'scontrol ping | grep -q UP' ||
        die_see "$STATE_DIR/log/slurmctld.log" "slurmctld is not answering"
    slurmd --conf-server "127.0.0.1:$CTLD_PORT" || die_see "$STATE_DIR/log/slurmd.log" "slurmd did not start"
    if ! wait_for "node $NODE to become idle" node_ready; then
        # A node remembered as down comes back only when told to.
        scontrol update NodeName="$NODE" State=RESUME >/dev/null 2>&1 || true
        wait_for "node $NODE to become idle after resume" node_ready ||
            die_see "$STATE_DIR/log/slurmd.log" "node $NODE is $(sinfo -h -n "$NODE" -o '%T %E')"
    fi
    trap - EXIT
    log "up: $(sinfo -h -N -o '%N %T CPUs=%c Memory=%m')"
    echo "export SLURM_CONF=$SLURM_CONF"
}

# Sends TERM to the daemon in the pid file and waits for it to exit; KILL after the timeout.
stop_daemon() {
    local pidfile="$1" program="$2" pid deadline
    pid="$(live_pid "$pidfile" "$program")" || return 0
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if ((SECONDS >= deadline)); then
            log "$program ($pid) ignored TERM for ${TIMEOUT}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    rm -f "$pidfile"
}

stop_daemons() {
    stop_daemon "$STATE_DIR/run/slurmd.pid" slurmd
    stop_daemon "$STATE_DIR/run/slurmctld.pid" slurmctld
    stop_daemon "$STATE_DIR/run/munged.pid" munged
    # slurmd leaves its config link behind; a stale one would point later clients at nothing.
    if [[ -L "$CONF_LINK" && "$(readlink "$CONF_LINK")" == "$STATE_DIR"/* ]]; then
        rm -f "$CONF_LINK"
        rmdir "$(dirname "$CONF_LINK")" 2>/dev/null || true
    fi
}

no_jobs_left() { [[ -z "$(squeue -h -o %i 2>/dev/null)" ]]; }

stop() {
    if live_pid "$STATE_DIR/run/slurmctld.pid" slurmctld >/dev/null; then
        # Cancelled through slurmctld while slurmd still runs, so each job's processes are reaped.
        local jobs
        jobs="$(squeue -h -o %i 2>/dev/null || true)"
        if [[ -n "$jobs" ]]; then
            # shellcheck disable=SC2086  # one argument per job id
            scancel $jobs || true
            wait_for "cancelled jobs to end" no_jobs_left || log "jobs still listed: $(squeue -h -o '%i %T' | tr '\n' ' ')"
        fi
    fi
    stop_daemons
    log "stopped the cluster in $STATE_DIR"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status || exit 1 ;;
    *)
        echo "usage: $0 [start|stop|status]" >&2
        exit 2
        ;;
esac
