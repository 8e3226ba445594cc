"""Nipype interface around :func:`bids_qsm.qsm.pipeline.reconstruct_qsm`."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_qsm.interfaces.nifti_io import load_array, load_json, save_array, save_json


class _QSMInputSpec(BaseInterfaceInputSpec):
    mag_file = File(exists=True, mandatory=True, desc="4D magnitude")
    phase_file = File(exists=True, mandatory=True, desc="4D phase (rad)")
    meta_file = File(exists=True, mandatory=True, desc="acquisition metadata JSON")
    options = traits.Dict(desc="QSMOptions fields (defaults for the rest)")
    mask_file = File(exists=True, desc="user brain mask replacing the automatic one")
    total_field_file = File(exists=True, desc="user total field (Hz) replacing the phase")
    local_field_file = File(exists=True, desc="user local field (ppm): no background removal")
    threads = traits.Int(2, usedefault=True, desc="FFT worker threads")


class _QSMOutputSpec(TraitedSpec):
    chi_file = File(exists=True, desc="susceptibility (ppm)")
    mask_file = File(exists=True, desc="mask in which chi is defined")
    brain_mask_file = File(exists=True, desc="brain mask before background-removal erosion")
    field_hz_file = File(exists=True, desc="combined unwrapped total field (Hz)")
    local_field_file = File(exists=True, desc="local field (ppm)")
    residual_file = File(exists=True, desc="relative echo-fit residual")
    combined_mag_file = File(exists=True, desc="SNR-weighted combined magnitude")
    r2star_file = File(desc="R2* (Hz); absent for single-echo data")
    t2star_file = File(desc="T2* (s); absent for single-echo data")
    params_file = File(exists=True, desc="JSON: parameters, reference value, timings")


class ReconstructQSM(SimpleInterface):
    """Mask, unwrap, combine echoes, remove the background field, invert, reference; R2*."""

    input_spec = _QSMInputSpec
    output_spec = _QSMOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from bids_qsm.qsm.pipeline import QSMOptions, reconstruct_qsm

        mag, affine = load_array(self.inputs.mag_file)
        phase, _ = load_array(self.inputs.phase_file)
        meta = load_json(self.inputs.meta_file)
        mask = None
        if isdefined(self.inputs.mask_file):
            import nibabel as nib

            from bids_qsm.interfaces.nifti_io import resample_mask_to

            # a user mask may come on another grid (e.g. from a T1w pipeline)
            ref = nib.Nifti1Image(np.zeros(mag.shape[:3], np.uint8), affine)
            mask = resample_mask_to(nib.load(self.inputs.mask_file), ref)
        fields = {}
        for name, key in (
            ("total_field_file", "total_field_hz"),
            ("local_field_file", "local_field_ppm"),
        ):
            path = getattr(self.inputs, name)
            if isdefined(path):
                arr, _ = load_array(path)
                if arr.shape[:3] != mag.shape[:3]:
                    from bids_qsm.errors import InputDataError

                    raise InputDataError(
                        f"field grid {arr.shape[:3]} differs from the GRE grid {mag.shape[:3]}",
                        path,
                    )
                fields[key] = arr
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
