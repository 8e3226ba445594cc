"""Participant HTML report: sections, figures with resolvable relative paths, QC flags, sessions."""

from __future__ import annotations

import multiprocessing as mp
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from bids_qsm.reports.participant import (
    QC_CHECKS,
    ReportInputs,
    assemble_subject_report,
    evaluate_qc,
    figures_dir,
    report_path,
    write_participant_report,
)

SECTIONS = ("summary", "qc", "figures", "regional", "warnings", "methods", "provenance")


def _png(path: Path, colour: str = "C0") -> Path:
    fig = Figure(figsize=(2, 1), dpi=50)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color=colour)
    fig.savefig(path)
    return path


def _regional(gp_ppm: float = 0.12) -> pd.DataFrame:
    rows = []
    for s, chi in (("thalamus", -0.004), ("globus_pallidus", gp_ppm), ("caudate", 0.05)):
        for h in ("L", "R", "bilateral"):
            rows.append(
                {
                    "participant_id": "sub-01",
                    "atlas": "AAL3",
                    "structure": s,
                    "hemisphere": h,
                    "nvox": 100,
                    "volume_mm3": 800.0,
                    "chi_mean_ppm": chi,
                    "chi_median_ppm": chi,
                    "chi_std_ppm": 0.02,
                    "chi_p25_ppm": chi - 0.01,
                    "chi_p75_ppm": chi + 0.01,
                    "r2star_mean_hz": 25.0,
                    "phaseiron_mean_rad": 0.05,
                    "mpapt_rad": np.nan,
                    "apt_volume_mm3": 0.0,
                    "reference_region": "brain",
                    "reference_value_ppm": 0.001,
                }
            )
    rows.append({**rows[0], "structure": "whole_brain", "hemisphere": "bilateral"})
    return pd.DataFrame(rows)


def _lesions() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"label": "T2lesion", "lesion_id": "1", "volume_mm3": 120.0, "chi_mean_ppm": 0.02},
            {"label": "T2lesion", "lesion_id": "total", "volume_mm3": 120.0, "chi_mean_ppm": 0.02},
        ]
    )


def _inputs(tmp_path: Path, **kw) -> ReportInputs:
    src = tmp_path / "work"
    src.mkdir(exist_ok=True)
    figs = {k: _png(src / f"{k}.png") for k in ("chimap", "mask", "atlas", "minip", "r2star")}
    figs["phaseiron"] = _png(src / "phaseiron.png")
    figs["registration"] = None  # skipped
    base = dict(
        subject="sub-01",
        session=None,
        source_prefix="sub-01",
        figures=figs,
        regional_table=_regional(),
        lesion_table=None,
        qc={
            "mask_volume_ml": 1400.0,
            "reference_region": "brain",
            "reference_value_ppm": 0.004,
            "frac_abs_chi_gt_0p5": 0.002,
            "registration_brain_dice": 0.91,
            "n_echoes": 4,
            "te_ms": [4.0, 10.0, 16.0, 22.0],
            "b0_tesla": 3.0,
            "voxel_size_mm": [2.0, 2.0, 2.0],
            "scanner": "Simulated <3T>",
        },
        warnings=["registration skipped: field of view too small"],
        methods_markdown=(
            "## Methods (bids-qsm 0.1.0)\n\nSusceptibility was obtained with RTS [1].\n"
            "\n### References\n\n1. Kames C. *NeuroImage*. 2018.\n"
        ),
        provenance={
            "version": "0.1.0",
            "command": ["bids-qsm", "/data", "/out", "participant"],
            "run_id": "20260101-000000_abcd",
            "elapsed_s": {"qsm": 12.5, "swi": 1.5},
        },
    )
    base.update(kw)
    return ReportInputs(**base)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hrefs: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append(tag)
        if tag == "img" and a.get("src"):
            self.srcs.append(a["src"])
        if tag == "a" and a.get("href"):
            self.hrefs.append(a["href"])
        if a.get("id"):
            self.ids.add(a["id"])


def _parse(path: Path) -> _Refs:
    p = _Refs()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def test_report_sections_and_figures(tmp_path: Path) -> None:
    out = tmp_path / "derivatives"
    page = write_participant_report(_inputs(tmp_path), out)
    assert page == out / "sub-01.html" == report_path(out, "01")
    html = page.read_text(encoding="utf-8")
    refs = _parse(page)
    for sec in SECTIONS:
        assert f"sub-01-{sec}" in refs.ids, sec
        assert f"#sub-01-{sec}" in refs.hrefs, sec  # navigation links
    # 6 provided figures + the generated regional chart, all relative and existing
    assert len(refs.srcs) == 7
    for src in refs.srcs:
        assert not src.startswith(("/", "http", "file:"))
        assert src.startswith("sub-01/figures/")
        assert (out / unquote(src)).is_file()
    assert "Figure not produced" in html  # registration placeholder
    assert "registration skipped: field of view too small" in html
    # no network resources, no scripts
    assert "<script" not in html and "http://" not in html and "https://" not in html
    # regional table in ppb, escaped free text
    assert "+120.0" in html and "Globus pallidus" not in html.split("<table")[0]
    assert "Simulated &lt;3T&gt;" in html
    assert "Kames" in html and "<em>NeuroImage</em>" in html
    assert "bids-qsm /data /out participant" in html
    assert "All quality checks passed" in html
    assert "<h4" in html  # figure titles
    # no temporary files left behind
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name]
    assert leftovers == []


def test_qc_flags_out_of_range(tmp_path: Path) -> None:
    qc = {
        "mask_volume_ml": 150.0,
        "reference_value_ppm": -0.2,
        "frac_abs_chi_gt_0p5": 0.05,
        "registration_brain_dice": 0.6,
    }
    rows = {r["key"]: r for r in evaluate_qc(qc, _regional(gp_ppm=-0.1))}
    for key in ("mask_volume_ml", "reference_value_ppm", "frac_abs_chi_gt_0p5"):
        assert rows[key]["status"] == "check", key
    assert rows["registration_brain_dice"]["status"] == "check"
    assert rows["gp_sign"]["status"] == "check"
    assert "phase sign" in rows["gp_sign"]["note"]
    assert rows["frac_abs_chi_gt_0p5"]["value"] == "5.00 %"

    ok = {
        r["key"]: r
        for r in evaluate_qc(
            {
                "mask_volume_ml": 1300,
                "reference_value_ppm": 0.01,
                "frac_abs_chi_gt_0p5": 0.001,
                "registration_brain_dice": 0.85,
                "registration_dgm_cc": 0.8,
                "registration_jacobian_p01": 0.7,
                "registration_jacobian_p99": 1.4,
                "registration_iron_contrast_ppb": 90.0,
            },
            _regional(),
        )
    }
    assert all(ok[c.key]["status"] == "ok" for c in QC_CHECKS)
    # a poor deep gray matter registration is flagged (issue 12)
    poor = {
        r["key"]: r["status"]
        for r in evaluate_qc(
            {
                "registration_dgm_cc": 0.2,
                "registration_jacobian_p01": 0.1,
                "registration_jacobian_p99": 4.0,
                "registration_iron_contrast_ppb": 5.0,
            }
        )
    }
    mine = ("dgm_cc", "jacobian_p01", "jacobian_p99", "iron_contrast_ppb")
    assert all(poor[f"registration_{k}"] == "check" for k in mine), poor
    assert ok["gp_sign"]["status"] == "ok"
    # missing / NaN values are n/a, never a crash
    na = {r["key"]: r for r in evaluate_qc({"registration_brain_dice": float("nan")})}
    assert na["registration_brain_dice"]["status"] == "n/a"
    assert na["registration_brain_dice"]["value"] == "not available"
    assert na["mask_volume_ml"]["status"] == "n/a"

    out = tmp_path / "d"
    page = write_participant_report(
        _inputs(tmp_path, qc=qc, regional_table=_regional(gp_ppm=-0.1)), out
    )
    html = page.read_text(encoding="utf-8")
    assert html.count('class="badge warn">CHECK') == 5
    assert "5 quality check(s) flagged" in html
    assert "5 flag(s)" in html  # navigation badge


def test_sessions_are_sections_of_one_page(tmp_path: Path) -> None:
    out = tmp_path / "d"
    write_participant_report(_inputs(tmp_path, session="1", source_prefix="sub-01_ses-1"), out)
    page = write_participant_report(
        _inputs(
            tmp_path,
            session="ses-2",
            source_prefix="sub-01_ses-2_acq-fast",
            lesion_table=_lesions(),
            provenance={
                "version": "0.1.0",
                "errors": ["QSM failed: boom"],
                "crash_files": [str(out / "sub-01/log/crash-x.pklz")],
            },
        ),
        out,
    )
    refs = _parse(page)
    assert {"sub-01_ses-1", "sub-01_ses-2_acq-fast"} <= refs.ids
    assert "sub-01_ses-2_acq-fast-lesions" in refs.ids
    assert "sub-01_ses-1-lesions" not in refs.ids
    html = page.read_text(encoding="utf-8")
    assert html.index("sub-01_ses-1") < html.index("sub-01_ses-2_acq-fast")
    assert "QSM failed: boom" in html and 'href="sub-01/log/crash-x.pklz"' in html
    assert "1 error(s)" in html
    assert "2 GRE acquisitions" in html
    # 1 lesion row + 1 total row
    assert "1 lesion(s)" in html
    for src in refs.srcs:
        assert (out / src).is_file()
    # figures of both sessions live side by side
    figs = sorted(p.name for p in figures_dir(out, "01").glob("*chimap*"))
    assert figs == [
        "sub-01_ses-1_desc-chimap_report.png",
        "sub-01_ses-2_acq-fast_desc-chimap_report.png",
    ]


def test_rerun_is_idempotent_and_reassembly(tmp_path: Path) -> None:
    out = tmp_path / "d"
    inp = _inputs(tmp_path)
    page = write_participant_report(inp, out)
    first = page.read_bytes()
    figs1 = {p.name: p.read_bytes() for p in figures_dir(out, "01").iterdir()}
    write_participant_report(inp, out)
    assert page.read_bytes() == first
    assert {p.name: p.read_bytes() for p in figures_dir(out, "01").iterdir()} == figs1
    page.unlink()
    assert assemble_subject_report(out, "sub-01").read_bytes() == first


def test_figures_already_in_place_and_missing_files(tmp_path: Path) -> None:
    out = tmp_path / "d"
    fd = figures_dir(out, "01")
    fd.mkdir(parents=True)
    direct = _png(fd / "sub-01_desc-chimap_mosaic.png")
    inp = _inputs(
        tmp_path,
        figures={"chimap": direct, "mask": tmp_path / "does-not-exist.png", "extra_qc": None},
        regional_table=None,
    )
    page = write_participant_report(inp, out)
    html = page.read_text(encoding="utf-8")
    refs = _parse(page)
    # referenced in place, not duplicated
    assert refs.srcs == ["sub-01/figures/sub-01_desc-chimap_mosaic.png"]
    assert [p.name for p in fd.glob("*.png")] == ["sub-01_desc-chimap_mosaic.png"]
    assert html.count("Figure not produced") == 2
    assert "No regional table" in html


def _write_session(args: tuple[str, str]) -> str:
    tmp, ses = args
    inp = _inputs(Path(tmp), session=ses, source_prefix=f"sub-01_ses-{ses}")
    return str(write_participant_report(inp, Path(tmp) / "d"))


def test_parallel_sessions_all_reported(tmp_path: Path) -> None:
    """Two processes writing sessions of the same subject: both sections survive."""
    (tmp_path / "work").mkdir()
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        pool.map(_write_session, [(str(tmp_path), "a"), (str(tmp_path), "b")])
    html = (tmp_path / "d" / "sub-01.html").read_text(encoding="utf-8")
    assert 'id="sub-01_ses-a"' in html and 'id="sub-01_ses-b"' in html


@pytest.mark.parametrize("subject", ["01", "sub-01"])
def test_subject_label_prefix_optional(tmp_path: Path, subject: str) -> None:
    page = write_participant_report(_inputs(tmp_path, subject=subject), tmp_path / "d")
    assert page.name == "sub-01.html"
    assert re.search(r"<h1>sub-01</h1>", page.read_text(encoding="utf-8"))
