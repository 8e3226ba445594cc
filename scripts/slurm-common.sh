# shellcheck shell=bash
# The part of scripts/slurm-array.sh and scripts/slurm-group.sh that is the same: messages,
# resources from SLURM, the scratch work dir and shared pybids index, the runner (native or
# container) and the logged run. Sourced, not run, with the caller's name for the messages:
# `source slurm-common.sh NAME`. Environment: the BIDS_QSM_* variables of slurm-array.sh.

SLURM_SCRIPT_NAME=$1

die() { printf '%s: ERROR: %s\n' "$SLURM_SCRIPT_NAME" "$*" >&2; exit "${2:-1}"; }
log() { printf '%s [%s] %s\n' "$SLURM_SCRIPT_NAME" "$(date -u +%H:%M:%S)" "$*" >&2; }

# The usage check ($1: the usage line; then the script's arguments) and BIDS_DIR (absolute).
slurm_bids_dir() {
    [[ $# -ge 3 ]] || die "$1" 64
    BIDS_DIR=$(cd "$2" 2>/dev/null && pwd) || die "BIDS_DIR '$2' is not a directory" 66
}

# NPROCS from SLURM_CPUS_PER_TASK (else SLURM_JOB_CPUS_PER_NODE, "4" or "4(x2)", else nproc);
# MEM_MB: 90% of the task's memory (headroom for the Python interpreter and the runtime).
slurm_resources() {
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
}

# The work dir $1 on node-local scratch (removed on success unless BIDS_QSM_KEEP_WORK=1, kept
# and logged on failure) and BIDS_DB, the pybids index shared by all tasks.
slurm_work_dir() {
    WORK_DIR=$1
    mkdir -p "$WORK_DIR" || die "cannot create the work directory $WORK_DIR" 73
    BIDS_DB=${BIDS_QSM_BIDS_DB:-$OUTPUT_DIR/.bids-qsm-bidsdb}
    mkdir -p "$(dirname "$BIDS_DB")"
    trap _slurm_cleanup EXIT
}

# shellcheck disable=SC2317  # invoked by the EXIT trap
_slurm_cleanup() {
    local rc=$?
    if [[ $rc -eq 0 && ${BIDS_QSM_KEEP_WORK:-0} != 1 ]]; then
        rm -rf "$WORK_DIR"
    else
        log "work directory kept: $WORK_DIR (exit code $rc)"
    fi
}

# CMD: bids-qsm with the arguments ARGS, natively or in the BIDS_QSM_IMAGE container (same paths
# inside and outside). "$@": the user's extra arguments (files among them are bound).
slurm_command() {
    local runner=${BIDS_QSM_RUNNER:-auto} binds a
    if [[ $runner == auto ]]; then
        if [[ -n ${BIDS_QSM_IMAGE:-} ]]; then
            if command -v apptainer >/dev/null; then runner=apptainer
            elif command -v singularity >/dev/null; then runner=singularity
            else die "BIDS_QSM_IMAGE is set but neither apptainer nor singularity is on PATH (module load?)"
            fi
        else
            runner=native
        fi
    fi
    case $runner in
        native)
            local bin=${BIDS_QSM_BIN:-bids-qsm}
            command -v "$bin" >/dev/null || die "'$bin' not found on PATH (activate the environment or set BIDS_QSM_BIN / BIDS_QSM_IMAGE)"
            CMD=("$bin" "${ARGS[@]}")
            ;;
        apptainer|singularity)
            [[ -n ${BIDS_QSM_IMAGE:-} ]] || die "BIDS_QSM_RUNNER=$runner needs BIDS_QSM_IMAGE (a .sif file)"
            [[ -e $BIDS_QSM_IMAGE ]] || [[ $BIDS_QSM_IMAGE == *://* ]] || die "image $BIDS_QSM_IMAGE not found" 66
            command -v "$runner" >/dev/null || die "$runner not on PATH"
            # Same paths inside and outside: no path translation in logs, sidecars or the database.
            binds="$BIDS_DIR:$BIDS_DIR:ro,$OUTPUT_DIR,$WORK_DIR"
            if [[ $BIDS_DB != "$OUTPUT_DIR"/* ]]; then binds+=",$(dirname "$BIDS_DB")"; fi
            if [[ -n ${BIDS_QSM_BINDS:-} ]]; then binds+=",$BIDS_QSM_BINDS"; fi
            for a in "$@"; do  # files given as options (config, filters, plugin YAML) must be visible
                if [[ $a == /* && -e $a ]]; then binds+=",$(dirname "$a")"; fi
            done
            CMD=("$runner" run --cleanenv --bind "$binds" "$BIDS_QSM_IMAGE" "${ARGS[@]}")
            ;;
        *) die "unknown BIDS_QSM_RUNNER '$runner' (auto|native|apptainer|singularity)" 64 ;;
    esac
}

# Run CMD, log "$1 finished with exit code N after S s" and exit with its code.
slurm_run() {
    log "running: ${CMD[*]}"
    local start rc=0
    start=$(date +%s)
    "${CMD[@]}" || rc=$?
    log "$1 finished with exit code $rc after $(( $(date +%s) - start )) s"
    exit "$rc"
}
