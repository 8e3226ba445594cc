#!/usr/bin/env bash
#SBATCH --job-name=bids-qsm
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=bids-qsm_%A_%a.log
#
# One bids-qsm participant per SLURM array task (the "map" step of the BIDS App).
#
#   n=$(( $(wc -l < BIDS_DIR/participants.tsv) - 1 ))
#   sbatch --array=1-${n}%20 scripts/slurm-array.sh BIDS_DIR OUTPUT_DIR [bids-qsm options...]
#
# Task i processes the subject on data row i of BIDS_DIR/participants.tsv (1-based, header
# excluded; the `participant_id` column). The #SBATCH values above are defaults: override them on
# the sbatch command line (-c, --mem, --time, -o). Extra arguments go to `bids-qsm` unchanged.
#
# What the script sets for you:
#   --nprocs          from SLURM_CPUS_PER_TASK (the cores SLURM gave the task)
#   --mem-mb          90% of the task's memory (SLURM_MEM_PER_NODE or SLURM_MEM_PER_CPU x cores)
#   -w/--work-dir     on node-local scratch: $SLURM_TMPDIR, else $TMPDIR, else /tmp; removed
#                     when the task succeeds, kept (and its path logged) when it fails
#   --bids-database-dir  one pybids index shared by all tasks (created once, atomically, by
#                     whichever task gets there first)
#
# Environment (all optional):
#   BIDS_QSM_RUNNER   auto (default) | native | apptainer | singularity
#                     auto: a container when BIDS_QSM_IMAGE is set, else `bids-qsm` on PATH
#   BIDS_QSM_IMAGE    Singularity/Apptainer image (.sif), e.g. built from the Docker image
#   BIDS_QSM_BIN      the native executable (default: bids-qsm)
#   BIDS_QSM_BIDS_DB  shared pybids database dir (default: OUTPUT_DIR/.bids-qsm-bidsdb; delete
#                     it when the raw dataset changes)
#   BIDS_QSM_OMP_NTHREADS  threads per process (default: the app's, min(8, nprocs))
#   BIDS_QSM_BINDS    extra comma-separated bind specs for the container (e.g. /scratch)
#   BIDS_QSM_KEEP_WORK=1  keep the work directory even on success
set -euo pipefail

die() { printf 'slurm-array: ERROR: %s\n' "$*" >&2; exit "${2:-1}"; }
log() { printf 'slurm-array [%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

[[ $# -ge 2 ]] || die "usage: sbatch --array=1-N $0 BIDS_DIR OUTPUT_DIR [bids-qsm options...]" 64
BIDS_DIR=$(cd "$1" 2>/dev/null && pwd) || die "BIDS_DIR '$1' is not a directory" 66
mkdir -p "$2" || die "cannot create OUTPUT_DIR '$2'" 73
OUTPUT_DIR=$(cd "$2" && pwd)
shift 2

TASK_ID=${SLURM_ARRAY_TASK_ID:-}
[[ -n $TASK_ID ]] || die "SLURM_ARRAY_TASK_ID is not set: submit with sbatch --array=1-N" 64
[[ $TASK_ID =~ ^[0-9]+$ && $TASK_ID -ge 1 ]] || die "SLURM_ARRAY_TASK_ID must be >= 1 (got '$TASK_ID')" 64

# --------------------------------------------------------------------- subject of this task
TSV=$BIDS_DIR/participants.tsv
[[ -f $TSV ]] || die "$TSV not found (the array index selects a row of participants.tsv)" 66
SUBJECT=$(awk -F'\t' -v row="$TASK_ID" '
    NR == 1 { for (i = 1; i <= NF; i++) { h = $i; sub(/\r$/, "", h); if (h == "participant_id") col = i }
              if (!col) exit 2; next }
    /^[[:space:]]*$/ { next }
    { n++; if (n == row) { v = $col; sub(/\r$/, "", v); print v; exit } }' "$TSV") ||
    die "$TSV has no participant_id column" 65
[[ -n $SUBJECT ]] || die "array task $TASK_ID has no row in $TSV ($(( $(grep -cv '^[[:space:]]*$' "$TSV") - 1 )) subjects)" 65
LABEL=${SUBJECT#sub-}

# --------------------------------------------------------------------- resources from SLURM
NPROCS=${SLURM_CPUS_PER_TASK:-}
if [[ -z $NPROCS ]]; then
    # Without -c, SLURM_JOB_CPUS_PER_NODE looks like "4" or "4(x2)"
    NPROCS=${SLURM_JOB_CPUS_PER_NODE:-$(nproc)}
    NPROCS=${NPROCS%%(*}
    NPROCS=${NPROCS%%,*}
fi
if [[ -n ${SLURM_MEM_PER_NODE:-} ]]; then
    MEM_MB=$SLURM_MEM_PER_NODE
elif [[ -n ${SLURM_MEM_PER_CPU:-} ]]; then
    MEM_MB=$(( SLURM_MEM_PER_CPU * NPROCS ))
else
    MEM_MB=$(awk '/MemAvailable/ { printf "%d", $2 / 1024 }' /proc/meminfo)
fi
MEM_MB=$(( MEM_MB * 9 / 10 ))  # headroom for the Python interpreter and the runtime

# --------------------------------------------------------------------- scratch and shared index
SCRATCH=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}
JOB_TAG=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-$$}}_${TASK_ID}
WORK_DIR=$SCRATCH/bids-qsm_${JOB_TAG}_sub-${LABEL}
mkdir -p "$WORK_DIR" || die "cannot create the work directory $WORK_DIR" 73
BIDS_DB=${BIDS_QSM_BIDS_DB:-$OUTPUT_DIR/.bids-qsm-bidsdb}
mkdir -p "$(dirname "$BIDS_DB")"

# shellcheck disable=SC2317  # invoked by the EXIT trap
cleanup() {
    local rc=$?
    if [[ $rc -eq 0 && ${BIDS_QSM_KEEP_WORK:-0} != 1 ]]; then
        rm -rf "$WORK_DIR"
    else
        log "work directory kept: $WORK_DIR (exit code $rc)"
    fi
}
trap cleanup EXIT

ARGS=("$BIDS_DIR" "$OUTPUT_DIR" participant
      --participant-label "$LABEL"
      -w "$WORK_DIR"
      --nprocs "$NPROCS"
      --mem-mb "$MEM_MB"
      --bids-database-dir "$BIDS_DB")
if [[ -n ${BIDS_QSM_OMP_NTHREADS:-} ]]; then ARGS+=(--omp-nthreads "$BIDS_QSM_OMP_NTHREADS"); fi
ARGS+=("$@")

# --------------------------------------------------------------------- runner
RUNNER=${BIDS_QSM_RUNNER:-auto}
if [[ $RUNNER == auto ]]; then
    if [[ -n ${BIDS_QSM_IMAGE:-} ]]; then
        if command -v apptainer >/dev/null; then RUNNER=apptainer
        elif command -v singularity >/dev/null; then RUNNER=singularity
        else die "BIDS_QSM_IMAGE is set but neither apptainer nor singularity is on PATH (module load?)"
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
        [[ -e $BIDS_QSM_IMAGE ]] || [[ $BIDS_QSM_IMAGE == *://* ]] || die "image $BIDS_QSM_IMAGE not found" 66
        command -v "$RUNNER" >/dev/null || die "$RUNNER not on PATH"
        # Same paths inside and outside: no path translation in logs, sidecars or the database.
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

log "task $TASK_ID -> sub-$LABEL on $(hostname) (nprocs $NPROCS, mem ${MEM_MB} MB, work $WORK_DIR)"
log "running: ${CMD[*]}"
start=$(date +%s)
rc=0
"${CMD[@]}" || rc=$?
log "sub-$LABEL finished with exit code $rc after $(( $(date +%s) - start )) s"
exit "$rc"
