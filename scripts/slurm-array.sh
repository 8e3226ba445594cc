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

# The shared part: slurm-common.sh beside this script; under sbatch, which runs a copy of the
# script, beside the script SLURM recorded for the job (first Command= line; BIDS_QSM_SCRIPTS
# overrides both).
here=${BIDS_QSM_SCRIPTS:-$(dirname "${BASH_SOURCE[0]}")}
[[ -f $here/slurm-common.sh || -z ${SLURM_JOB_ID:-} ]] || here=$(dirname "$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | awk '/^ *Command=/ && !n++ { sub(/^ *Command=/, ""); sub(/ .*/, ""); print }')")
# shellcheck source=slurm-common.sh source-path=SCRIPTDIR
source "$here/slurm-common.sh" slurm-array 2>/dev/null || { echo "slurm-array: ERROR: $here/slurm-common.sh not found (set BIDS_QSM_SCRIPTS)" >&2; exit 66; }

slurm_bids_dir "usage: sbatch --array=1-N $0 BIDS_DIR OUTPUT_DIR [bids-qsm options...]" "$@"
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
slurm_resources

# --------------------------------------------------------------------- scratch and shared index
SCRATCH=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}
JOB_TAG=${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:-$$}}_${TASK_ID}
slurm_work_dir "$SCRATCH/bids-qsm_${JOB_TAG}_sub-${LABEL}"

ARGS=("$BIDS_DIR" "$OUTPUT_DIR" participant
      --participant-label "$LABEL"
      -w "$WORK_DIR"
      --nprocs "$NPROCS"
      --mem-mb "$MEM_MB"
      --bids-database-dir "$BIDS_DB")
if [[ -n ${BIDS_QSM_OMP_NTHREADS:-} ]]; then ARGS+=(--omp-nthreads "$BIDS_QSM_OMP_NTHREADS"); fi
ARGS+=("$@")

# --------------------------------------------------------------------- runner
slurm_command "$@"

log "task $TASK_ID -> sub-$LABEL on $(hostname) (nprocs $NPROCS, mem ${MEM_MB} MB, work $WORK_DIR)"
slurm_run "sub-$LABEL"
