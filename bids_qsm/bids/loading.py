"""Load a checked GRE acquisition into arrays ready for the numerical core.

Magnitude and phase become ``(X, Y, Z, E)`` float32 arrays with the echoes on the last axis;
real/imaginary parts are converted (``mag = |re + i im|``, ``phase = angle(re + i im)``); the
phase is rescaled to radians in [-pi, pi) when it is in arbitrary units. Non-finite voxels are
set to zero. The geometry (voxel size in mm, B0 direction in voxel axes) comes from the affine.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from bids_qsm.bids.checks import iter_volumes, load_header
from bids_qsm.bids.discovery import GreAcquisition
from bids_qsm.errors import InputDataError
from bids_qsm.qsm.geometry import b0_direction_from_affine, voxel_sizes
from bids_qsm.qsm.phase import detect_phase_units, rescale_to_radians, wrap_to_pi

LOGGER = logging.getLogger(__name__)


@dataclass
class GreData:
    """The arrays and geometry of one acquisition."""

    #: Magnitude, (X, Y, Z, E) float32.
    mag: np.ndarray
    #: Phase in radians in [-pi, pi), (X, Y, Z, E) float32 (sign as acquired).
    phase: np.ndarray
    #: Echo times in seconds, one per echo.
    te_s: tuple[float, ...]
    #: Main field strength (T).
    b0_tesla: float
    #: Voxel-to-world affine (4x4) shared by all echoes.
    affine: np.ndarray
    #: NIfTI header of the first magnitude (or real) file, for writing outputs in GRE space.
    header: Any
    #: Voxel edge lengths (mm).
    voxel_size: np.ndarray
    #: Unit B0 direction in voxel axes.
    b0_dir: np.ndarray
    #: Units of the phase as stored on disk: "rad" or "arbitrary" (rescaled).
    phase_units: str
    #: Extra facts for sidecars/logs (e.g. original phase range).
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_echoes(self) -> int:
        """Number of echoes."""
        return int(self.mag.shape[3])


def _stack(files: list[Path], threads: int = 1) -> np.ndarray:
    """Volumes of ``files`` (3D per echo, or one 4D file) stacked as (X, Y, Z, E) float32.

    ``threads`` files are decompressed at once (zlib releases the GIL; same values).
    """
    images = [load_header(path) for path in files]
    shape = images[0].shape[:3]
    starts = np.cumsum([0] + [1 if len(im.shape) == 3 else int(im.shape[3]) for im in images])
    out = np.empty((*shape, int(starts[-1])), dtype=np.float32)  # filled in place

    def fill(k: int) -> None:
        for i, vol in enumerate(iter_volumes(images[k], files[k]), start=int(starts[k])):
            if vol.shape != shape:
                raise InputDataError(f"volume shape {vol.shape} differs from {shape}", files[k])
            out[..., i] = vol

    if threads <= 1 or len(files) == 1:
        for k in range(len(files)):
            fill(k)
    else:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            list(pool.map(fill, range(len(files))))  # re-raises the first error
    return out


def load_gre(
    acq: GreAcquisition, b0_tesla_override: float | None = None, threads: int = 1
) -> GreData:
    """Read magnitude and phase of ``acq`` (checked by ``check_acquisition`` first).

    ``b0_tesla_override`` replaces the sidecar's ``MagneticFieldStrength``; ``threads``: files
    decompressed at once.
    Raises :class:`InputDataError` (65) if the field strength or echo times are unknown.
    """
    b0 = float(b0_tesla_override) if b0_tesla_override is not None else acq.b0_tesla
    if b0 is None or not np.isfinite(b0) or b0 <= 0:
        raise InputDataError(
            "missing MagneticFieldStrength in the sidecar (give --b0-tesla T)",
            (acq.mag_files or acq.real_files or [acq.source_prefix])[0],
        )

    if acq.is_complex:
        ref_file = acq.real_files[0]
        real = _stack(acq.real_files, threads)
        imag = _stack(acq.imag_files, threads)
        if real.shape != imag.shape:
            raise InputDataError(
                f"real {real.shape} and imaginary {imag.shape} shapes differ", acq.imag_files[0]
            )
        np.nan_to_num(real, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        np.nan_to_num(imag, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        mag = np.hypot(real, imag).astype(np.float32)
        phase = wrap_to_pi(np.arctan2(imag, real))
        units = "rad"
        info: dict[str, Any] = {"PhaseSource": "arctan2 of part-imag and part-real"}
        del real, imag
    else:
        ref_file = acq.mag_files[0]
        mag = _stack(acq.mag_files, threads)
        raw_phase = _stack(acq.phase_files, threads)
        if not np.isfinite(mag).all():
            np.nan_to_num(mag, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        finite = np.isfinite(raw_phase)
        all_finite = bool(finite.all())
        units = acq.phase_units
        if units not in ("rad", "arbitrary"):
            units = detect_phase_units(raw_phase)
        values = raw_phase if all_finite else raw_phase[finite]  # no copy in the usual case
        info = {"PhaseRangeOnDisk": [float(values.min()), float(values.max())]}
        del values
        if not all_finite:
            raw_phase[~finite] = np.nan
        phase = rescale_to_radians(raw_phase, units)
        if not all_finite:
            np.nan_to_num(phase, copy=False, nan=0.0)
        del raw_phase
        if mag.shape != phase.shape:
            raise InputDataError(
                f"magnitude {mag.shape} and phase {phase.shape} shapes differ", acq.phase_files[0]
            )

    te = tuple(float(t) for t in acq.echo_times_s)
    if len(te) != mag.shape[3]:
        raise InputDataError(
            f"{len(te)} echo time(s) for {mag.shape[3]} echo(es) (missing EchoTime?)", ref_file
        )
    ref = nib.load(str(ref_file))
    affine = np.asarray(ref.affine, dtype=float)
    header = ref.header.copy()
    b0_dir = b0_direction_from_affine(affine)
    voxel_size = voxel_sizes(affine)
    acq.metadata["PhaseUnits"] = units
    acq.metadata["B0Direction"] = [float(v) for v in b0_dir]
    LOGGER.debug(
        "Loaded %s: %s voxels x %d echoes, voxel %s mm, B0 %.3g T along %s (voxel axes), phase %s",
        acq.source_prefix,
        mag.shape[:3],
        mag.shape[3],
        np.round(voxel_size, 4).tolist(),
        b0,
        np.round(b0_dir, 4).tolist(),
        units,
    )
    return GreData(
        mag=mag,
        phase=phase,
        te_s=te,
        b0_tesla=float(b0),
        affine=affine,
        header=header,
        voxel_size=voxel_size,
        b0_dir=b0_dir,
        phase_units=units,
        info=info,
    )
