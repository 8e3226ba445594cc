"""Report figures: written atomically, right size, non-blank, orientation and slice choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from bids_qsm.atlas.structures import StructureDef
from bids_qsm.reports import figures as F

SHAPE = (40, 48, 24)
VOX = (2.0, 2.0, 3.0)


@pytest.fixture(scope="module")
def phantom() -> dict[str, np.ndarray]:
    """Ellipsoid 'brain' with two bright 'nuclei' (left/right) and a magnitude image."""
    idx = np.indices(SHAPE).astype(np.float32)
    c = [(n - 1) / 2 for n in SHAPE]
    r = np.sqrt(sum(((idx[i] - c[i]) * VOX[i] / s) ** 2 for i, s in enumerate((35, 42, 30))))
    mask = r < 1
    labels = np.zeros(SHAPE, np.int16)
    for value, dx in ((1, -6), (2, 6)):
        d2 = (idx[0] - c[0] - dx) ** 2 + (idx[1] - c[1]) ** 2 + ((idx[2] - c[2]) * 1.5) ** 2
        labels[d2 < 9] = value
    chi = np.where(mask, 0.01 * np.sin(idx[0] / 3), 0).astype(np.float32)
    chi[labels > 0] = 0.12
    mag = np.where(r < 1.2, 1000 * (1.3 - r), 0).astype(np.float32)
    return {"mask": mask, "labels": labels, "chi": chi, "mag": mag}


def _load(path: Path) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3
    return img[..., :3]


def _assert_non_blank(img: np.ndarray) -> None:
    # Many distinct grey levels/colours, not a uniform canvas.
    assert img.std() > 0.05
    assert len(np.unique(img.reshape(-1, 3).round(2), axis=0)) > 20


def _no_temp_files(folder: Path) -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".") or ".tmp" in p.name]


def test_chimap_mosaic_png(phantom: dict, tmp_path: Path) -> None:
    out = F.chimap_mosaic(phantom["chi"], phantom["mask"], VOX, tmp_path / "chi.png")
    assert out == tmp_path / "chi.png"
    img = _load(out)
    assert img.shape[1] == 1200  # 12 in at 100 dpi
    assert 300 < img.shape[0] < 3000
    _assert_non_blank(img)
    _no_temp_files(tmp_path)


def test_fixed_window_is_applied(phantom: dict, tmp_path: Path) -> None:
    """The same map at two windows gives different images (window is not auto-scaled)."""
    a = _load(F.chimap_mosaic(phantom["chi"], phantom["mask"], VOX, tmp_path / "a.png"))
    b = _load(
        F.chimap_mosaic(phantom["chi"], phantom["mask"], VOX, tmp_path / "b.png", window=(-1, 1))
    )
    assert a.shape == b.shape
    assert np.abs(a - b).mean() > 0.005


def test_all_figures_write(phantom: dict, tmp_path: Path) -> None:
    aff = np.diag([-2.0, 2.0, 3.0, 1.0])
    outs = [
        F.mask_outline(phantom["mag"], phantom["mask"], VOX, tmp_path / "mask.png", affine=aff),
        F.atlas_overlay(
            phantom["chi"],
            phantom["labels"],
            VOX,
            tmp_path / "atlas.png",
            {1: "caudate L", 2: "caudate R"},
            mask=phantom["mask"],
            affine=aff,
        ),
        F.minip_figure(phantom["mag"], VOX, tmp_path / "minip.png"),
        F.r2star_figure(phantom["mag"] / 30, phantom["mask"], VOX, tmp_path / "r2.png"),
        F.phase_iron_figure(phantom["chi"], phantom["mask"], VOX, tmp_path / "pi.png"),
    ]
    for out in outs:
        _assert_non_blank(_load(out))
    svg = F.phase_iron_figure(phantom["chi"], phantom["mask"], VOX, tmp_path / "pi.svg")
    assert svg.read_text().lstrip().startswith("<?xml")
    _no_temp_files(tmp_path)


def test_anisotropic_aspect_changes_height(phantom: dict, tmp_path: Path) -> None:
    """Tiles keep physical proportions: stretching the 2nd voxel axis makes the figure taller."""
    a = _load(F.chimap_mosaic(phantom["chi"], phantom["mask"], VOX, tmp_path / "a.png"))
    b = _load(F.chimap_mosaic(phantom["chi"], phantom["mask"], (2.0, 4.0, 3.0), tmp_path / "b.png"))
    assert b.shape[0] > a.shape[0] * 1.2


def test_atlas_overlay_colours_labels(phantom: dict, tmp_path: Path) -> None:
    """Label colours appear: the overlay has saturated pixels; the plain chi map has none."""
    plain = _load(F.chimap_mosaic(phantom["chi"], phantom["mask"], VOX, tmp_path / "c.png"))
    over = _load(F.atlas_overlay(phantom["chi"], phantom["labels"], VOX, tmp_path / "o.png", None))

    def saturated(img: np.ndarray) -> int:
        return int(((img.max(axis=2) - img.min(axis=2)) > 0.25).sum())

    assert saturated(over) > 200
    # the plain map has only the colourbar/text in grey: no saturated colour at all
    assert saturated(plain) == 0


def test_choose_slices_follow_labels(phantom: dict) -> None:
    labels = phantom["labels"]
    zs = np.nonzero(np.any(labels > 0, axis=(0, 1)))[0]
    sl = F.choose_slices(phantom["mask"], VOX, 8, labels=labels, margin_mm=3.0)
    assert sl == sorted(set(sl))
    assert min(sl) >= zs.min() - 1 and max(sl) <= zs.max() + 1
    # without labels: inside the mask extent, not at its very ends
    sl2 = F.choose_slices(phantom["mask"], VOX, 8)
    mz = np.nonzero(np.any(phantom["mask"], axis=(0, 1)))[0]
    assert mz.min() < min(sl2) and max(sl2) < mz.max()
    # empty mask and thin volumes do not fail
    assert F.choose_slices(np.zeros((4, 4, 3), bool), VOX, 12) == [0, 1, 2]


def test_orientation_reorients_to_ras(tmp_path: Path) -> None:
    """A left-right flipped affine is displayed like the RAS one (same picture)."""
    vol = np.zeros((20, 24, 10), np.float32)
    vol[2:6, 5:19, :] = 1.0  # a bar near voxel i = 0
    mask = np.ones(vol.shape, bool)
    ras = np.diag([2.0, 2.0, 3.0, 1.0])
    las = ras.copy()
    las[0, 0] = -2.0
    a = _load(F.r2star_figure(vol, mask, VOX, tmp_path / "ras.png", (0, 1), affine=ras))
    b = _load(F.r2star_figure(vol[::-1], mask, VOX, tmp_path / "las.png", (0, 1), affine=las))
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 0.01
    # but without an affine the stored axes are shown: the pictures differ
    c = _load(F.r2star_figure(vol[::-1], mask, VOX, tmp_path / "raw.png", (0, 1)))
    assert np.abs(a - c).mean() > 0.01
    assert "neurological" in F.orientation_note(True)
    assert "radiological" in F.orientation_note(True, radiological=True)
    assert "not determined" in F.orientation_note(False)


def test_structure_label_map_groups_labels() -> None:
    labels = np.array([[[75, 76, 143, 121, 5]]])
    structs = [
        StructureDef("thalamus", "L", (121, 143)),
        StructureDef("pulvinar", "L", (143,)),
        StructureDef("caudate", "L", (75,)),
        StructureDef("caudate", "R", (76,)),
    ]
    out, names = F.structure_label_map(labels, structs)
    assert out.ravel().tolist() == [3, 4, 2, 1, 0]  # pulvinar overrides thalamus
    assert names == {1: "thalamus L", 2: "pulvinar L", 3: "caudate L", 4: "caudate R"}


def test_bad_inputs_raise(phantom: dict, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="voxel_size"):
        F.chimap_mosaic(phantom["chi"], phantom["mask"], (2, 0, 3), tmp_path / "x.png")
    with pytest.raises(ValueError, match="shapes"):
        F.chimap_mosaic(phantom["chi"], phantom["mask"][:-1], VOX, tmp_path / "x.png")
    with pytest.raises(ValueError, match="3D"):
        F.chimap_mosaic(phantom["chi"][..., 0], phantom["mask"], VOX, tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_structure_labels_from_dseg_table() -> None:
    import pandas as pd

    labels = np.array([[[1, 75, 76, 143, 121]]])
    table = pd.DataFrame(
        {
            "index": [1, 75, 76, 121, 143],
            "name": ["Precentral_L", "Caudate_L", "Caudate_R", "Thal_AV_L", "Thal_PuA_L"],
            "structure": ["n/a", "caudate", "caudate", "thalamus", "thalamus;pulvinar"],
            "hemisphere": ["L", "L", "R", "L", "L"],
        }
    )
    out, names = F.structure_labels_from_table(labels, table)
    # cortex dropped; pulvinar drawn over thalamus; reporting order thalamus, pulvinar, caudate
    assert names == {1: "thalamus L", 2: "pulvinar L", 3: "caudate L", 4: "caudate R"}
    assert out.ravel().tolist() == [0, 3, 4, 2, 1]
    same, nm = F.structure_labels_from_table(labels, table.drop(columns="structure"))
    assert same is labels or np.array_equal(same, labels)
    assert nm[75] == "Caudate_L"


def test_choose_slices_give_n_slices_through_the_deep_gray_matter() -> None:
    """12 distinct slices through the labelled extent (+- margin), not the whole mask."""
    mask = np.zeros((20, 20, 60), bool)
    mask[2:18, 2:18, 2:58] = True
    labels = np.zeros(mask.shape, np.int16)
    labels[8:12, 8:12, 25:35] = 1  # deep gray matter: 10 slices of 2 mm
    sl = F.choose_slices(mask, (2.0, 2.0, 2.0), 12, labels=labels, margin_mm=6.0)
    assert len(sl) == 12 and min(sl) >= 25 - 3 and max(sl) <= 34 + 3
