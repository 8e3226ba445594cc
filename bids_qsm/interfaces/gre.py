"""Nipype interface that loads one GRE acquisition into 4D magnitude and phase (rad) images."""

from __future__ import annotations

import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_qsm.interfaces.nifti_io import save_array, save_json


class _LoadGREInputSpec(BaseInterfaceInputSpec):
    acquisition = traits.Dict(
        mandatory=True, desc="GreAcquisition as a dict (see acquisition_to_dict)"
    )
    b0_tesla = traits.Either(
        None, traits.Float, default=None, usedefault=True, desc="B0 override (T)"
    )
    threads = traits.Int(1, usedefault=True, desc="files decompressed at once (threads)")


class _LoadGREOutputSpec(TraitedSpec):
    mag_file = File(exists=True, desc="4D magnitude (X,Y,Z,echo), float32")
    phase_file = File(exists=True, desc="4D phase in rad [-pi, pi), float32")
    meta_file = File(
        exists=True, desc="JSON: echo times (s), B0 (T), voxel size (mm), B0 direction"
    )


class LoadGRE(SimpleInterface):
    """Read, check and convert an acquisition (mag/phase or real/imag; 3D echoes or one 4D file)."""

    input_spec = _LoadGREInputSpec
    output_spec = _LoadGREOutputSpec

    def _run_interface(self, runtime):
        from bids_qsm.bids.loading import load_gre
        from bids_qsm.specs import acquisition_from_dict

        acq = acquisition_from_dict(self.inputs.acquisition)
        gre = load_gre(
            acq, b0_tesla_override=self.inputs.b0_tesla, threads=int(self.inputs.threads)
        )
        cwd = runtime.cwd
        self._results["mag_file"] = save_array(gre.mag, gre.affine, os.path.join(cwd, "mag.nii"))
        self._results["phase_file"] = save_array(
            gre.phase, gre.affine, os.path.join(cwd, "phase.nii")
        )
        meta = {
            "echo_times_s": list(gre.te_s),
            "b0_tesla": float(gre.b0_tesla),
            "voxel_size_mm": [float(v) for v in gre.voxel_size],
            "b0_direction_voxel_axes": [float(v) for v in gre.b0_dir],
            "phase_units_detected": gre.phase_units,
            "shape": list(gre.mag.shape),
            "n_echoes": int(gre.mag.shape[3]),
        }
        self._results["meta_file"] = save_json(meta, os.path.join(cwd, "meta.json"))
        return runtime
