"""Per-subject HTML report and methods boilerplate, built from the derivatives on disk.

Reading back the written derivatives (rather than node outputs) means ``--reports-only``
regenerates exactly the same report without re-running anything.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm import __version__
from bids_qsm.bids.derivatives import Derivatives, _software_versions
from bids_qsm.config import Config

LOGGER = logging.getLogger("bids_qsm.report")


def _read(path: Path) -> np.ndarray | None:
    return np.asarray(nib.load(str(path)).dataobj, dtype=np.float32) if path.is_file() else None


def _read_all(paths: dict[str, Path], threads: int = 2) -> dict[str, np.ndarray | None]:
    """:func:`_read` of every path, ``threads`` files decompressed at once (same arrays)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        return dict(zip(paths, pool.map(_read, paths.values()), strict=True))


def _sidecar(path: Path) -> dict[str, Any]:
    side = path.with_name(path.name.replace(".nii.gz", ".json"))
    return json.loads(side.read_text()) if side.is_file() else {}


def registration_quality(reg: dict[str, Any]) -> str:
    """The registration preset recorded in an ``AtlasRegistration`` sidecar entry."""
    params = (reg.get("parameters") or {}).get("RegistrationParams") or {}
    return str(params.get("quality", "default"))


def _atlas_name(config: Config) -> str:
    return config.workflow.atlas_spec().name


def pipeline_parameters(
    config: Config, chi_sidecar: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The nested parameters dict of the methods boilerplate (from a run, else the config)."""
    from bids_qsm.qsm.pipeline import QSMOptions
    from bids_qsm.swi.pipeline import SWIOptions

    side = chi_sidecar or {}
    qsm = dict(side.get("QSMPipeline") or QSMOptions(**config.workflow.qsm_options()).to_dict())
    if "ReferenceValue" in side:
        qsm["reference_value_ppm"] = side["ReferenceValue"]
    reg = side.get("AtlasRegistration") or {}
    atlas = {
        "name": _atlas_name(config),
        "template": reg.get("template", "MNI152NLin6Asym"),
        "skipped": bool(reg.get("skipped", config.workflow.skip_registration)),
        **(reg.get("parameters") or {}),
    }
    return {
        "qsm": qsm,
        "swi": SWIOptions(**config.workflow.swi_options()).to_dict(),
        "atlas": atlas,
        "software": side.get("ProcessingSoftware") or _software_versions(),
    }


#: Sidecar keys that describe one subject, not the run (left out of CITATION.md).
_SUBJECT_KEYS = ("ReferenceValue", "StageTimings", "B0DirectionVoxelAxes")


def write_citation(config: Config, out_dir: Path) -> Path:
    """``OUTPUT_DIR/logs/CITATION.md`` from the parameters actually used (or configured)."""
    from bids_qsm.reports.boilerplate import write_citation_files

    chi_side: dict[str, Any] | None = None
    for chi in sorted(Path(out_dir).glob("sub-*/**/anat/*_Chimap.json")):
        chi_side = json.loads(chi.read_text())
        break
    if chi_side is not None:
        # run-wide text: nothing of one subject (its reference value, its registration
        # quality), so that the file is the same whichever job writes it
        chi_side = {k: v for k, v in chi_side.items() if k not in _SUBJECT_KEYS}
        reg = dict(chi_side.get("AtlasRegistration") or {})
        chi_side["AtlasRegistration"] = {
            k: v for k, v in reg.items() if k in ("template", "parameters")
        }
    return write_citation_files(
        pipeline_parameters(config, chi_side), __version__, out_dir / "logs"
    )


def acquisition_figures(
    config: Config, acq: Any, out_dir: Path
) -> tuple[dict[str, Path], dict[str, Any], list[str], pd.DataFrame | None, pd.DataFrame | None]:
    """Figures, QC values, warnings and tables of one acquisition's derivatives."""
    from bids_qsm.reports import figures as F

    src = acq.source_prefix
    atlas = _atlas_name(config)

    dpath = Derivatives(out_dir, src, atlas).path
    chi_path = dpath("chi")
    if not chi_path.is_file():
        raise FileNotFoundError(f"{chi_path}: no susceptibility map to report on")
    chi_img = nib.load(str(chi_path))
    affine, vs = chi_img.affine, chi_img.header.get_zooms()[:3]
    maps = _read_all(
        {k: dpath(k) for k in ("chi", "mask", "dseg", "mag", "minip", "r2star", "phaseiron")}
    )
    chi = maps["chi"]  # present: checked above
    mask = maps["mask"] > 0 if maps["mask"] is not None else chi != 0
    labels = maps["dseg"].astype(np.int32) if maps["dseg"] is not None else None
    side = _sidecar(chi_path)

    fig_dir = Path(out_dir) / f"sub-{acq.subject}" / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    common = {"affine": affine}
    names: dict[int, str] = {}
    if labels is not None:
        # group the atlas labels into the reported structures (thalamus, caudate, ...) BEFORE
        # any figure, so that the slices span the deep gray matter (not the whole-brain atlas)
        # and the legend stays readable
        tsv = dpath("dseg_table")
        table = pd.read_csv(tsv, sep="\t") if tsv.is_file() else pd.DataFrame()
        labels, names = F.structure_labels_from_table(labels, table)
    figs["chimap"] = F.chimap_mosaic(
        chi, mask, vs, fig_dir / f"{src}_desc-chimap_mosaic.png", labels=labels, **common
    )
    mag = maps["mag"]
    if mag is not None:
        figs["mask"] = F.mask_outline(
            mag, mask, vs, fig_dir / f"{src}_desc-mask_outline.png", **common
        )
    if labels is not None:
        figs["atlas"] = F.atlas_overlay(
            chi, labels, vs, fig_dir / f"{src}_desc-atlas_overlay.png", names, mask=mask, **common
        )
    reg_fig = fig_dir / f"{src}_desc-registration_qc.png"
    if reg_fig.is_file():
        figs["registration"] = reg_fig
    minip = maps["minip"]
    if minip is not None:
        figs["minip"] = F.minip_figure(
            minip, vs, fig_dir / f"{src}_desc-minip.png", mask=mask, **common
        )
    r2s = maps["r2star"]
    if r2s is not None:
        figs["r2star"] = F.r2star_figure(
            r2s, mask, vs, fig_dir / f"{src}_desc-r2star.png", labels=labels, **common
        )
    piron = maps["phaseiron"]
    if piron is not None:
        figs["phaseiron"] = F.phase_iron_figure(
            piron, mask, vs, fig_dir / f"{src}_desc-phaseiron.png", labels=labels, **common
        )

    reg = side.get("AtlasRegistration") or {}
    warnings: list[str] = []
    if reg.get("skipped"):
        warnings.append(f"Atlas registration skipped: {reg.get('reason', 'no reason recorded')}.")
    if registration_quality(reg) == "sloppy":
        warnings.append(
            "Atlas registration run with --sloppy (fast, lower quality: fewer iterations): "
            "for demos and tests only, do not use these regional values in a study."
        )
    in_mask = chi[mask]
    qc: dict[str, Any] = {
        "mask_volume_ml": float(mask.sum() * float(np.prod(vs)) / 1000.0),
        "reference_region": side.get("ReferenceRegion", "n/a"),
        "reference_value_ppm": side.get("ReferenceValue", float("nan")),
        "frac_abs_chi_gt_0p5": float(np.mean(np.abs(in_mask) > 0.5)) if in_mask.size else 0.0,
        "registration_brain_dice": reg.get("brain_dice", float("nan")),
        "registration_dgm_cc": (reg.get("qc") or {}).get("dgm_local_cc", float("nan")),
        "registration_jacobian_p01": (reg.get("qc") or {}).get("jacobian_p01", float("nan")),
        "registration_jacobian_p99": (reg.get("qc") or {}).get("jacobian_p99", float("nan")),
        "registration_iron_contrast_ppb": (reg.get("qc") or {}).get(
            "iron_contrast_min_ppb", float("nan")
        ),
        "n_echoes": len(side.get("EchoTime", [])),
        "te_ms": ", ".join(f"{1000 * t:.2f}" for t in side.get("EchoTime", [])),
        "b0_tesla": side.get("MagneticFieldStrength", float("nan")),
        "voxel_size_mm": " x ".join(f"{v:.2f}" for v in vs),
        "b0_dir": ", ".join(f"{v:.3f}" for v in side.get("B0DirectionVoxelAxes", [])),
        "phase_units": side.get("PhaseUnitsDetected", "n/a"),
    }
    stats_tsv = dpath("stats")
    regional = pd.read_csv(stats_tsv, sep="\t") if stats_tsv.is_file() else None
    lesion_tsv = dpath("lesions")
    lesions = pd.read_csv(lesion_tsv, sep="\t") if lesion_tsv.is_file() else None
    return figs, qc, warnings, regional, lesions


def write_subject_report(
    config: Config, subject: str, acquisitions: list[Any], out_dir: Path
) -> Path:
    """Build ``OUTPUT_DIR/sub-<label>.html`` with one section per acquisition."""
    from bids_qsm.reports.boilerplate import methods_boilerplate
    from bids_qsm.reports.participant import ReportInputs, write_participant_report

    report: Path | None = None
    log_dir = Path(out_dir) / f"sub-{subject}" / "log" / config.execution.run_id
    for acq in acquisitions:
        figs, qc, warnings, regional, lesions = acquisition_figures(config, acq, out_dir)
        chi_side = _sidecar(Derivatives(out_dir, acq.source_prefix).path("chi"))
        params = pipeline_parameters(config, chi_side)
        params["acquisition"] = {
            "n_echoes": qc["n_echoes"],
            "echo_times_s": chi_side.get("EchoTime"),
            "b0_tesla": chi_side.get("MagneticFieldStrength"),
        }
        inputs = ReportInputs(
            subject=subject,
            session=acq.session,
            source_prefix=acq.source_prefix,
            figures=figs,
            regional_table=regional,
            lesion_table=lesions,
            qc=qc,
            warnings=warnings,
            methods_markdown=methods_boilerplate(params, __version__),
            # Nothing run-specific (run id, timings, run log folder) unless the run failed,
            # so that a re-run with the same inputs rewrites the page byte for byte; the
            # timings are in <log folder>/stage_timings.json.
            provenance={
                "version": __version__,
                "command": " ".join(sys.argv),
                "software": chi_side.get("ProcessingSoftware", {}),
                "crash_files": sorted(
                    str(p) for p in (log_dir.glob("crash-*") if log_dir.is_dir() else [])
                ),
                "log_dir": str(log_dir.parent),
            },
        )
        report = write_participant_report(inputs, out_dir)
    if report is None:
        raise ValueError(f"sub-{subject}: no acquisition to report on")
    return report


def write_failure_report(
    config: Config, subject: str, acquisitions: list[Any], out_dir: Path, reason: str
) -> Path:
    """``OUTPUT_DIR/sub-<label>.html`` saying that the subject failed, why, and where to look.

    One "Processing failed" section per acquisition of the subject (replacing its previous
    section: the failed run may have left partial derivatives); the crash files are linked.
    """
    from bids_qsm.reports.participant import (
        _SECTION_SUFFIX,
        _esc,
        _section_id,
        assemble_subject_report,
        figures_dir,
    )

    log_dir = Path(out_dir) / f"sub-{subject}" / "log" / config.execution.run_id
    crash = sorted(log_dir.glob("crash-*")) if log_dir.is_dir() else []
    figdir = figures_dir(out_dir, subject)
    figdir.mkdir(parents=True, exist_ok=True)
    links = "".join(
        f'<li>Crash file: <a href="{_esc(os.path.relpath(c, out_dir))}">{_esc(c.name)}</a></li>'
        for c in crash
    )
    for acq in acquisitions or [None]:
        prefix = acq.source_prefix if acq is not None else f"sub-{subject}"
        sid = _section_id(prefix)
        meta = {
            "prefix": prefix,
            "id": sid,
            "n_flags": 0,
            "n_warnings": 0,
            "n_errors": 1,
            "parts": [["failed", "Processing failed"]],
        }
        body = (
            f'<section id="{sid}-failed" class="card"><h3>Processing failed</h3>'
            f'<p class="status err">sub-{_esc(subject)} failed in run '
            f"{_esc(config.execution.run_id)}: {_esc(reason)}</p>"
            f'<ul class="errors">{links}</ul><p class="muted">Full log: '
            f"<code>{_esc(log_dir / 'bids_qsm.log')}</code>. No derivative of this acquisition "
            "is reported; fix the cause and re-run (finished stages are reused from the work "
            "directory).</p></section>"
        )
        frag = (
            f"<!-- bids-qsm-section {json.dumps(meta, sort_keys=True)} -->\n"
            f'<div class="acq" id="{sid}"><h2>{_esc(prefix)}</h2>\n{body}\n</div>\n'
        )
        (figdir / f"{prefix}{_SECTION_SUFFIX}").write_text(frag, encoding="utf-8")
    return assemble_subject_report(out_dir, subject, version=__version__)
