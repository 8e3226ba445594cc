"""Entry point of ``bids-qsm``: parse, check folders, validate, discover, check, dispatch.

Every failure the user can fix ends with one line on stderr, ``bids-qsm: error: <file>:
<problem>``, and the documented exit code (see :class:`bids_qsm.errors.ExitCode`); the Python
traceback goes to the run's log file (and to the terminal with ``-vv``).
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bids_qsm import __version__
from bids_qsm.config import ANALYSIS_LEVELS, Config
from bids_qsm.errors import (
    BidsQsmError,
    BidsValidationError,
    ExitCode,
    InputDataError,
    InputMissingError,
    NoDataError,
    OutputError,
    UnknownLevelError,
    UsageError,
)
from bids_qsm.logging_setup import (
    add_log_dir,
    log_files,
    release_buffer,
    setup_logging,
    stage,
    teardown_logging,
)

LOGGER = logging.getLogger("bids_qsm.cli")
CONFIG_FILENAME = "bids_qsm.toml"


def _prescan_verbosity(argv: Sequence[str]) -> int:
    """Count -v flags before parsing, so that parse errors already log at the right level."""
    count = 0
    for arg in argv:
        if arg == "--verbose":
            count += 1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) == {"v"}:
            count += len(arg) - 1
    return count


def _is_relative_to(path: Path, other: Path) -> bool:
    try:
        path.relative_to(other)
    except ValueError:
        return False
    return True


def prepare_directories(config: Config) -> bool:
    """Check BIDS_DIR (66), create OUTPUT_DIR and the work dir (73); work dir in BIDS_DIR -> 64.

    Returns True when the work dir is a temporary folder created here (to remove at the end).
    """
    ex = config.execution
    assert ex.bids_dir is not None and ex.output_dir is not None
    if not ex.bids_dir.is_dir():
        what = "is not a folder" if ex.bids_dir.exists() else "not found"
        raise InputMissingError(f"BIDS_DIR {what}", ex.bids_dir)
    bids_dir = ex.bids_dir.resolve()
    ex.bids_dir = bids_dir
    output_dir = ex.output_dir.expanduser().absolute()
    if output_dir.resolve() == bids_dir:
        raise UsageError(
            "OUTPUT_DIR must differ from BIDS_DIR (e.g. BIDS_DIR/derivatives/bids-qsm)"
        )
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create OUTPUT_DIR: {exc.strerror or exc}", output_dir) from exc
    if not output_dir.is_dir() or not _writable(output_dir):
        raise OutputError("OUTPUT_DIR is not a writable folder", output_dir)
    ex.output_dir = output_dir.resolve()

    temporary = False
    if ex.work_dir is None:
        ex.work_dir = Path(tempfile.mkdtemp(prefix="bids_qsm_work_"))
        temporary = True
    else:
        work_dir = ex.work_dir.expanduser().absolute()
        resolved = work_dir.resolve()
        if _is_relative_to(resolved, bids_dir):
            raise UsageError(
                "the work dir must not be inside BIDS_DIR (it would pollute the dataset)", work_dir
            )
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create work dir: {exc.strerror or exc}", work_dir) from exc
        if not _writable(work_dir):
            raise OutputError("work dir is not writable", work_dir)
        ex.work_dir = work_dir.resolve()
    return temporary


def remove_stale_temporaries(config: Config) -> int:
    """Delete the temporary files an interrupted run left in OUTPUT_DIR (logged)."""
    from bids_qsm.bids.derivatives import clean_stale_temporaries

    assert config.execution.output_dir is not None
    n = clean_stale_temporaries(config.execution.output_dir)
    if n:
        LOGGER.info("Removed %d temporary file(s) left by an interrupted run", n)
    return n


def _writable(folder: Path) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def setup_run_logs(config: Config, owners: Sequence[str]) -> list[Path]:
    """Create ``OUTPUT_DIR/<owner>/log/<run-id>/`` for each owner, log there, save the config.

    ``owners`` are ``sub-<label>`` folder names, or ``["group"]``.
    """
    ex = config.execution
    assert ex.output_dir is not None
    dirs = [ex.output_dir / owner / "log" / ex.run_id for owner in owners]
    for log_dir in dirs:
        try:
            log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create log folder: {exc.strerror or exc}", log_dir) from exc
    ex.log_dirs = dirs
    for log_dir in dirs:
        add_log_dir(log_dir)
        config.save(log_dir / CONFIG_FILENAME)
    release_buffer()
    return dirs


def run_participant(config: Config) -> int:
    """The participant level up to the workflow: validate, discover, check, then dispatch."""
    from bids_qsm.bids.checks import check_acquisition, check_json_file, check_json_files
    from bids_qsm.bids.discovery import discover, get_layout, selected_subjects
    from bids_qsm.bids.writers import (
        check_output_folders,
        update_bidsignore,
        write_dataset_description,
    )

    ex = config.execution
    assert ex.bids_dir is not None and ex.output_dir is not None
    if not (ex.bids_dir / "dataset_description.json").is_file():
        raise BidsValidationError(
            "not a BIDS dataset: dataset_description.json is missing", ex.bids_dir
        )
    subjects = selected_subjects(ex.bids_dir, ex.participant_label)
    if not subjects:
        if ex.participant_label:
            labels = " ".join(f"sub-{s}" for s in ex.participant_label)
            raise NoDataError(
                f"no subject folder matches --participant-label {labels}", ex.bids_dir
            )
        raise NoDataError("no sub-* folders in BIDS_DIR", ex.bids_dir)
    setup_run_logs(config, [f"sub-{s}" for s in subjects])
    check_output_folders(ex.output_dir, subjects)
    check_json_files(ex.bids_dir, subjects)
    LOGGER.info(
        "bids-qsm %s, participant level, run %s: %d subject(s) (%s)",
        __version__,
        ex.run_id,
        len(subjects),
        " ".join(subjects) if len(subjects) <= 10 else f"{subjects[0]} ... {subjects[-1]}",
    )
    write_dataset_description(ex.output_dir, ex.bids_dir)
    update_bidsignore(ex.output_dir)

    light = ex.reports_only or ex.boilerplate_only
    if ex.skip_bids_validation or light:
        LOGGER.info("Skipping BIDS validation")
    else:
        from bids_qsm.bids.validation import validate_bids

        with stage(f"Validating BIDS_DIR ({len(subjects)} subject(s))", LOGGER):
            validate_bids(
                ex.bids_dir,
                subjects,
                report_dir=ex.log_dirs[0],
                exclude=(ex.output_dir, ex.work_dir, ex.bids_database_dir),
            )

    with stage("Discovering GRE acquisitions", LOGGER):
        try:
            layout = get_layout(
                ex.bids_dir,
                ex.bids_database_dir,
                exclude=(ex.output_dir, ex.work_dir, ex.bids_database_dir),
            )
        except BidsQsmError:
            raise
        except Exception as exc:
            if exc.__class__.__name__ == "BIDSValidationError":  # pybids' own
                raise BidsValidationError(str(exc), ex.bids_dir) from exc
            bad = re.search(r"filename='([^']+)'", str(exc))
            if bad:  # e.g. the JSON sidecar of a subject not selected
                if bad[1].endswith(".json"):
                    check_json_file(Path(bad[1]))
                what = f"unreadable by pybids ({type(exc).__name__})"
                raise InputDataError(what, bad[1]) from exc
            raise
        acquisitions = discover(config, layout)
    if not light:
        with stage(f"Checking {len(acquisitions)} acquisition(s)", LOGGER):
            for acq in acquisitions:
                check_acquisition(acq)

    from bids_qsm.workflows.participant import run_participant_level

    return int(run_participant_level(config, acquisitions))


def run_group(config: Config) -> int:
    """The group level: set up its log folder, then dispatch to the group workflow."""
    setup_run_logs(config, ["group"])
    LOGGER.info("bids-qsm %s, group level, run %s", __version__, config.execution.run_id)
    from bids_qsm.workflows.group import run_group_level

    return int(run_group_level(config))


def execute(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code (``main`` exits with it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    verbosity = _prescan_verbosity(argv)
    setup_logging(verbosity)
    start = time.monotonic()
    temporary_work: Path | None = None
    try:
        from bids_qsm.cli.parser import parse_args

        config = parse_args(argv)
        level = config.execution.analysis_level
        if level not in ANALYSIS_LEVELS:
            raise UnknownLevelError(
                f"unknown analysis level {level!r} (expected 'participant' or 'group')"
            )
        if prepare_directories(config):
            temporary_work = config.execution.work_dir
        remove_stale_temporaries(config)
        code = run_participant(config) if level == "participant" else run_group(config)
        LOGGER.info(
            "bids-qsm finished (exit %d) in %.1f s%s",
            code,
            time.monotonic() - start,
            f"; log: {log_files()[0]}" if log_files() else "",
        )
        return code
    except BidsQsmError as exc:
        LOGGER.debug("Error details", exc_info=True)
        _report(str(exc))
        return int(exc.exit_code)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except KeyboardInterrupt:
        LOGGER.debug("Interrupted", exc_info=True)
        _report("interrupted")
        return 130
    except Exception as exc:
        LOGGER.debug("Unexpected failure", exc_info=True)
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        if len(detail) > 300:
            detail = detail[:297] + "..."
        where = (
            f" (traceback in {log_files()[0]})" if log_files() else " (run with -vv for details)"
        )
        _report(f"{detail}{where}")
        return int(ExitCode.FAILURE)
    finally:
        if temporary_work is not None:
            shutil.rmtree(temporary_work, ignore_errors=True)
        teardown_logging()


def _report(message: str) -> None:
    """The one error line on stderr (also in the log files)."""
    LOGGER.debug("error: %s", message)
    for handler in logging.getLogger("bids_qsm").handlers:
        handler.flush()
    print(f"bids-qsm: error: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: run and exit with the documented code."""
    sys.exit(execute(argv))


if __name__ == "__main__":
    main()
