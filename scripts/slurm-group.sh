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

# The shared part: slurm-common.sh beside this script; under sbatch, which runs a copy of the
# script, beside the script SLURM recorded for the job (first Command= line; BIDS_QSM_SCRIPTS
# overrides both).
here=${BIDS_QSM_SCRIPTS:-$(dirname "${BASH_SOURCE[0]}")}
[[ -f $here/slurm-common.sh || -z ${SLURM_JOB_ID:-} ]] || here=$(dirname "$(scontrol show job "$SLURM_JOB_ID" 2>/dev/null | awk '/^ *Command=/ && !n++ { sub(/^ *Command=/, ""); sub(/ .*/, ""); print }')")
# shellcheck source=slurm-common.sh source-path=SCRIPTDIR
source "$here/slurm-common.sh" slurm-group 2>/dev/null || { echo "slurm-group: ERROR: $here/slurm-common.sh not found (set BIDS_QSM_SCRIPTS)" >&2; exit 66; }

slurm_bids_dir "usage: sbatch [--dependency=afterok:JOBID] $0 BIDS_DIR OUTPUT_DIR [bids-qsm options...]" "$@"
OUTPUT_DIR=$(cd "$2" 2>/dev/null && pwd) || die "OUTPUT_DIR '$2' does not exist: run the participant level first" 66
shift 2

slurm_resources
SCRATCH=${SLURM_TMPDIR:-${TMPDIR:-/tmp}}
slurm_work_dir "$SCRATCH/bids-qsm_group_${SLURM_JOB_ID:-$$}"

ARGS=("$BIDS_DIR" "$OUTPUT_DIR" group -w "$WORK_DIR" --nprocs "$NPROCS" --mem-mb "$MEM_MB"
      --bids-database-dir "$BIDS_DB" "$@")

slurm_command "$@"

log "group level on $(hostname) (nprocs $NPROCS, mem ${MEM_MB} MB)"
slurm_run "group level"
