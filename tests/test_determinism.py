"""Determinism outside the registration: same inputs give the same bytes, any thread count.

The ANTs registration (``bids_qsm.atlas.registration``) is tested in its own module; here the
labels are fixed (as with a fixed transform) and everything else is checked: QSM and R2* with
1 and 2 threads, and the regional table written from them. The group level is checked in
``test_group_workflow.py`` (tables, report and figures byte-identical on re-run).
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.qsm.pipeline import reconstruct_qsm
from bids_qsm.simulate.phantom import gre_signal, sphere_phantom
from bids_qsm.stats.regional import Entities, regional_table

TE = [0.004, 0.010, 0.016, 0.022]


@pytest.fixture(scope="module")
def phantom():
    ph = sphere_phantom()
    r2 = np.where(ph.brain, 20.0, 0.0).astype(np.float32)
    mag, phase = gre_signal(ph.total_field_ppm, ph.brain, TE, r2star_hz=r2, offset_rad=0.5)
    return ph, mag, phase


def _labels(ph) -> tuple[np.ndarray, list[StructureDef]]:
    idx = np.indices(ph.brain.shape, dtype=np.float32)
    labels = np.zeros(ph.brain.shape, np.int16)
    names = ("putamen", "caudate", "pallidum", "thalamus", "red_nucleus", "substantia_nigra")
    structs = []
    for i, (centre, radius, _) in enumerate(ph.spheres[: len(names)]):
        c = [(n - 1) / 2 + ci for n, ci in zip(ph.brain.shape, centre, strict=True)]
        labels[sum((idx[a] - c[a]) ** 2 for a in range(3)) <= radius**2] = i + 1
        structs.append(StructureDef(names[i], "L", (i + 1,)))
    return labels, structs


def _table_bytes(ph, result, labels, structs) -> bytes:
    df = regional_table(
        result.chi_ppm,
        labels,
        result.mask,
        structs,
        float(np.prod(ph.voxel_size)),
        Entities("sub-01"),
        "toy",
        r2star_hz=result.r2star_hz,
        reference_region="brain",
    )
    buf = io.StringIO()
    df.to_csv(buf, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    return buf.getvalue().encode()


def test_qsm_and_regional_table_identical_for_1_and_2_threads_and_reruns(phantom) -> None:
    ph, mag, phase = phantom
    runs = [
        reconstruct_qsm(mag, phase, TE, 3.0, ph.voxel_size, ph.b0_dir, threads=t) for t in (1, 2, 1)
    ]
    for r in runs[1:]:
        assert np.array_equal(r.mask, runs[0].mask)
        assert np.array_equal(r.chi_ppm, runs[0].chi_ppm)  # bit for bit, not approximately
        assert np.array_equal(r.r2star_hz, runs[0].r2star_hz)
    labels, structs = _labels(ph)
    tables = {_table_bytes(ph, r, labels, structs) for r in runs}
    assert len(tables) == 1
    assert b"putamen" in next(iter(tables))
