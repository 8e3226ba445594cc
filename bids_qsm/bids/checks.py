"""Input checks run on every selected acquisition before any processing.

Each problem raises :class:`bids_qsm.errors.InputDataError` (exit 65) with one line naming the
file and the problem, so that a batch of 200 subjects fails in seconds on the one bad file
instead of after hours of processing. The checks also fill in what only the images tell:
the echo times per volume, the phase units (detected when the sidecar has no ``Units``) and
the B0 direction in voxel axes (from the affine), stored in ``acq.metadata``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_qsm.bids.discovery import GreAcquisition
from bids_qsm.errors import InputDataError
from bids_qsm.qsm.geometry import b0_direction_from_affine, voxel_sizes
from bids_qsm.qsm.phase import detect_phase_units

LOGGER = logging.getLogger(__name__)

#: Largest difference (mm) tolerated between the affines of the echoes of one acquisition.
AFFINE_TOLERANCE_MM = 1e-3
#: Slack (rad) when checking that a phase declared in radians lies in [-pi, 2 pi].
_RAD_TOLERANCE = 1e-3


def load_header(path: Path) -> nib.Nifti1Image | nib.Nifti2Image:
    """``nib.load`` with a one-line :class:`InputDataError` for unreadable files."""
    try:
        img = nib.load(str(path))
    except FileNotFoundError as exc:
        raise InputDataError("file not found (broken link?)", path) from exc
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise InputDataError(f"unreadable NIfTI ({type(exc).__name__}: {exc})", path) from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise InputDataError(f"not a NIfTI image ({type(img).__name__})", path)
    return img


def iter_volumes(img: nib.spatialimages.SpatialImage, path: Path) -> Iterator[np.ndarray]:
    """Yield the 3D volumes of a 3D or 4D image one at a time (float32).

    A truncated or corrupt data block raises :class:`InputDataError`.
    """
    shape = img.shape
    n = 1 if len(shape) == 3 else int(shape[3])
    for i in range(n):
        try:
            if len(shape) == 3:
                data = np.asanyarray(img.dataobj)
            else:
                data = np.asanyarray(img.dataobj[..., i])
            yield np.asarray(data, dtype=np.float32)
        except InputDataError:
            raise
        except Exception as exc:
            raise InputDataError(
                f"unreadable or truncated NIfTI data ({type(exc).__name__}: {exc})", path
            ) from exc


def _n_volumes(shape: tuple[int, ...]) -> int:
    return 1 if len(shape) == 3 else int(shape[3])


def check_acquisition(acq: GreAcquisition) -> None:
    """Validate one acquisition; raise :class:`InputDataError` (exit 65) on the first problem.

    Checked: magnitude (or real) and phase (or imaginary) present; no duplicate echo numbers;
    3D images where one echo per file is expected (a single file may be 4D with all echoes);
    equal echo counts of magnitude and phase; equal shapes and affines; ``EchoTime`` present
    (a list for a 4D file) and positive; ``MagneticFieldStrength`` or ``--b0-tesla``; images
    readable, not truncated, not all-zero or all-NaN; the T1w and lesion masks readable 3D.
    Sets ``acq.echo_times_s``, ``acq.phase_units`` and ``acq.metadata`` entries
    ``PhaseUnits``, ``PhaseUnitsSource``, ``B0Direction`` and ``EchoTimes``.
    """
    primary_part, secondary_part = _parts(acq)
    primary: list[Path] = getattr(acq, f"{primary_part}_files")
    secondary: list[Path] = getattr(acq, f"{secondary_part}_files")
    for part in (primary_part, secondary_part):
        _check_echo_numbers(acq, part)

    headers: dict[Path, Any] = {p: load_header(p) for p in acq.all_files()}
    per_echo = [n is not None for n in acq.echo_numbers.get(primary_part, [])]
    _check_dimensions(acq, headers, (primary_part, secondary_part))
    _check_echo_counts(acq, headers, primary_part, secondary_part)
    ref = primary[0]
    ref_shape = headers[ref].shape[:3]
    ref_affine = headers[ref].affine
    _check_grid(acq, headers, ref)
    _check_thickness(ref_shape, ref_affine, ref)
    acq.echo_times_s = _echo_times(acq, primary, secondary, headers)
    if not per_echo and len(primary) == 1 and _n_volumes(headers[primary[0]].shape) > 1:
        LOGGER.debug("%s: all echoes in one 4D file", primary[0].name)

    if acq.b0_tesla is None or not np.isfinite(acq.b0_tesla) or acq.b0_tesla <= 0:
        raise InputDataError(
            "missing or invalid MagneticFieldStrength in the sidecar (give --b0-tesla T)",
            primary[0],
        )

    phase_range = _check_values(acq, headers)
    if acq.phase_files:
        _set_phase_units(acq, min(phase_range), max(phase_range))
    else:
        acq.phase_units = "rad"
        acq.metadata["PhaseUnitsSource"] = "computed from real and imaginary parts"
    acq.metadata["PhaseUnits"] = acq.phase_units
    acq.metadata["EchoTimes"] = list(acq.echo_times_s)
    try:
        acq.metadata["B0Direction"] = [float(v) for v in b0_direction_from_affine(ref_affine)]
    except ValueError as exc:
        raise InputDataError(f"cannot derive the B0 direction: {exc}", ref) from exc

    _check_extra_images(acq)
    LOGGER.debug(
        "%s: %d echo(es) TE=%s s, B0=%.3g T, phase units %s, B0 direction %s",
        acq.source_prefix,
        len(acq.echo_times_s),
        acq.echo_times_s,
        acq.b0_tesla,
        acq.phase_units,
        acq.metadata["B0Direction"],
    )


def _parts(acq: GreAcquisition) -> tuple[str, str]:
    """("mag", "phase") or ("real", "imag"), both present (else the error naming the file)."""
    if acq.phase_files or acq.mag_files:
        primary_part, secondary_part = "mag", "phase"
    else:
        primary_part, secondary_part = "real", "imag"
    primary: list[Path] = getattr(acq, f"{primary_part}_files")
    secondary: list[Path] = getattr(acq, f"{secondary_part}_files")
    if not primary:
        raise InputDataError(
            f"no magnitude image for this {secondary_part} image ({acq.source_prefix})",
            secondary[0] if secondary else acq.source_prefix,
        )
    if not secondary:
        what = "phase" if primary_part == "mag" else "imaginary"
        raise InputDataError(
            f"no {what} image for this {primary_part} image: QSM needs magnitude and phase "
            "(part-mag and part-phase, or part-real and part-imag)",
            primary[0],
        )
    return primary_part, secondary_part


def _check_dimensions(
    acq: GreAcquisition, headers: dict[Path, Any], parts: tuple[str, str]
) -> None:
    """One 3D echo per file, or a single (4D) file holding all echoes."""
    for part in parts:
        files: list[Path] = getattr(acq, f"{part}_files")
        for path in files:
            shape = headers[path].shape
            single_file = len(files) == 1 and acq.echo_numbers[part][0] is None
            squeezed = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
            if len(squeezed) == 3:
                continue
            if len(shape) == 4 and single_file and acq.suffix == "MEGRE":
                continue
            expected = "3D (one echo per file)" if not single_file else "3D or 4D (x, y, z, echo)"
            if acq.suffix == "T2starw":
                expected = "3D (T2starw is single-echo)"
            raise InputDataError(f"{len(shape)}D image of shape {shape} where {expected}", path)


def _check_echo_counts(
    acq: GreAcquisition, headers: dict[Path, Any], primary_part: str, secondary_part: str
) -> None:
    """Equal echo counts of both parts; one echo for T2starw."""
    primary: list[Path] = getattr(acq, f"{primary_part}_files")
    secondary: list[Path] = getattr(acq, f"{secondary_part}_files")
    n_primary = sum(_n_volumes(headers[p].shape) for p in primary)
    n_secondary = sum(_n_volumes(headers[p].shape) for p in secondary)
    if n_primary != n_secondary:
        names = {"mag": "magnitude", "phase": "phase", "real": "real", "imag": "imaginary"}
        raise InputDataError(
            f"{names[primary_part]} has {n_primary} echo(es) but {names[secondary_part]} has "
            f"{n_secondary} ({acq.source_prefix})",
            secondary[0],
        )
    if acq.suffix == "T2starw" and n_primary != 1:
        raise InputDataError(f"T2starw must have one echo, found {n_primary}", primary[0])


def _check_grid(acq: GreAcquisition, headers: dict[Path, Any], ref: Path) -> None:
    """Every file on the voxel grid (shape, affine) of ``ref``."""
    ref_shape = headers[ref].shape[:3]
    ref_affine = headers[ref].affine
    for path in acq.all_files():
        shape = headers[path].shape[:3]
        if shape != ref_shape:
            raise InputDataError(f"shape {shape} differs from {ref_shape} of {ref.name}", path)
        diff = float(np.abs(headers[path].affine - ref_affine).max())
        if diff > AFFINE_TOLERANCE_MM:
            raise InputDataError(
                f"affine differs from that of {ref.name} (by up to {diff:.4g} mm): echoes and "
                "parts must share one voxel grid",
                path,
            )


def _check_values(acq: GreAcquisition, headers: dict[Path, Any]) -> list[float]:
    """No all-NaN or all-zero volume; returns the (min, max) values of the phase files."""
    phase_range: list[float] = []
    for path in acq.all_files():
        lo, hi = np.inf, -np.inf
        for vol_index, vol in enumerate(iter_volumes(headers[path], path)):
            finite = np.isfinite(vol)
            label = f" (volume {vol_index + 1})" if _n_volumes(headers[path].shape) > 1 else ""
            if not finite.any():
                raise InputDataError(f"image is all NaN/infinite{label}", path)
            values = vol if finite.all() else vol[finite]  # no copy in the usual case
            if not values.any():
                raise InputDataError(f"image is all zero{label}", path)
            lo = min(lo, float(values.min()))
            hi = max(hi, float(values.max()))
        if path in acq.phase_files:
            phase_range.extend((lo, hi))
    return phase_range


def _check_extra_images(acq: GreAcquisition) -> None:
    """The T1w and the lesion masks: readable 3D images, lesion masks binary."""
    extra = [p for p in (acq.t1w, *acq.lesion_masks.values()) if p is not None]
    for path in extra:
        img = load_header(path)
        if len(img.shape) != 3 and not (len(img.shape) == 4 and img.shape[3] == 1):
            raise InputDataError(f"{len(img.shape)}D image of shape {img.shape} where 3D", path)
        for vol in iter_volumes(img, path):
            if path in acq.lesion_masks.values():
                check_binary_mask(vol, path)


#: Fewest voxels along any axis for a 3D reconstruction (dipole inversion, background removal).
MIN_VOXELS_PER_AXIS = 3


def _check_thickness(shape: tuple[int, ...], affine: np.ndarray, path: Path) -> None:
    """Refuse images too thin for 3D QSM (e.g. a single slice), naming the axis and size."""
    sizes = voxel_sizes(affine)
    for axis, n in enumerate(shape[:3]):
        if n < MIN_VOXELS_PER_AXIS:
            raise InputDataError(
                f"image has only {n} voxel(s) ({n * float(sizes[axis]):.3g} mm) along axis "
                f"{axis}: QSM needs a 3D volume of at least {MIN_VOXELS_PER_AXIS} voxels along "
                "every axis",
                path,
            )


def check_binary_mask(data: np.ndarray, path: Path) -> None:
    """A mask must hold 0 and one other value (e.g. 1 or 255); anything else -> exit 65.

    A probabilistic map or an intensity image given as mask (e.g. a FLAIR) is refused rather
    than thresholded: any threshold would be a guess at what the lesion is.
    """
    finite = data[np.isfinite(data)]
    values = np.unique(finite[finite != 0])
    if values.size > 1:
        raise InputDataError(
            f"mask is not binary: {values.size} distinct non-zero values in "
            f"[{float(values.min()):.4g}, {float(values.max()):.4g}] (expected 0 and 1); "
            "binarise it first (e.g. threshold a probability map at 0.5)",
            path,
        )
    if values.size == 1 and values[0] < 0:
        raise InputDataError(f"mask value {float(values[0]):g} is negative (expected 1)", path)


def _check_echo_numbers(acq: GreAcquisition, part: str) -> None:
    files: list[Path] = getattr(acq, f"{part}_files")
    numbers = acq.echo_numbers.get(part, [None] * len(files))
    seen: dict[int | None, Path] = {}
    for number, path in zip(numbers, files, strict=True):
        if number in seen:
            what = f"echo-{number}" if number is not None else "file without echo-"
            raise InputDataError(
                f"duplicate {what} for part-{part} (also {seen[number].name})", path
            )
        if None in seen or (number is None and seen):
            other = next(iter(seen.values()))
            raise InputDataError(
                f"mixes a file without echo- and per-echo files for part-{part} "
                f"(also {other.name})",
                path,
            )
        seen[number] = path


def _echo_times(
    acq: GreAcquisition, primary: list[Path], secondary: list[Path], headers: dict[Path, Any]
) -> list[float]:
    """Echo times (s) per volume from the sidecars of the primary files (checked)."""
    times: list[float] = []
    sources: list[tuple[Path, int]] = []  # (file, volume index) of each echo time
    for path in primary:
        te = acq.file_metadata.get(path, {}).get("EchoTime")
        n = _n_volumes(headers[path].shape)
        if te is None:
            raise InputDataError("missing EchoTime in the JSON sidecar", path)
        values = list(te) if isinstance(te, (list, tuple)) else [te]
        if len(values) != n:
            raise InputDataError(
                f"EchoTime lists {len(values)} value(s) but the image has {n} echo(es)", path
            )
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InputDataError(f"EchoTime {value!r} is not a positive number (s)", path)
            if value > 1:
                raise InputDataError(
                    f"EchoTime {value} looks like milliseconds (BIDS uses seconds)", path
                )
        times.extend(float(v) for v in values)
        sources.extend((path, i) for i in range(len(values)))
    _check_echo_order(times, sources)
    for path, prim in zip(secondary, primary, strict=False):
        te = acq.file_metadata.get(path, {}).get("EchoTime")
        if te is None:
            continue
        values = list(te) if isinstance(te, (list, tuple)) else [te]
        own = acq.file_metadata.get(prim, {}).get("EchoTime")
        own_values = list(own) if isinstance(own, (list, tuple)) else [own]
        if not np.allclose(values, own_values, rtol=1e-4, atol=1e-7):
            raise InputDataError(f"EchoTime {te} differs from {own} of {prim.name}", path)
    return times


def _check_echo_order(times: list[float], sources: list[tuple[Path, int]]) -> None:
    """Echo times must be distinct and increase with the echo number (or volume index).

    The error names the file holding the repeated or out-of-order value. Echoes are not
    re-sorted: a numbering that contradicts the echo times is more often a conversion error
    than a deliberate choice, so it is refused (exit 65) rather than guessed around.
    """

    def where(source: tuple[Path, int]) -> str:
        path, vol = source
        return f"{path.name} (volume {vol + 1})" if _is_multi(sources, path) else path.name

    first: dict[float, tuple[Path, int]] = {}
    for k, (te, source) in enumerate(zip(times, sources, strict=True)):
        if te in first:
            raise InputDataError(
                f"EchoTime {te:g} s repeats that of {where(first[te])}: each echo needs its own "
                "echo time",
                source[0],
            )
        first[te] = source
        if k and te < times[k - 1]:
            raise InputDataError(
                f"EchoTime {te:g} s of {where(source)} is shorter than {times[k - 1]:g} s of "
                f"{where(sources[k - 1])}: number the echoes (or order the volumes) by "
                "increasing EchoTime",
                source[0],
            )


def _is_multi(sources: list[tuple[Path, int]], path: Path) -> bool:
    return sum(1 for p, _ in sources if p == path) > 1


def _set_phase_units(acq: GreAcquisition, lo: float, hi: float) -> None:
    """Phase units from the sidecar (checked against the data range) or detected."""
    detected = detect_phase_units(np.array([lo, hi], dtype=np.float32))
    in_rad_range = lo >= -np.pi - _RAD_TOLERANCE and hi <= 2 * np.pi + _RAD_TOLERANCE
    if acq.phase_units == "arbitrary":
        acq.metadata["PhaseUnitsSource"] = "sidecar Units"
    elif acq.phase_units == "rad" and in_rad_range:
        acq.metadata["PhaseUnitsSource"] = "sidecar Units"
    elif acq.phase_units == "rad":
        LOGGER.warning(
            "%s: sidecar says Units 'rad' but the phase spans [%.4g, %.4g]; rescaling it as "
            "arbitrary units",
            acq.phase_files[0].name,
            lo,
            hi,
        )
        acq.phase_units = "arbitrary"
        acq.metadata["PhaseUnitsSource"] = "detected (sidecar Units contradicted by the data)"
    else:
        acq.phase_units = detected
        acq.metadata["PhaseUnitsSource"] = "detected from the value range"
    LOGGER.info(
        "%s: phase in %s (%s; range %.4g .. %.4g)",
        acq.source_prefix,
        "radians" if acq.phase_units == "rad" else "arbitrary units, rescaled to [-pi, pi)",
        acq.metadata["PhaseUnitsSource"],
        lo,
        hi,
    )


def check_json_files(bids_dir: Path, subjects: Sequence[str] | None = None) -> None:
    """Parse every JSON file at the dataset top level and in the subjects' folders.

    ``subjects`` defaults to every ``sub-*`` folder. A malformed file raises
    :class:`InputDataError` (65) naming it, before pybids (which fails with a long ``OSError``)
    or the validator see it. (pybids indexes every subject: the command line checks the
    selected ones here and turns pybids' error on any other file into the same message.)
    """
    root = Path(bids_dir)
    files = sorted(root.glob("*.json"))
    folders = (
        sorted(p for p in root.glob("sub-*") if p.is_dir())
        if subjects is None
        else [root / f"sub-{s}" for s in subjects]
    )
    for folder in folders:
        files.extend(sorted(folder.rglob("*.json")))
    for path in files:
        if not path.name.startswith(".") and path.is_file():
            check_json_file(path)


def check_json_file(path: Path) -> None:
    """Raise :class:`InputDataError` (65) naming ``path`` if it is not valid JSON."""
    try:
        json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputDataError(f"malformed JSON ({exc})", path) from exc
    except OSError as exc:
        raise InputDataError(f"unreadable JSON file ({exc.strerror or exc})", path) from exc


def check_acquisitions(acquisitions: list[GreAcquisition]) -> None:
    """Run :func:`check_acquisition` on each acquisition (stops at the first problem)."""
    for acq in acquisitions:
        check_acquisition(acq)
