#!/usr/bin/env bash
# Start or stop a private single-node SLURM cluster on localhost (for tests and local trials).
#
#   scripts/slurm-local.sh start DIR    # writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   scripts/slurm-local.sh stop DIR     # stops exactly the daemons started for DIR (by pid file)
#   scripts/slurm-local.sh status DIR
#
# After `start`, use the cluster with `export SLURM_CONF=DIR/etc/slurm.conf` (sbatch, squeue, ...).
# Everything (config, munge key and socket, state, spool, logs, pid files) lives under DIR, so
# the host's /etc/slurm and /etc/munge are not touched and several clusters never collide.
# Needs root (slurmd runs jobs as the submitting user) and Debian's `slurm-wlm` and `munge`.
# Settings that work in VMs/containers without systemd or cgroup v2 delegation:
# ProctrackType=proctrack/linuxproc, TaskPlugin=task/none, CgroupPlugin=cgroup/v1.
#
# Environment: SLURM_LOCAL_CPUS (default: nproc), SLURM_LOCAL_MEM_MB (default: 80% of RAM),
# SLURM_LOCAL_INSTALL=1 to apt-get install slurm-wlm and munge when missing.
set -euo pipefail

die() { printf 'slurm-local: %s\n' "$*" >&2; exit 1; }
log() { printf 'slurm-local: %s\n' "$*" >&2; }

[[ $# -eq 2 ]] || die "usage: $0 start|stop|status DIR"
ACTION=$1
DIR=$(mkdir -p "$2" && cd "$2" && pwd)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pid_alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_daemon() {  # stop_daemon NAME PIDFILE
    local name=$1 pidfile=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) did not stop after 10 s; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}

do_stop() {
    # slurmd first (it may still be running job steps), then the controller, then munge.
    stop_daemon slurmd "$DIR/run/slurmd.pid"
    stop_daemon slurmctld "$DIR/run/slurmctld.pid"
    stop_daemon munged "$DIR/munge/munged.pid"
    log "stopped the cluster in $DIR"
}

do_status() {
    local name pidfile rc=0
    for name in munged slurmctld slurmd; do
        case $name in
            munged) pidfile=$DIR/munge/munged.pid ;;
            *) pidfile=$DIR/run/$name.pid ;;
        esac
        if pid_alive "$pidfile"; then echo "$name running (pid $(cat "$pidfile"))"; else echo "$name not running"; rc=1; fi
    done
    return $rc
}

ensure_binaries() {
    local missing=() b
    for b in munged slurmctld slurmd sbatch; do
        command -v "$b" >/dev/null || [[ -x /usr/sbin/$b ]] || missing+=("$b")
    done
    ((${#missing[@]} == 0)) && return 0
    if [[ ${SLURM_LOCAL_INSTALL:-0} == 1 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing slurm-wlm and munge with apt-get"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
            -o DPkg::Lock::Timeout=600 slurm-wlm munge >/dev/null
    else
        die "missing ${missing[*]}: apt-get install slurm-wlm munge (or set SLURM_LOCAL_INSTALL=1)"
    fi
}

do_start() {
    [[ $(id -u) -eq 0 ]] || die "needs root (slurmd must be able to run jobs as the submitting user)"
    ensure_binaries
    export PATH="$PATH:/usr/sbin:/sbin"
    if pid_alive "$DIR/run/slurmctld.pid"; then die "a cluster is already running in $DIR"; fi

    local host cpus mem ctld_port slurmd_port
    host=$(hostname -s)
    cpus=${SLURM_LOCAL_CPUS:-$(nproc)}
    mem=${SLURM_LOCAL_MEM_MB:-$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.8 }' /proc/meminfo)}
    ctld_port=$(free_port)
    slurmd_port=$(free_port)
    while [[ $slurmd_port == "$ctld_port" ]]; do slurmd_port=$(free_port); done

    mkdir -p "$DIR"/{etc,munge,state,spool,log,run}
    chmod 0700 "$DIR/munge"
    chmod 0755 "$DIR" "$DIR"/{etc,state,spool,log,run}

    # munge: private key and socket
    if [[ ! -s $DIR/munge/munge.key ]]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 0400 "$DIR/munge/munge.key"
    munged --force \
        --key-file="$DIR/munge/munge.key" \
        --socket="$DIR/munge/munge.socket" \
        --pid-file="$DIR/munge/munged.pid" \
        --log-file="$DIR/munge/munged.log" \
        --seed-file="$DIR/munge/munged.seed" ||
        die "munged failed to start; see $DIR/munge/munged.log"
    # Jobs and clients reach the socket through the directory: open it for traversal only.
    chmod 0711 "$DIR/munge"

    cat >"$DIR/etc/slurm.conf" <<EOF
# Single-node SLURM written by bids-qsm scripts/slurm-local.sh
ClusterName=bidsqsm
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
PropagateResourceLimits=NONE
KillWait=10
MinJobAge=600
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    printf 'CgroupPlugin=cgroup/v1\nConstrainCores=no\nConstrainRAMSpace=no\n' >"$DIR/etc/cgroup.conf"
    export SLURM_CONF=$DIR/etc/slurm.conf

    slurmctld -f "$SLURM_CONF" -i ||
        { tail -20 "$DIR/log/slurmctld.log" >&2 || true; do_stop; die "slurmctld failed to start"; }
    slurmd -f "$SLURM_CONF" -N "$host" ||
        { tail -20 "$DIR/log/slurmd.log" >&2 || true; do_stop; die "slurmd failed to start"; }

    # Wait until the node is idle (registered with the controller)
    for _ in $(seq 1 60); do
        if sinfo -h -N -o '%T' 2>/dev/null | grep -qx 'idle'; then
            log "cluster up in $DIR (node $host, $cpus CPUs, $mem MB); export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.5
    done
    sinfo -N -l >&2 || true
    tail -20 "$DIR/log/slurmctld.log" "$DIR/log/slurmd.log" >&2 || true
    do_stop
    die "the node did not become idle within 30 s"
}

case $ACTION in
    start) do_start ;;
    stop) do_stop ;;
    status) do_status ;;
    *) die "unknown action '$ACTION' (start|stop|status)" ;;
esac
