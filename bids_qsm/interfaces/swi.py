"""Nipype interface around :func:`bids_qsm.swi.pipeline.compute_swi`."""

from __future__ import annotations

import os

import numpy as np
from nipype.interfaces.base import (
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_qsm.interfaces.base import GreInputSpec
from bids_qsm.interfaces.nifti_io import load_array, load_json, save_array, save_json


class _SWIInputSpec(GreInputSpec):
    field_hz_file = File(exists=True, mandatory=True, desc="unwrapped combined field (Hz)")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    local_field_file = File(exists=True, desc="background-removed local field (ppm)")
    local_mask_file = File(exists=True, desc="mask of the local field (QSM mask)")
    r2star_file = File(desc="R2* (Hz) for the phase-quality mask")
    residual_file = File(exists=True, desc="relative echo-fit residual (quality map)")
    options = traits.Dict(desc="SWIOptions fields")


class _SWIOutputSpec(TraitedSpec):
    swi_file = File(exists=True, desc="susceptibility-weighted image")
    minip_file = File(exists=True, desc="minimum-intensity projection of the SWI")
    hpphase_file = File(exists=True, desc="high-pass filtered phase (rad, paramagnetic negative)")
    phaseiron_file = File(exists=True, desc="phase-iron map (rad, iron positive)")
    params_file = File(exists=True, desc="JSON: parameters and timings")


class ComputeSWI(SimpleInterface):
    """High-pass filtered phase, SWI, minIP and the phase-iron map."""

    input_spec = _SWIInputSpec
    output_spec = _SWIOutputSpec

    def _run_interface(self, runtime):
        from bids_qsm.swi.pipeline import SWIOptions, compute_swi

        mag, affine = load_array(self.inputs.mag_file)
        phase, _ = load_array(self.inputs.phase_file)
        field_hz, _ = load_array(self.inputs.field_hz_file)
        mask, _ = load_array(self.inputs.mask_file, bool)
        meta = load_json(self.inputs.meta_file)

        def optional(name: str, dtype: type = np.float32) -> np.ndarray | None:
            path = getattr(self.inputs, name)
            if not isdefined(path) or not path or not os.path.exists(path):
                return None
            return load_array(path, dtype)[0]

        res = compute_swi(
            mag,
            phase,
            meta["echo_times_s"],
            meta["voxel_size_mm"],
            mask,
            field_hz=field_hz,
            options=SWIOptions(**(self.inputs.options or {})),
            local_field_ppm=optional("local_field_file"),
            local_mask=optional("local_mask_file", bool),
            b0_tesla=float(meta.get("b0_tesla", 3.0)),
            r2star_hz=optional("r2star_file"),
            fit_residual=optional("residual_file"),
        )
        cwd = runtime.cwd
        self._results.update(
            swi_file=save_array(res.swi, affine, os.path.join(cwd, "swi.nii")),
            minip_file=save_array(res.minip, affine, os.path.join(cwd, "minip.nii")),
            hpphase_file=save_array(res.hp_phase_rad, affine, os.path.join(cwd, "hpphase.nii")),
            phaseiron_file=save_array(
                res.phase_iron_rad, affine, os.path.join(cwd, "phaseiron.nii")
            ),
            params_file=save_json(
                {"parameters": res.parameters, "timings_s": res.timings_s},
                os.path.join(cwd, "swi_params.json"),
            ),
        )
        return runtime
