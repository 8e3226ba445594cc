"""Participant level, several sessions: one subject space, one atlas registration, one table.

When a subject has GRE data in two or more sessions (one acquisition per session: the first
acq/run in sorted order), the per-session workflows run as for one session except the atlas
registration, which is deferred (:func:`defer_registration`). After them,
:func:`run_longitudinal` works from the written derivatives:

1. the rigid midpoint space of the sessions (:mod:`bids_qsm.atlas.subject_space`) from their
   combined GRE magnitudes and brain masks;
2. every session's Chimap, R2*, phase-iron, magnitude and mask resampled into it once;
3. the subject template: the mean of the sessions' magnitudes (each scaled to a brain median
   of 1) in the mean mask (>= 0.5), with the mean susceptibility as iron channel and, when
   present, the subject's T1w (moved into subject space by its session's rigid map, header
   only);
4. the atlas registered ONCE to that template (:func:`bids_qsm.atlas.registration.
   register_atlas`, the same method and parameters as a single session);
5. regional values of every session from the same labels and the same voxels (the common
   mask of all sessions) -> ``sub-<l>_desc-longitudinal_stats.tsv`` with the days from
   baseline (``sub-<l>_sessions.tsv`` acq_time) and the change per year;
6. per session, the labels carried back to its GRE grid (nearest neighbour) and its usual
   regional table (``<src>_seg-<atlas>_stats.tsv``, same algorithm as a single session).

Single-session subjects never reach this module.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from bids_qsm.bids.writers import (
    atomic_copy,
    atomic_path,
    atomic_save_nifti,
    atomic_write_json,
    derivative_path,
)

LOGGER = logging.getLogger("bids_qsm.longitudinal")

#: Why the per-session registration did not run (recorded in the session sidecars).
DEFERRED_REASON = (
    "longitudinal subject: the atlas is registered once to the subject template "
    "(see sub-<label>_space-subject_seg-<atlas>_dseg.json)"
)

#: (key, suffix, entities, units) of the per-session maps resampled into subject space.
SUBJECT_SPACE_MAPS: tuple[tuple[str, str, dict[str, str], str | None], ...] = (
    ("chi", "Chimap", {}, "ppm"),
    ("r2star", "R2starmap", {}, "Hz"),
    ("phaseiron", "T2starw", {"desc": "phaseiron"}, "rad"),
    ("mask", "mask", {"desc": "brain"}, None),
)


def session_acquisitions(acquisitions: Sequence[Any]) -> list[Any]:
    """One acquisition per session (first acq/run), sorted by session; [] if < 2 sessions."""
    first: dict[str, Any] = {}
    for acq in sorted(acquisitions, key=lambda a: a.source_prefix):
        if acq.session and acq.session not in first:
            first[acq.session] = acq
    return [first[s] for s in sorted(first)] if len(first) >= 2 else []


def defer_registration(gre_wf: Any) -> None:
    """Skip the atlas registration node of one session's workflow (done once per subject)."""
    node = gre_wf.get_node("atlas_wf.register")
    node.inputs.skip = True
    node.inputs.skip_reason = DEFERRED_REASON


def _files(out: Path, acq: Any) -> dict[str, Path]:
    pre = acq.source_prefix
    return {
        "mag": derivative_path(out, pre, "T2starw", desc="mag"),
        "mask": derivative_path(out, pre, "mask", desc="brain"),
        "chi": derivative_path(out, pre, "Chimap"),
        "r2star": derivative_path(out, pre, "R2starmap"),
        "phaseiron": derivative_path(out, pre, "T2starw", desc="phaseiron"),
        "hpphase": derivative_path(out, pre, "T2starw", desc="hpphase"),
    }


def _read_sessions_tsv(bids_dir: Path, subject: str) -> pd.DataFrame | None:
    path = Path(bids_dir) / f"sub-{subject}" / f"sub-{subject}_sessions.tsv"
    if not path.is_file():
        return None
    from bids_qsm.stats.group import read_tsv

    return read_tsv(path)


def _sidecar(path: Path) -> dict[str, Any]:
    import json

    side = path.with_name(path.name.replace(".nii.gz", ".json"))
    return json.loads(side.read_text()) if side.is_file() else {}


def _save(data: np.ndarray, affine: np.ndarray, path: Path, dtype: type, meta: dict) -> Path:
    img = nib.Nifti1Image(np.asarray(data).astype(dtype), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    atomic_save_nifti(img, path)
    atomic_write_json(path.with_name(path.name.replace(".nii.gz", ".json")), meta)
    return path


def _resample_sessions(space: Any, files: list[dict[str, Path]]) -> dict[str, list]:
    """Every session's maps on the subject grid (None for a map a session lacks)."""
    out: dict[str, list] = {k: [] for k in ("mag", "mask", "chi", "r2star", "phaseiron")}
    for k, f in enumerate(files):
        mask = np.asarray(nib.load(str(f["mask"])).dataobj) > 0
        mag = np.asarray(nib.load(str(f["mag"])).dataobj, np.float32)
        med = float(np.median(mag[mask])) if mask.any() else 1.0
        out["mag"].append(space.resample(mag / max(med, 1e-12), k))
        out["mask"].append(space.resample_mask(mask, k))
        for key in ("chi", "r2star", "phaseiron"):
            if f[key].is_file():
                arr = np.asarray(nib.load(str(f[key])).dataobj, np.float32)
                out[key].append(space.resample(np.where(mask, arr, 0.0), k))
            else:
                out[key].append(None)
    return out


def _register_template(config: Any, subject: str, template: nib.Nifti1Image,
                       tmask: nib.Nifti1Image, iron: nib.Nifti1Image, t1w: Any,
                       work: Path, threads: int):  # fmt: skip
    """The atlas registered once to the subject template (None when skipped)."""
    from bids_qsm.atlas.registration import register_atlas
    from bids_qsm.atlas.stages import registration_params
    from bids_qsm.interfaces.atlas import registration_feasible
    from bids_qsm.workflows.specs import atlas_from_spec, atlas_spec_from_config

    if config.workflow.skip_registration:
        return None, "registration skipped on request (--skip-registration)"
    ok, why = registration_feasible(np.asarray(tmask.dataobj) > 0, tmask.header.get_zooms()[:3])
    if not ok:
        return None, why
    atlas = atlas_from_spec(atlas_spec_from_config(config.workflow))
    reg = register_atlas(
        template, tmask, atlas, out_dir=work, prefix=f"sub-{subject}_space-subject",
        t1w=t1w, threads=threads, seed=int(config.execution.random_seed or 0), iron=iron,
        params=registration_params(bool(config.workflow.sloppy)),
    )  # fmt: skip
    return reg, ""


def run_longitudinal(config: Any, subject: str, acquisitions: Sequence[Any], threads: int = 1
                     ) -> Path | None:  # fmt: skip
    """Subject space, one atlas registration and the longitudinal table (see module doc).

    Returns the path of ``sub-<l>_desc-longitudinal_stats.tsv`` (None: not longitudinal).
    """
    from bids_qsm.atlas.subject_space import RIGID_PARAMETERS, build_subject_space

    accs = session_acquisitions(acquisitions)
    if not accs:
        return None
    t_all = time.perf_counter()
    out = Path(config.execution.output_dir)
    files = [_files(out, a) for a in accs]
    space = build_subject_space(
        [nib.load(str(f["mag"])) for f in files],
        [nib.load(str(f["mask"])) for f in files],
        threads=threads,
        seed=int(config.execution.random_seed or 0),
    )
    t0 = time.perf_counter()
    maps = _resample_sessions(space, files)
    space.timings_s["resample"] = round(time.perf_counter() - t0, 2)
    aff = space.affine
    common = np.logical_and.reduce(maps["mask"])
    tmask = np.mean(maps["mask"], axis=0) >= 0.5
    template = np.mean(maps["mag"], axis=0) * tmask
    chis = [c for c in maps["chi"] if c is not None]
    iron = np.mean(chis, axis=0) * tmask
    t1w = None
    for k, a in enumerate(accs):
        if a.t1w:
            t1w = space.image_to_subject(nib.load(str(a.t1w)), k)
            break
    sub_anat = out / f"sub-{subject}" / "anat"
    work = Path(config.execution.work_dir or out.parent / "work" / out.name)
    work = work / f"sub_{subject}_longitudinal"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    reg, skip_reason = _register_template(
        config, subject, nib.Nifti1Image(template.astype(np.float32), aff),
        nib.Nifti1Image(tmask.astype(np.uint8), aff), nib.Nifti1Image(iron.astype(np.float32), aff),
        t1w, work, threads,
    )  # fmt: skip
    space.timings_s["atlas_registration"] = round(time.perf_counter() - t0, 2)
    labels = reg.labels if reg is not None else np.zeros(space.shape, np.int32)
    method = {
        "SubjectSpace": "rigid midpoint of the sessions (docs/outputs.md, Longitudinal)",
        "RigidRegistration": RIGID_PARAMETERS,
        "Sessions": [f"ses-{a.session}" for a in accs],
        "SessionSources": [a.source_prefix for a in accs],
        "SubjectToSessionMatrices": {
            f"ses-{a.session}": np.round(m, 6).tolist()
            for a, m in zip(accs, space.to_session, strict=True)
        },
        "AtlasRegistration": (
            {"skipped": True, "reason": skip_reason}
            if reg is None
            else {
                "skipped": False,
                "parameters": reg.parameters,
                "qc": reg.qc,
                "brain_dice": float(reg.brain_dice),
            }
        ),  # fmt: skip
    }
    written = _write_subject_outputs(
        config, subject, accs, space, maps, template, tmask, common, labels, reg, method, sub_anat
    )
    table = _longitudinal_table(config, subject, accs, maps, labels, common, aff, method)
    written.append(table)
    _rewrite_session_tables(config, accs, files, space, labels, reg is not None, method)
    space.timings_s["total"] = round(time.perf_counter() - t_all, 2)
    log_dir = out / f"sub-{subject}" / "log" / str(config.execution.run_id)
    atomic_write_json(log_dir / "longitudinal_timings.json", space.timings_s)
    LOGGER.info(
        "sub-%s: longitudinal (%d sessions) in %.1f s: %s",
        subject, len(accs), space.timings_s["total"], table,
    )  # fmt: skip
    return table


def _atlas_name(config: Any) -> str:
    wf = config.workflow
    return str(wf.atlas_name if wf.custom_atlas else wf.atlas)


def _write_subject_outputs(config: Any, subject: str, accs: Sequence[Any], space: Any,
                           maps: dict[str, list], template: np.ndarray, tmask: np.ndarray,
                           common: np.ndarray, labels: np.ndarray, reg: Any, method: dict,
                           sub_anat: Path) -> list[Path]:  # fmt: skip
    """Subject template, masks, labels, transforms, QC figure and per-session subject maps."""
    aff = space.affine
    pre = f"sub-{subject}_space-subject"
    atlas = _atlas_name(config)
    written = [
        _save(template, aff, sub_anat / f"{pre}_desc-mag_T2starw.nii.gz", np.float32,
              {"Description": "subject template: mean of the sessions' combined GRE magnitudes "
               "(each scaled to a brain median of 1) in subject space", **method}),
        _save(tmask, aff, sub_anat / f"{pre}_desc-brain_mask.nii.gz", np.uint8,
              {"Type": "Brain", "Description": "mean of the sessions' brain masks >= 0.5"}),
        _save(common, aff, sub_anat / f"{pre}_desc-common_mask.nii.gz", np.uint8,
              {"Type": "Brain", "Description": "voxels inside every session's brain mask: "
               "the voxels of the longitudinal regional values"}),
    ]  # fmt: skip
    if reg is not None:
        written.append(
            _save(labels, aff, sub_anat / f"{pre}_seg-{atlas}_dseg.nii.gz", np.int16,
                  {"Description": f"{atlas} labels registered once to the subject template",
                   "Atlas": atlas, **method})
        )  # fmt: skip
        for src in reg.transforms.values():
            name = Path(src).name.replace(f"{pre}_from-GRE_", f"sub-{subject}_from-subject_")
            name = name.replace("_to-GRE_", "_to-subject_").replace(f"{pre}_", f"sub-{subject}_")
            written.append(atomic_copy(Path(src), sub_anat / name))
        from bids_qsm.atlas.qc import registration_figure
        from bids_qsm.workflows.specs import atlas_from_spec, atlas_spec_from_config

        fig_dir = Path(config.execution.output_dir) / f"sub-{subject}" / "figures"
        out_fig = fig_dir / f"{pre}_desc-registration_qc.png"
        with atomic_path(out_fig) as tmp:
            registration_figure(
                nib.Nifti1Image(template.astype(np.float32), aff), reg, tmp,
                structures=atlas_from_spec(atlas_spec_from_config(config.workflow)).structures,
            )  # fmt: skip
        written.append(out_fig)
    out = Path(config.execution.output_dir)
    for k, a in enumerate(accs):
        for key, suffix, ents, units in SUBJECT_SPACE_MAPS:
            data = maps[key][k]
            if data is None:
                continue
            path = derivative_path(out, a.source_prefix, suffix, space="subject", **ents)
            meta = {
                "Description": f"{suffix} of ses-{a.session} resampled once into the subject "
                "space (rigid midpoint of the sessions)",
                "Sources": [str(derivative_path(out, a.source_prefix, suffix, **ents).name)],
                "SubjectToSessionMatrix": np.round(space.to_session[k], 6).tolist(),
                "Interpolation": "trilinear" if key != "mask" else "trilinear > 0.5",
            }
            if units:
                meta["Units"] = units
            dtype = np.uint8 if key == "mask" else np.float32
            written.append(_save(data, aff, path, dtype, meta))
    return written


def _longitudinal_table(config: Any, subject: str, accs: Sequence[Any], maps: dict[str, list],
                        labels: np.ndarray, common: np.ndarray, aff: np.ndarray,
                        method: dict) -> Path:  # fmt: skip
    """``sub-<l>_desc-longitudinal_stats.tsv`` (+ .json) from the subject-space maps."""
    from bids_qsm.stats.longitudinal import CHANGE_COLUMNS, change_table, session_times
    from bids_qsm.stats.regional import Entities, regional_table
    from bids_qsm.workflows.specs import atlas_from_spec, atlas_spec_from_config

    structures = []
    if labels.any():
        structures = atlas_from_spec(atlas_spec_from_config(config.workflow)).structures
    vox = float(np.prod(np.sqrt((aff[:3, :3] ** 2).sum(0))))
    per_session = {}
    for k, a in enumerate(accs):
        ent = Entities(f"sub-{subject}", f"ses-{a.session}", a.acq, a.run)
        per_session[f"ses-{a.session}"] = regional_table(
            maps["chi"][k], labels, common, structures, vox, ent, _atlas_name(config),
            r2star_hz=maps["r2star"][k], phase_iron_rad=maps["phaseiron"][k],
        )  # fmt: skip
    times = session_times(
        _read_sessions_tsv(Path(config.execution.bids_dir), subject), [a.session for a in accs]
    )
    if times["days_from_baseline"].isna().any():
        LOGGER.warning(
            "sub-%s: no acq_time for some sessions in sub-%s_sessions.tsv: no change per year",
            subject, subject,
        )  # fmt: skip
    table = change_table(per_session, times).assign(participant_id=f"sub-{subject}")
    path = Path(config.execution.output_dir) / f"sub-{subject}" / "anat"
    path = path / f"sub-{subject}_desc-longitudinal_stats.tsv"
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
    side = {**CHANGE_COLUMNS, "Method": method}
    atomic_write_json(path.with_suffix(".json"), side)
    return path


def _rewrite_session_tables(config: Any, accs: Sequence[Any], files: list[dict[str, Path]],
                            space: Any, labels: np.ndarray, registered: bool,
                            method: dict) -> None:  # fmt: skip
    """Per session: template labels on its GRE grid and its usual regional table."""
    from bids_qsm.interfaces.stats import RegionalStats
    from bids_qsm.stats.regional import COLUMN_DESCRIPTIONS
    from bids_qsm.workflows.participant import apt_threshold
    from bids_qsm.workflows.specs import atlas_from_spec, atlas_spec_from_config

    if not registered:
        return
    out = Path(config.execution.output_dir)
    atlas = _atlas_name(config)
    spec = atlas_spec_from_config(config.workflow)
    template_name = atlas_from_spec(spec).template_name
    for k, (a, f) in enumerate(zip(accs, files, strict=True)):
        lab = space.labels_to_session(labels, k)
        ref = nib.load(str(f["mask"]))
        dseg = derivative_path(out, a.source_prefix, "dseg", seg=atlas)
        _save(lab, ref.affine, dseg, np.int16, {
            "Description": f"{atlas} labels registered once to the subject template, carried "
            "to this session's GRE grid (rigid, nearest neighbour)", "Atlas": atlas,
            "Registration": method["AtlasRegistration"], "SubjectSpace": method["SubjectSpace"],
        })  # fmt: skip
        chi_side = _sidecar(f["chi"])
        _record_template_registration(f["chi"], chi_side, method, atlas, template_name)
        with tempfile.TemporaryDirectory(prefix="bids-qsm-long-") as tmpd:
            params = Path(tmpd) / "qsm.json"
            params.write_text(pd.Series({
                "reference_region": chi_side.get("ReferenceRegion", "n/a"),
                "reference_value_ppm": chi_side.get("ReferenceValue", np.nan),
            }).to_json())  # fmt: skip
            opt = {k2: str(f[k2]) for k2 in ("r2star", "hpphase", "phaseiron") if f[k2].is_file()}
            node = RegionalStats(
                chi_file=str(f["chi"]), mask_file=str(f["mask"]), qsm_params_file=str(params),
                dseg_file=str(dseg), atlas=spec, apt_threshold_rad=apt_threshold(config),
                entities={"participant_id": f"sub-{a.subject}", "session_id": f"ses-{a.session}",
                          "acq": a.acq, "run": a.run},
                **{f"{k2}_file": v for k2, v in opt.items()},
            )  # fmt: skip
            res = node.run(cwd=tmpd)
            dst = derivative_path(out, a.source_prefix, "stats", ".tsv", seg=atlas)
            atomic_copy(Path(res.outputs.stats_file), dst)
            header = Path(dst).read_text().splitlines()[0].split("\t")
            cols = {c: COLUMN_DESCRIPTIONS.get(c, {"Description": c}) for c in header}
            atomic_write_json(dst.with_suffix(".json"), cols)


def _record_template_registration(
    chi: Path, chi_side: dict, method: dict, atlas: str, template: str
) -> None:
    """Replace a session Chimap sidecar's deferred-registration entry by the registration
    done once to the subject template (so the report and the methods text describe it)."""
    reg = dict(method["AtlasRegistration"])
    if reg.get("skipped"):
        return
    chi_side["AtlasRegistration"] = {
        **{k: v for k, v in reg.items() if k != "timings_s"},
        "atlas": atlas,
        "template": template,
        "space": "subject template (rigid midpoint of the sessions); labels carried to this "
        "session rigidly",
    }
    atomic_write_json(chi.with_name(chi.name.replace(".nii.gz", ".json")), chi_side)
