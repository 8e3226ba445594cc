"""SWI pipeline on a small analytic phantom: signs, darkness, homodyne vs Gaussian agreement."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.fft as sfft

from bids_qsm.errors import InputDataError, UsageError
from bids_qsm.qsm.geometry import dipole_kernel, fast_padded_shape, ppm_to_hz
from bids_qsm.swi import SWIOptions, compute_swi

GP, PUT, CAUD, VEIN, WM = 1, 2, 3, 4, 5
TE = (0.005, 0.012, 0.019, 0.026)


def make_phantom(
    shape: tuple[int, int, int] = (64, 64, 40),
    vs: tuple[float, float, float] = (1.0, 1.0, 2.0),
    b0: float = 3.0,
    noise: float = 0.01,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Brain-like ellipsoid with iron-rich 'nuclei' and veins, B0 along z, 3 T.

    Nuclei are prolate ellipsoids along B0 (a uniform *sphere* has no internal field with the
    dipole kernel 1/3 - kz^2/k^2, an ellipsoid elongated along B0 has a positive one); veins
    are cylinders parallel to B0 (internal field +chi/3). A smooth background field (wrapping
    at late echoes) and a phase offset are added; the signal is
    ``M0 exp(-R2* TE) exp(i (2 pi f TE + phi0))`` plus complex Gaussian noise.
    """
    v = np.asarray(vs, float)
    idx = np.indices(shape).astype(np.float32)
    c = (np.array(shape) - 1) / 2.0
    x, y, z = ((idx[i] - c[i]) * v[i] for i in range(3))  # mm
    brain = (x / 28) ** 2 + (y / 26) ** 2 + (z / 30) ** 2 <= 1
    chi = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.int16)
    nuclei = {GP: ((-12, -8), 0.20), PUT: ((12, -8), 0.10), CAUD: ((0, 12), 0.05)}  # ppm
    for lab, ((cx, cy), val) in nuclei.items():
        e = ((x - cx) / 4.5) ** 2 + ((y - cy) / 4.5) ** 2 + (z / 10) ** 2 <= 1
        chi[e], labels[e] = val, lab
    for cx, cy in ((-8, 10), (10, 8)):
        cyl = ((x - cx) ** 2 + (y - cy) ** 2 <= 1.5**2) & (np.abs(z) < 20)
        chi[cyl], labels[cyl] = 0.45, VEIN
    labels[brain & (labels == 0) & (x**2 + (y + 8) ** 2 < 16) & (np.abs(z) < 10)] = WM
    pshape = fast_padded_shape(shape, 16)
    dk = dipole_kernel(pshape, v, (0.0, 0.0, 1.0))
    local = sfft.irfftn(sfft.rfftn(chi, pshape) * dk, pshape)[: shape[0], : shape[1], : shape[2]]
    local_hz = ppm_to_hz(local.astype(np.float32), b0)
    field = local_hz + (30 * x / 32 + 20 * (y / 32) ** 2 - 10 * z / 40)
    te = np.asarray(TE)
    r2s = np.where(labels == VEIN, 40.0, 20.0)
    phi0 = 0.3 * x / 32
    s = (
        brain[..., None]
        * np.exp(-r2s[..., None] * te)
        * np.exp(1j * (2 * np.pi * field[..., None] * te + phi0[..., None]))
    )
    rng = np.random.default_rng(seed)
    s = s + noise * (rng.standard_normal(s.shape) + 1j * rng.standard_normal(s.shape))
    return {
        "mag": np.abs(s).astype(np.float32),
        "phase": np.angle(s).astype(np.float32),
        "te": te,
        "vs": v,
        "mask": brain,
        "field_hz": np.where(brain, field, 0).astype(np.float32),
        "labels": labels,
        "local_hz": local_hz,
    }


@pytest.fixture(scope="module")
def phantom() -> dict[str, np.ndarray]:
    return make_phantom()


def _means(img: np.ndarray, labels: np.ndarray) -> dict[int, float]:
    # nanmean: the phase-quality mask sets the brain edge (4 mm) of the phase-iron map to NaN
    return {lab: float(np.nanmean(img[labels == lab])) for lab in (GP, PUT, CAUD, VEIN, WM)}


def test_phantom_local_field_positive_in_iron(phantom):
    # Guard on the phantom itself: nuclei and veins have positive (paramagnetic) local field.
    m = _means(phantom["local_hz"], phantom["labels"])
    assert m[VEIN] > m[GP] > m[PUT] > m[CAUD] > 0 > m[WM]


def test_gaussian_swi_veins_and_pallidum_dark_and_positive_iron(phantom):
    p = phantom
    r = compute_swi(p["mag"], p["phase"], p["te"], p["vs"], p["mask"], p["field_hz"])
    assert r.parameters["ReferenceEchoTime_s"] == pytest.approx(0.019)
    assert r.parameters["FilteredPhaseSign"].startswith("paramagnetic negative")
    for a in (r.swi, r.minip, r.hp_phase_rad, r.phase_iron_rad):
        assert a.shape == p["mask"].shape and a.dtype == np.float32
    ok = p["mask"] & np.isfinite(r.phase_iron_rad)
    np.testing.assert_array_equal(r.phase_iron_rad[ok], -r.hp_phase_rad[ok])
    assert np.all(r.phase_iron_rad[~p["mask"]] == 0)
    # phase-quality mask: NaN exactly within 4 mm of the brain edge
    from scipy import ndimage

    dist = ndimage.distance_transform_edt(p["mask"], sampling=p["vs"])
    np.testing.assert_array_equal(np.isnan(r.phase_iron_rad), p["mask"] & (dist <= 4.0))
    pi = _means(r.phase_iron_rad, p["labels"])
    hp = _means(r.hp_phase_rad, p["labels"])
    # iron positive on the phase-iron map, negative in the SWI filtered phase
    # (2 mm in-plane sigma: the 4.5 mm nuclei keep about half of their local field)
    assert pi[VEIN] > 1.0 and pi[GP] > 0.2 and pi[PUT] > 0.1 and pi[CAUD] > 0.03
    assert hp[VEIN] < -1.0 and hp[GP] < -0.2
    assert abs(pi[WM]) < 0.1
    # expected magnitude: 2 pi TE_ref x (local field minus its in-plane low-pass) ~ 2 pi TE f
    expected = 2 * np.pi * 0.019 * _means(p["local_hz"], p["labels"])[GP]
    r4 = compute_swi(
        p["mag"], p["phase"], p["te"], p["vs"], p["mask"], p["field_hz"],
        SWIOptions(gaussian_sigma_mm=(4.0, 4.0, 0.0)),
    )  # fmt: skip
    assert _means(r4.phase_iron_rad, p["labels"])[GP] == pytest.approx(expected, rel=0.4)
    # the default 2 mm high-pass keeps a smaller part of a 9 mm wide nucleus's field
    assert 0.3 * expected < pi[GP] < 0.8 * expected
    # dark on SWI: mask^4 strongly attenuates veins and the pallidum, leaves WM alone
    swi = _means(r.swi, p["labels"])
    assert swi[VEIN] < 0.1 * swi[WM]
    assert swi[GP] < 0.8 * swi[WM]
    assert swi[GP] < swi[PUT] < swi[CAUD] < swi[WM]
    ratio = r.swi[p["mask"]] / r.magnitude[p["mask"]]
    assert np.all(ratio <= 1.0 + 1e-6) and np.median(ratio) > 0.99
    assert np.all(r.minip <= r.swi + 1e-6)
    assert set(r.timings_s) >= {"highpass", "swi", "minip", "total"}


@pytest.mark.parametrize("window", [12, 16])
def test_homodyne_agrees_with_gaussian_in_sign_and_rank(phantom, window):
    p = phantom
    g = compute_swi(p["mag"], p["phase"], p["te"], p["vs"], p["mask"], p["field_hz"])
    h = compute_swi(
        p["mag"],
        p["phase"],
        p["te"],
        p["vs"],
        p["mask"],
        options=SWIOptions(highpass="homodyne", homodyne_window=window),
    )
    assert h.parameters["HomodyneEcho"] == 2  # echo closest to 20 ms
    gm, hm = _means(g.phase_iron_rad, p["labels"]), _means(h.phase_iron_rad, p["labels"])
    structs = (VEIN, GP, PUT, CAUD)
    assert all(gm[s] > 0 and hm[s] > 0 for s in structs)
    assert sorted(structs, key=gm.get) == sorted(structs, key=hm.get) == [CAUD, PUT, GP, VEIN]
    # voxelwise agreement inside the nuclei and veins
    sel = np.isin(p["labels"], structs)
    assert np.corrcoef(g.phase_iron_rad[sel], h.phase_iron_rad[sel])[0, 1] > 0.8


def test_single_echo_homodyne(phantom):
    p = phantom
    e = 3
    r = compute_swi(
        p["mag"][..., e],
        p["phase"][..., e],
        [p["te"][e]],
        p["vs"],
        p["mask"],
        options=SWIOptions(highpass="homodyne", homodyne_window=12),
    )
    assert r.parameters["ReferenceEchoTime_s"] == pytest.approx(p["te"][e])
    m = _means(r.phase_iron_rad, p["labels"])
    assert m[VEIN] > m[GP] > m[PUT] > 0
    swi = _means(r.swi, p["labels"])
    assert swi[VEIN] < 0.2 * swi[WM] and swi[GP] < 0.8 * swi[WM]


def test_reference_te_rescales_phase(phantom):
    p = phantom
    a = compute_swi(p["mag"], None, p["te"], p["vs"], p["mask"], p["field_hz"])
    b = compute_swi(
        p["mag"], None, p["te"], p["vs"], p["mask"], p["field_hz"], SWIOptions(reference_te_s=0.038)
    )
    np.testing.assert_allclose(b.hp_phase_rad, 2 * a.hp_phase_rad, rtol=1e-5, atol=1e-6)


def test_gaussian_sigma_mm_equals_vox(phantom):
    p = phantom

    def field_swi(options: SWIOptions):
        return compute_swi(p["mag"], None, p["te"], p["vs"], p["mask"], p["field_hz"], options)

    a = field_swi(SWIOptions(gaussian_sigma_vox=(4.0, 4.0, 0.0)))
    b = field_swi(SWIOptions(gaussian_sigma_mm=(4.0, 4.0, 0.0)))  # 1 mm in-plane voxels
    np.testing.assert_array_equal(a.hp_phase_rad, b.hp_phase_rad)
    assert b.parameters["GaussianSigma_vox"] == [4.0, 4.0, 0.0]


def test_gaussian_fallback_without_field(phantom):
    # No QSM-core field: Laplacian-unwrapped echo differences give the same picture.
    p = phantom
    r = compute_swi(p["mag"], p["phase"], p["te"], p["vs"], p["mask"])
    assert "fallback" in r.parameters["FieldSource"]
    m = _means(r.phase_iron_rad, p["labels"])
    assert m[VEIN] > m[GP] > m[PUT] > m[CAUD] > 0
    assert abs(m[WM]) < 0.1


def test_input_errors(phantom):
    p = phantom
    with pytest.raises(InputDataError):
        compute_swi(p["mag"], None, p["te"], p["vs"], p["mask"])  # no field, no phase
    with pytest.raises(InputDataError):
        compute_swi(p["mag"], p["phase"], p["te"][:2], p["vs"], p["mask"], p["field_hz"])
    with pytest.raises(InputDataError):
        compute_swi(
            p["mag"], None, p["te"], p["vs"], p["mask"], options=SWIOptions(highpass="homodyne")
        )


def test_options_validation_and_serialisation():
    d = SWIOptions().to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["gaussian_sigma_mm"] == [2.0, 2.0, 0.0] and d["gaussian_sigma_vox"] is None
    assert d["mask_power"] == 4 and d["field_source"] == "local"
    for bad in (
        {"highpass": "laplacian"},
        {"mask_power": 0},
        {"minip_thickness_mm": 0.0},
        {"magnitude_weighting": "max"},
        {"slice_axis": 3},
        {"reference_te_s": -0.01},
        {"gaussian_sigma_vox": (4.0, 4.0)},
        {"gaussian_sigma_mm": (4.0, -1.0, 0.0)},
        {"gaussian_sigma_mm": None},
        {"field_source": "background"},
    ):
        with pytest.raises(UsageError):
            SWIOptions(**bad)


def test_single_echo_gaussian_fallback(phantom):
    # One echo, no field: Laplacian-unwrapped phase / (2 pi TE), then the Gaussian high-pass.
    p = phantom
    e = 2
    r = compute_swi(p["mag"][..., e], p["phase"][..., e], [p["te"][e]], p["vs"], p["mask"])
    m = _means(r.phase_iron_rad, p["labels"])
    assert m[VEIN] > m[GP] > m[PUT] > m[CAUD] > 0
    assert abs(m[WM]) < 0.1


def test_warns_when_gaussian_sigma_is_coarse(phantom, caplog):
    p = phantom
    coarse = np.array([3.0, 3.0, 3.0])  # 4 voxels = 12 mm
    with caplog.at_level("WARNING", logger="bids_qsm.swi"):
        r = compute_swi(
            p["mag"],
            None,
            p["te"],
            coarse,
            p["mask"],
            p["field_hz"],
            SWIOptions(gaussian_sigma_vox=(4.0, 4.0, 0.0)),
        )
    assert r.parameters["GaussianSigma_mm"] == [12.0, 12.0, 0.0]
    assert any("gaussian_sigma_mm" in m for m in caplog.messages)
    caplog.clear()
    with caplog.at_level("WARNING", logger="bids_qsm.swi"):
        compute_swi(p["mag"], None, p["te"], p["vs"], p["mask"], p["field_hz"])
    assert not caplog.messages
