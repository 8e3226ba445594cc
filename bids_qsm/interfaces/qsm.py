"""The QSM reconstruction as three Nipype nodes, so that a re-run only redoes what changed.

``PrepareQSMField`` (mask, phase offsets, unwrapping, echo fit, R2*, mask refinement) ->
``RemoveBackground`` (``options.bg_removal``) -> ``InvertField`` (``options.inversion``, the
reported-mask erosion, referencing). They call the stage functions of
:mod:`bids_qsm.qsm.stages` in the order :func:`bids_qsm.qsm.pipeline.reconstruct_qsm` does,
passing the arrays of the mask bounding box as float32 / uint8 NIfTI files (exact round trip),
so the outputs are those of :class:`ReconstructQSM` (all stages in one node). Each node
receives only the options of its stage (:func:`bids_qsm.qsm.pipeline.stage_options`):
changing ``--inversion`` reuses the cached field preparation and background removal.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
from nipype.interfaces.base import (
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_qsm.interfaces.base import GreInputSpec, MetaInputSpec, file_spec
from bids_qsm.interfaces.nifti_io import (
    load_array,
    load_json,
    load_optional,
    save_array,
    save_json,
)
from bids_qsm.qsm import stages
from bids_qsm.qsm.pipeline import QSMOptions, qsm_parameters, reconstruct_qsm


def user_qsm_inputs(inputs: Any) -> tuple:
    """(magnitude, affine, phase, metadata, user mask or None, user fields) of a QSM node.

    A user mask on another grid is resampled to the GRE grid; a user field on another grid is
    an :class:`~bids_qsm.errors.InputDataError` naming the file.
    """
    mag, affine = load_array(inputs.mag_file)
    phase, _ = load_array(inputs.phase_file)
    meta = load_json(inputs.meta_file)
    mask = None
    if isdefined(inputs.mask_file):
        import nibabel as nib

        from bids_qsm.interfaces.nifti_io import resample_mask_to

        # a user mask may come on another grid (e.g. from a T1w pipeline)
        ref = nib.Nifti1Image(np.zeros(mag.shape[:3], np.uint8), affine)
        mask = resample_mask_to(nib.load(inputs.mask_file), ref)
    fields = {}
    for name, key in (
        ("total_field_file", "total_field_hz"),
        ("local_field_file", "local_field_ppm"),
    ):
        path = getattr(inputs, name)
        if isdefined(path):
            arr, _ = load_array(path)
            if arr.shape[:3] != mag.shape[:3]:
                from bids_qsm.errors import InputDataError

                raise InputDataError(
                    f"field grid {arr.shape[:3]} differs from the GRE grid {mag.shape[:3]}",
                    path,
                )
            fields[key] = arr
    return mag, affine, phase, meta, mask, fields


#: Files of the QSM nodes -> description: the outputs of the one-node and the staged
#: reconstructions, and the inputs of the later stages.
_FILES: dict[str, str] = {
    "chi_file": "susceptibility (ppm)",
    "mask_file": "mask in which chi is defined",
    "brain_mask_file": "brain mask before background-removal erosion",
    "field_hz_file": "combined unwrapped total field (Hz)",
    "local_field_file": "local field (ppm)",
    "residual_file": "relative echo-fit residual",
    "combined_mag_file": "SNR-weighted combined magnitude",
    "r2star_file": "R2* (Hz); absent for single-echo data",
    "t2star_file": "T2* (s); absent for single-echo data",
    "params_file": "JSON: parameters, reference value, timings",
    "field_ppm_box_file": "total field (ppm) in the mask bounding box",
    "mask_box_file": "refined mask in the bounding box",
    "r2star_box_file": "R2* (Hz) in the bounding box (multi-echo; CSF reference)",
    "user_local_box_file": "user local field (ppm) in the bounding box: replaces background "
    "removal",
    "local_box_file": "local field (ppm) in the bounding box",
    "local_mask_box_file": "mask of the local field in the bounding box",
}
#: Files not written for single-echo data or without a user local field.
_MAY_BE_ABSENT = frozenset({"r2star_file", "t2star_file", "r2star_box_file", "user_local_box_file"})


def _spec(name: str, base: type, *names: str, mandatory: bool = False, **traits_: Any) -> type:
    """A spec of the :data:`_FILES` ``names`` (see :func:`~bids_qsm.interfaces.base.file_spec`)."""
    return file_spec(
        name,
        __name__,
        base,
        _FILES,
        names,
        mandatory=mandatory,
        may_be_absent=_MAY_BE_ABSENT,
        **traits_,
    )


class _QSMInputSpec(GreInputSpec):
    options = traits.Dict(desc="QSMOptions fields (defaults for the rest)")
    mask_file = File(exists=True, desc="user brain mask replacing the automatic one")
    total_field_file = File(exists=True, desc="user total field (Hz) replacing the phase")
    local_field_file = File(exists=True, desc="user local field (ppm): no background removal")
    threads = traits.Int(2, usedefault=True, desc="FFT worker threads")


#: Outputs of the whole QSM (:class:`ReconstructQSM`, and the workflow's QSM output node).
QSM_OUTPUTS: tuple[str, ...] = (
    "chi_file",
    "mask_file",
    "brain_mask_file",
    "field_hz_file",
    "local_field_file",
    "residual_file",
    "combined_mag_file",
    "r2star_file",
    "t2star_file",
    "params_file",
)
_QSMOutputSpec = _spec("_QSMOutputSpec", TraitedSpec, *QSM_OUTPUTS)


class ReconstructQSM(SimpleInterface):
    """All QSM stages in one node (:func:`~bids_qsm.qsm.pipeline.reconstruct_qsm`; the workflow
    uses the three staged nodes below, which give the same outputs)."""

    input_spec = _QSMInputSpec
    output_spec = _QSMOutputSpec

    def _run_interface(self, runtime):

        mag, affine, phase, meta, mask, fields = user_qsm_inputs(self.inputs)
        opts = QSMOptions(**(self.inputs.options or {}))
        res = reconstruct_qsm(
            mag,
            phase,
            meta["echo_times_s"],
            meta["b0_tesla"],
            meta["voxel_size_mm"],
            meta["b0_direction_voxel_axes"],
            options=opts,
            mask=mask,
            threads=self.inputs.threads,
            **fields,
        )
        cwd = runtime.cwd

        def out(name: str, arr, **kw) -> str:
            return save_array(arr, affine, os.path.join(cwd, f"{name}.nii"), **kw)

        self._results.update(
            chi_file=out("chi", res.chi_ppm),
            mask_file=out("mask", res.mask, dtype=np.uint8),
            brain_mask_file=out("brain_mask", res.brain_mask, dtype=np.uint8),
            field_hz_file=out("field_hz", res.field_hz),
            local_field_file=out("local_field_ppm", res.local_field_ppm),
            residual_file=out("fit_residual", res.fit_residual),
            combined_mag_file=out("combined_mag", res.combined_mag),
        )
        if res.r2star_hz is not None:
            self._results["r2star_file"] = out("r2star", res.r2star_hz)
            self._results["t2star_file"] = out("t2star", res.t2star_s)
        self._results["params_file"] = save_json(
            {
                "parameters": res.parameters,
                "reference_region": res.reference_region,
                "reference_value_ppm": float(res.reference_value_ppm),
                "timings_s": res.timings_s,
            },
            os.path.join(cwd, "qsm_params.json"),
        )
        return runtime


def _box(state: dict[str, Any]) -> tuple[slice, ...]:
    return tuple(slice(a, b) for a, b in state["box"])


def _acquisition(meta: dict[str, Any]) -> dict[str, Any]:
    """Echo times (s), voxel size (mm), unit B0 direction, exactly as ``prepare_inputs``."""
    b0 = np.asarray(meta["b0_direction_voxel_axes"], dtype=float)
    return {
        "te": [float(v) for v in meta["echo_times_s"]],
        "vs": np.asarray(meta["voxel_size_mm"], dtype=float),
        "b0": b0 / np.linalg.norm(b0),
        "b0_tesla": meta["b0_tesla"],
    }


_FieldOutputSpec = _spec(
    "_FieldOutputSpec",
    TraitedSpec,
    "brain_mask_file",
    "field_hz_file",
    "residual_file",
    "combined_mag_file",
    "r2star_file",
    "t2star_file",
    "field_ppm_box_file",
    "mask_box_file",
    "r2star_box_file",
    "user_local_box_file",
    state_file=File(exists=True, desc="JSON: box, grid shape, R2* limit, user inputs, timings"),
)


class PrepareQSMField(SimpleInterface):
    """Stage 1: inputs checked, brain mask, unwrapping and echo fit, R2*, refined mask."""

    input_spec = _QSMInputSpec
    output_spec = _FieldOutputSpec

    def _run_interface(self, runtime):

        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        last = [t0]

        def tick(name: str) -> None:
            now = time.perf_counter()
            timings[name] = timings.get(name, 0.0) + now - last[0]
            last[0] = now

        mag, affine, phase, meta, mask, fields = user_qsm_inputs(self.inputs)
        opt = QSMOptions(**(self.inputs.options or {}))
        inp = stages.prepare_inputs(
            mag, phase, meta["echo_times_s"], meta["voxel_size_mm"],
            meta["b0_direction_voxel_axes"], opt.phase_sign, **fields,
        )  # fmt: skip
        tick("prepare")
        bmask = stages.compute_mask(inp.combined, inp.vs, opt, mask)
        tick("mask")
        prep = stages.prepare_field(inp, bmask, meta["b0_tesla"], opt, self.inputs.threads, tick)
        box, cwd = prep.box, runtime.cwd

        def out(name: str, arr, **kw) -> str:
            return save_array(arr, affine, os.path.join(cwd, f"{name}.nii"), **kw)

        def full(x: np.ndarray) -> np.ndarray:
            o = np.zeros(inp.combined.shape, np.float32)
            o[box] = x
            return o

        res = self._results
        res.update(
            brain_mask_file=out("brain_mask", bmask.copy(), dtype=np.uint8),
            field_hz_file=out("field_hz", full(prep.fit.field_hz)),
            residual_file=out("fit_residual", full(prep.fit.residual)),
            combined_mag_file=out("combined_mag", inp.combined),
            field_ppm_box_file=out("field_ppm_box", prep.field_ppm),
            mask_box_file=out("mask_box", prep.mask, dtype=np.uint8),
        )
        if prep.r2star_hz is not None:
            res["r2star_file"] = out("r2star", full(prep.r2star_hz))
            res["t2star_file"] = out("t2star", full(prep.t2star_s))
            res["r2star_box_file"] = out("r2star_box", prep.r2star_hz)
        kind = inp.user_field[0] if inp.user_field else None
        if kind == "local":
            res["user_local_box_file"] = out("user_local_box", inp.user_field[1][box])
        state = {
            "box": [[s.start, s.stop] for s in box],
            "shape": list(inp.combined.shape),
            "r2star_limit_hz": float(prep.r2star_limit_hz),
            "user_field": kind,
            "user_mask": mask is not None,
            "timings_s": timings,
        }
        res["state_file"] = save_json(state, os.path.join(cwd, "qsm_field.json"))
        return runtime


class _StageInputSpec(MetaInputSpec):
    """Inputs of the stages after the first: the previous stage's state JSON, FFT threads."""

    state_file = File(exists=True, mandatory=True)
    threads = traits.Int(2, usedefault=True, desc="FFT worker threads")


class _QSMStage(SimpleInterface):
    """Base of the stages after the first (inputs: :class:`_StageInputSpec`).

    Each stage defines ``_run_stage(cwd, t0, state, acq, opt) -> dict``: its outputs (name ->
    file), written in ``cwd``; ``t0`` is the stage's start time (s). A subclass without it is
    refused when the class is defined.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not callable(vars(cls).get("_run_stage")):
            raise TypeError(f"{cls.__name__} must define _run_stage(cwd, t0, state, acq, opt)")

    def _stage_inputs(self) -> tuple[dict[str, Any], dict[str, Any], Any]:
        """The previous stage's state, the acquisition (:func:`_acquisition`), the options."""

        state = load_json(self.inputs.state_file)
        acq = _acquisition(load_json(self.inputs.meta_file))
        return state, acq, QSMOptions(**(self.inputs.options or {}))

    def _run_interface(self, runtime):
        t0 = time.perf_counter()
        state, acq, opt = self._stage_inputs()
        self._results.update(self._run_stage(runtime.cwd, t0, state, acq, opt))
        return runtime


def _unbox(state: dict[str, Any], x: Any, dtype: type) -> Any:
    """The bounding-box array ``x`` placed in the full grid of ``state`` (zeros outside)."""
    full = np.zeros(state["shape"], dtype)
    full[_box(state)] = x
    return full


_BackgroundInputSpec = _spec(
    "_BackgroundInputSpec",
    _StageInputSpec,
    "field_ppm_box_file",
    "mask_box_file",
    "user_local_box_file",
    mandatory=True,
    options=traits.Dict(desc="QSMOptions fields of background removal"),
)
_BackgroundOutputSpec = _spec(
    "_BackgroundOutputSpec",
    TraitedSpec,
    "local_box_file",
    "local_mask_box_file",
    "local_field_file",
    state_file=File(exists=True, desc="JSON: stage 1 state plus the V-SHARP radii, timings"),
)


class RemoveBackground(_QSMStage):
    """Stage 2: background field removal by the method of ``options.bg_removal``."""

    input_spec = _BackgroundInputSpec
    output_spec = _BackgroundOutputSpec

    def _run_stage(self, cwd: str, t0: float, state: dict, acq: dict, opt: Any) -> dict:
        field_ppm, affine = load_array(self.inputs.field_ppm_box_file)
        mask, _ = load_array(self.inputs.mask_box_file, bool)
        user_local = load_optional(self.inputs.user_local_box_file)
        local, f_mask, radii = stages.remove_background(
            field_ppm, mask, acq["vs"], acq["b0"], opt, self.inputs.threads, user_local
        )
        full = _unbox(state, local, np.float32)
        state["radii_mm"] = radii
        state["timings_s"]["background"] = time.perf_counter() - t0
        return {
            "local_box_file": save_array(local, affine, os.path.join(cwd, "local_box.nii")),
            "local_mask_box_file": save_array(
                f_mask, affine, os.path.join(cwd, "local_mask_box.nii"), dtype=np.uint8
            ),
            "local_field_file": save_array(full, affine, os.path.join(cwd, "local_field_ppm.nii")),
            "state_file": save_json(state, os.path.join(cwd, "qsm_background.json")),
        }


_InvertInputSpec = _spec(
    "_InvertInputSpec",
    _StageInputSpec,
    "local_box_file",
    "local_mask_box_file",
    "r2star_box_file",
    "combined_mag_file",
    mandatory=True,
    options=traits.Dict(desc="QSMOptions fields (all: the sidecar records every option)"),
)
_InvertOutputSpec = _spec("_InvertOutputSpec", TraitedSpec, "chi_file", "mask_file", "params_file")


class InvertField(_QSMStage):
    """Stage 3: dipole inversion (``options.inversion``), reported-mask erosion, referencing."""

    input_spec = _InvertInputSpec
    output_spec = _InvertOutputSpec

    def _run_stage(self, cwd: str, t0: float, state: dict, acq: dict, opt: Any) -> dict:
        local, _ = load_array(self.inputs.local_box_file)
        f_mask, _ = load_array(self.inputs.local_mask_box_file, bool)
        combined, affine = load_array(self.inputs.combined_mag_file)
        r2_box = load_optional(self.inputs.r2star_box_file)
        box = _box(state)
        chi, f_mask = stages.invert_field(
            local, f_mask, acq["vs"], acq["b0"], opt, self.inputs.threads, combined[box]
        )
        t1 = time.perf_counter()
        chi, ref_value = stages.reference_susceptibility(chi, f_mask, opt, None, r2_box)
        timings = state["timings_s"]
        timings.update(inversion=t1 - t0, reference=time.perf_counter() - t1)
        timings["total"] = sum(timings.values())

        def out(name: str, x: np.ndarray, dtype: type = np.float32) -> str:
            arr = _unbox(state, x, dtype)
            return save_array(arr, affine, os.path.join(cwd, f"{name}.nii"), dtype=dtype)

        params = qsm_parameters(
            opt, acq, state["user_field"], state["user_mask"], state["radii_mm"],
            state["r2star_limit_hz"], ref_value,
        )  # fmt: skip
        return dict(
            chi_file=out("chi", chi),
            mask_file=out("mask", f_mask, np.uint8),
            params_file=save_json(
                {
                    "parameters": params,
                    "reference_region": opt.reference,
                    "reference_value_ppm": float(ref_value),
                    "timings_s": timings,
                },
                os.path.join(cwd, "qsm_params.json"),
            ),
        )


__all__ = [
    "InvertField",
    "PrepareQSMField",
    "ReconstructQSM",
    "RemoveBackground",
    "user_qsm_inputs",
]
