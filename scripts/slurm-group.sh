#!/usr/bin/env bash
#SBATCH --job-name=bids-qsm-group
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=02:00:00
#SBATCH --output=bids-qsm-group_%j.log
#
# The group ("reduce") step of bids-qsm, run after every participant task has succeeded:
#
#   array=$(sbatch --parsable --array=1-N scripts/slurm-array.sh BIDS_DIR OUTPUT_DIR)
#   sbatch --dependency=afterok:${array} scripts/slurm-group.sh BIDS_DIR OUTPUT_DIR [options...]
#
# `afterok` on an array job id waits for all of its tasks and starts only if all exited 0; if one
# fails the group job stays pending with reason DependencyNeverSatisfied (cancel it, fix, re-run
# the failed tasks with --array=<ids>, then resubmit this job).
# Runner, image, database and scratch settings: the same BIDS_QSM_* variables as slurm-array.sh.
set -euo pipefail

die() { printf 'slurm-group: ERROR: %s\n' "$*" >&2; exit "${2:-1}"; }
log() { printf 'slurm-group [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[[ $# -ge 2 ]] || die "usage: sbatch [--dependency=afterok:JOBID] $0 BIDS_DIR OUTPUT_DIR [bids-qsm options...]" 64
BIDS_DIR=$(cd "$1" 2>/dev/null && pwd) || die "BIDS_DIR '$1' is not a directory" 66
OUTPUT_DIR=$(cd "$2" 2>/dev/null && pwd) || die "OUTPUT_DIR '$2' does not exist: run the participant level first" 66
shift 2

NPROCS=${SLURM_CPUS_PER_TASK:-${SLURM_JOB_CPUS_PER_NODE:-$(nproc)}}
NPROCS=${NPROCS%%(*}
NPROCS=${NPROCS%%,*}
if [[ -n ${SLURM_MEM_PER_NODE:-} ]]; then
    MEM_MB=$SLURM_MEM_PER_NODE
elif [[ -n ${SLURM_MEM_PER_CPU:-} ]]; then
    MEM_MB=$(( SLURM_MEM_PER_CPU * NPROCS ))
else
    MEM_MB=$(awk '/MemAvailable/ { printf "%d", $2 / 1024 }' /proc/meminfo)
fi
MEM_MB=$(( MEM_MB * 9 / 10 ))

SCRATCH=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}
WORK_DIR=$SCRATCH/bids-qsm_group_${SLURM_JOB_ID:-$$}
mkdir -p "$WORK_DIR" || die "cannot create the work directory $WORK_DIR" 73
BIDS_DB=${BIDS_QSM_BIDS_DB:-$OUTPUT_DIR/.bids-qsm-bidsdb}
# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    if [[ $rc -eq 0 && ${BIDS_QSM_KEEP_WORK:-0} != 1 ]]; then rm -rf "$WORK_DIR"
    else log "work directory kept: $WORK_DIR (exit code $rc)"; fi
}
trap cleanup EXIT

ARGS=("$BIDS_DIR" "$OUTPUT_DIR" group -w "$WORK_DIR" --nprocs "$NPROCS" --mem-mb "$MEM_MB"
      --bids-database-dir "$BIDS_DB" "$@")

RUNNER=${BIDS_QSM_RUNNER:-auto}
if [[ $RUNNER == auto ]]; then
    if [[ -n ${BIDS_QSM_IMAGE:-} ]]; then
        if command -v apptainer >/dev/null; then RUNNER=apptainer
        elif command -v singularity >/dev/null; then RUNNER=singularity
        else die "BIDS_QSM_IMAGE is set but neither apptainer nor singularity is on PATH"
        fi
    else
        RUNNER=native
    fi
fi
case $RUNNER in
    native)
        BIN=${BIDS_QSM_BIN:-bids-qsm}
        command -v "$BIN" >/dev/null || die "'$BIN' not found on PATH (activate the environment or set BIDS_QSM_BIN / BIDS_QSM_IMAGE)"
        CMD=("$BIN" "${ARGS[@]}")
        ;;
    apptainer|singularity)
        [[ -n ${BIDS_QSM_IMAGE:-} ]] || die "BIDS_QSM_RUNNER=$RUNNER needs BIDS_QSM_IMAGE (a .sif file)"
        command -v "$RUNNER" >/dev/null || die "$RUNNER not on PATH"
        BINDS="$BIDS_DIR:$BIDS_DIR:ro,$OUTPUT_DIR,$WORK_DIR"
        if [[ $BIDS_DB != "$OUTPUT_DIR"/* ]]; then BINDS+=",$(dirname "$BIDS_DB")"; fi
        if [[ -n ${BIDS_QSM_BINDS:-} ]]; then BINDS+=",$BIDS_QSM_BINDS"; fi
        for a in "$@"; do  # files given as options (config, filters, plugin YAML) must be visible
            if [[ $a == /* && -e $a ]]; then BINDS+=",$(dirname "$a")"; fi
        done
        CMD=("$RUNNER" run --cleanenv --bind "$BINDS" "$BIDS_QSM_IMAGE" "${ARGS[@]}")
        ;;
    *) die "unknown BIDS_QSM_RUNNER '$RUNNER' (auto|native|apptainer|singularity)" 64 ;;
esac

log "group level on $(hostname) (nprocs $NPROCS, mem ${MEM_MB} MB)"
log "running: ${CMD[*]}"
start=$(date +%s)
rc=0
"${CMD[@]}" || rc=$?
log "group level finished with exit code $rc after $(( $(date +%s) - start )) s"
exit "$rc"
