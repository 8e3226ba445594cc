"""Logging: concise progress on the terminal, full detail in each run's log folder.

* Terminal (stderr): INFO and above, one line each with the elapsed time, e.g.
  ``[bids-qsm +00:12] Discovering GRE acquisitions``. ``-v`` adds DEBUG messages; ``-vv`` also
  shows Python tracebacks (they are otherwise only written to the log files).
* Log folders (``OUTPUT_DIR/sub-<label>/log/<run-id>/bids_qsm.log``): DEBUG, with timestamps,
  logger names and full tracebacks. Records emitted before the folders are known are buffered
  and replayed into them by :func:`add_log_dir`.

Use :func:`stage` around each processing stage to log its start, end and duration; a
:func:`heartbeat` thread logs "still running" every :data:`HEARTBEAT_S` seconds while it runs,
so that long silent steps (ANTs registration, permutations) never leave the terminal quiet.

A subject's log file (``OUTPUT_DIR/sub-<label>/log/...``) only receives the run-wide lines and
the lines about that subject: a record whose message names other subjects (``sub-<label>``)
and not this one is left out (:class:`OwnerFilter`).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Name of the package logger; modules use ``logging.getLogger(__name__)`` below it.
LOGGER_NAME = "bids_qsm"
LOG_FILENAME = "bids_qsm.log"

_START = time.monotonic()
_BUFFER_CAPACITY = 100_000
#: Seconds between two "still running" lines of :func:`heartbeat`.
HEARTBEAT_S = 15.0
_SUBJECT_RE = re.compile(r"(?<![A-Za-z0-9])sub-([A-Za-z0-9]+)")


class OwnerFilter(logging.Filter):
    """Keep a record for subject ``label``'s log unless it names only other subjects."""

    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            named = set(_SUBJECT_RE.findall(record.getMessage()))
        except Exception:  # a malformed record: keep it
            return True
        return not named or self.label in named


def _owner_label(log_dir: Path) -> str | None:
    """``01`` for ``.../sub-01/log/<run-id>``; None for the group or other folders."""
    parts = Path(log_dir).parts
    if len(parts) >= 3 and parts[-2] == "log" and parts[-3].startswith("sub-"):
        return parts[-3][4:]
    return None


class _ElapsedFormatter(logging.Formatter):
    """Terminal formatter: ``[bids-qsm +MM:SS] message``; tracebacks only when asked."""

    def __init__(self, show_tracebacks: bool, first_line_only: bool = False) -> None:
        super().__init__()
        self.show_tracebacks = show_tracebacks
        #: Nipype puts whole tracebacks in its messages: keep their first line only.
        self.first_line_only = first_line_only

    def format(self, record: logging.LogRecord) -> str:
        elapsed = int(time.monotonic() - _START)
        hours, rest = divmod(elapsed, 3600)
        minutes, seconds = divmod(rest, 60)
        stamp = f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
        level = "" if record.levelno == logging.INFO else f"{record.levelname}: "
        message = record.getMessage()
        if self.first_line_only:
            lines = [ln for ln in message.splitlines() if ln.strip()]
            message = lines[0] if lines else ""
        text = f"[bids-qsm +{stamp}] {level}{message}"
        if self.show_tracebacks and record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _BufferHandler(logging.Handler):
    """Keeps records until the log folders are known."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.records) < _BUFFER_CAPACITY:
            self.records.append(record)


_FILE_FORMAT = logging.Formatter(
    "%(asctime)s %(levelname)-8s %(name)s: %(message)s", datefmt="%Y-%m-%dT%H:%M:%S"
)
_NIPYPE_LOGGERS = ("nipype.workflow", "nipype.interface", "nipype.utils")
_FILE_LOGGERS = (LOGGER_NAME, *_NIPYPE_LOGGERS, "py.warnings")


class _State:
    """Handlers installed by :func:`setup_logging` (to add files to, and to remove)."""

    def __init__(self) -> None:
        self.installed: list[tuple[str, logging.Handler]] = []
        self.buffer: _BufferHandler | None = None
        self.files: dict[Path, logging.Handler] = {}

    def install(self, logger_name: str, handler: logging.Handler) -> None:
        logging.getLogger(logger_name).addHandler(handler)
        self.installed.append((logger_name, handler))


_state = _State()


def setup_logging(verbosity: int = 0) -> logging.Logger:
    """Configure the terminal handler and start buffering records for the log files.

    ``verbosity`` 0: INFO on the terminal; 1: DEBUG; 2 or more: DEBUG plus tracebacks and
    Nipype's workflow messages. Calling it again replaces the previous handlers.
    """
    global _START
    _START = time.monotonic()
    teardown_logging()
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False

    console = logging.StreamHandler()
    console.setLevel(logging.INFO if verbosity <= 0 else logging.DEBUG)
    console.setFormatter(_ElapsedFormatter(show_tracebacks=verbosity >= 2))
    _state.install(LOGGER_NAME, console)

    buffer = _BufferHandler()
    _state.buffer = buffer
    for name in _FILE_LOGGERS:
        _state.install(name, buffer)

    # Nipype's own loggers: files get everything, the terminal only warnings unless -vv.
    for name in _NIPYPE_LOGGERS:
        nlog = logging.getLogger(name)
        nlog.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO)
        nlog.propagate = False
        nconsole = logging.StreamHandler()
        nconsole.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
        nconsole.setFormatter(
            _ElapsedFormatter(show_tracebacks=verbosity >= 2, first_line_only=verbosity < 2)
        )
        _state.install(name, nconsole)
    logging.getLogger("py.warnings").propagate = False
    logging.captureWarnings(True)
    return logger


def add_log_dir(log_dir: Path) -> Path:
    """Also log (DEBUG) to ``log_dir/bids_qsm.log``; replays the records buffered so far.

    Returns the log file path. Calling it twice with the same folder is harmless.
    """
    path = (Path(log_dir) / LOG_FILENAME).resolve()
    if path in _state.files:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(_FILE_FORMAT)
    owner = _owner_label(Path(log_dir))
    if owner:
        handler.addFilter(OwnerFilter(owner))
    if _state.buffer is not None:
        for record in _state.buffer.records:
            handler.handle(record)
    for name in _FILE_LOGGERS:
        _state.install(name, handler)
    _state.files[path] = handler
    return path


def log_files() -> list[Path]:
    """The log files written by this run so far."""
    return list(_state.files)


def keep_only_log_dir(log_dir: Path) -> Path:
    """In a worker process of one subject: log to ``log_dir`` only (returns the log file).

    The other log files inherited from the parent (or from the previous subject of a reused
    worker process) are closed; ``log_dir``'s file is opened if needed.
    """
    release_buffer()
    keep = (Path(log_dir) / LOG_FILENAME).resolve()
    for path, handler in list(_state.files.items()):
        if path == keep:
            continue
        for name in _FILE_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
        _state.installed = [(n, h) for n, h in _state.installed if h is not handler]
        del _state.files[path]
        try:
            handler.close()
        except Exception:  # a closed fd inherited by fork
            pass
    return add_log_dir(Path(log_dir))


def release_buffer() -> None:
    """Stop buffering (once every log folder has been added)."""
    if _state.buffer is None:
        return
    for name in _FILE_LOGGERS:
        logging.getLogger(name).removeHandler(_state.buffer)
    _state.buffer.records.clear()
    _state.buffer = None


def teardown_logging() -> None:
    """Flush and remove every handler installed by :func:`setup_logging` and :func:`add_log_dir`."""
    global _state
    for name, handler in _state.installed:
        logging.getLogger(name).removeHandler(handler)
    for handler in {id(h): h for _, h in _state.installed}.values():
        handler.close()
    logging.captureWarnings(False)
    for name in _FILE_LOGGERS:
        logging.getLogger(name).propagate = True
    _state = _State()


@contextmanager
def stage(name: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Log the start and the end (with duration) of a processing stage.

    >>> with stage("Discovering GRE acquisitions"):
    ...     pass
    """
    log = logger or logging.getLogger(LOGGER_NAME)
    log.info("%s ...", name)
    start = time.monotonic()
    try:
        with heartbeat(lambda: name, log):
            yield
    except BaseException:
        log.debug("%s failed after %.1f s", name, time.monotonic() - start)
        raise
    log.info("%s done (%.1f s)", name, time.monotonic() - start)


class Heartbeat:
    """Daemon thread logging ``still running <what> (N s)`` every ``interval`` seconds.

    ``what`` is called at each beat; it returns the current activity, or None to stay quiet
    (e.g. between two stages). Use :func:`heartbeat` rather than this class directly.
    """

    def __init__(
        self,
        what: Callable[[], str | None],
        logger: logging.Logger | None = None,
        interval: float | None = None,
    ) -> None:
        self.what = what
        self.log = logger or logging.getLogger(LOGGER_NAME)
        self.interval = HEARTBEAT_S if interval is None else float(interval)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bids-qsm-heartbeat", daemon=True)
        self.start_time = time.monotonic()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            activity = self.what()
            if activity:
                elapsed = time.monotonic() - self.start_time
                self.log.info("still running %s, %d s", activity, int(elapsed))

    def start(self) -> Heartbeat:
        """Start the thread (returns self)."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)


@contextmanager
def heartbeat(
    what: Callable[[], str | None],
    logger: logging.Logger | None = None,
    interval: float | None = None,
) -> Iterator[Heartbeat]:
    """Log ``still running <what()>, N s`` every ``interval`` s (15) while the block runs."""
    beat = Heartbeat(what, logger, interval).start()
    try:
        yield beat
    finally:
        beat.stop()
