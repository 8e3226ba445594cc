"""Nipype interface that registers the atlas to one GRE acquisition (antspyx)."""

from __future__ import annotations

import logging
import os

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_qsm.interfaces.nifti_io import save_array, save_json

LOGGER = logging.getLogger("bids_qsm.registration")

#: Below these brain-mask dimensions (mm) and volume (ml) atlas registration is meaningless.
MIN_EXTENT_MM = 60.0
MIN_BRAIN_ML = 300.0


def registration_feasible(mask, voxel_size) -> tuple[bool, str]:
    """Whether the brain mask covers enough of a brain for whole-brain atlas registration."""
    import numpy as np

    idx = np.argwhere(mask)
    if idx.size == 0:
        return False, "the brain mask is empty"
    extent = (idx.max(0) - idx.min(0) + 1) * np.asarray(voxel_size, float)
    volume_ml = float(mask.sum() * np.prod(voxel_size)) / 1000.0
    if extent.min() < MIN_EXTENT_MM or volume_ml < MIN_BRAIN_ML:
        return False, (
            "field of view too small for atlas registration (brain mask extent "
            f"{extent[0]:.0f}x{extent[1]:.0f}x{extent[2]:.0f} mm, {volume_ml:.0f} ml; need at "
            f"least {MIN_EXTENT_MM:.0f} mm per axis and {MIN_BRAIN_ML:.0f} ml)"
        )
    return True, ""


_SKIP_REASON = "registration skipped on request (--skip-registration)"


class _RegisterInputSpec(BaseInterfaceInputSpec):
    mag_file = File(exists=True, mandatory=True, desc="combined GRE magnitude (3D)")
    mask_file = File(exists=True, mandatory=True, desc="brain mask")
    t1w_file = File(exists=True, desc="T1w of the same subject (optional)")
    iron_file = File(exists=True, desc="susceptibility map (ppm): iron channel of the metric")
    atlas = traits.Dict(mandatory=True, desc="atlas spec: {'name': ...} or custom paths")
    prefix = traits.Str(mandatory=True, desc="BIDS source prefix for transform names")
    threads = traits.Int(2, usedefault=True)
    seed = traits.Int(0, usedefault=True)
    skip = traits.Bool(False, usedefault=True, desc="skip registration (--skip-registration)")
    skip_reason = traits.Str(_SKIP_REASON, usedefault=True, desc="reason recorded when skipped")
    sloppy = traits.Bool(False, usedefault=True, desc="fast low-quality registration (--sloppy)")


class _RegisterOutputSpec(TraitedSpec):
    dseg_file = File(desc="atlas labels in GRE space (absent when skipped)")
    transforms = traits.Dict(desc="transform name -> file")
    figure_file = File(desc="registration QC figure (PNG)")
    params_file = File(exists=True, desc="JSON: parameters, QC Dice, timings or skip reason")


class RegisterAtlas(SimpleInterface):
    """Affine + SyN registration of the template to the subject; labels carried to the GRE grid."""

    input_spec = _RegisterInputSpec
    output_spec = _RegisterOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np

        from bids_qsm.atlas.qc import registration_figure
        from bids_qsm.atlas.registration import register_atlas
        from bids_qsm.atlas.stages import registration_params
        from bids_qsm.specs import atlas_from_spec

        mag_img = nib.load(self.inputs.mag_file)
        mask_img = nib.load(self.inputs.mask_file)
        mask = np.asanyarray(mask_img.dataobj) > 0
        cwd = runtime.cwd
        self._results["transforms"] = {}
        if self.inputs.skip:
            ok, reason = False, self.inputs.skip_reason
        else:
            ok, reason = registration_feasible(mask, mask_img.header.get_zooms()[:3])
        if not ok:
            if self.inputs.skip and reason != _SKIP_REASON:  # deferred (issue 17)
                LOGGER.info("Atlas registration deferred: %s", reason)
            else:
                LOGGER.warning(
                    "Atlas registration skipped: %s; regional tables hold the whole brain only.",
                    reason,
                )
            self._results["params_file"] = save_json(
                {"skipped": True, "reason": reason}, os.path.join(cwd, "registration.json")
            )
            return runtime
        atlas = atlas_from_spec(self.inputs.atlas)
        t1w = nib.load(self.inputs.t1w_file) if isdefined(self.inputs.t1w_file) else None
        iron = nib.load(self.inputs.iron_file) if isdefined(self.inputs.iron_file) else None
        reg = register_atlas(
            mag_img,
            mask_img,
            atlas,
            out_dir=cwd,
            prefix=self.inputs.prefix,
            t1w=t1w,
            threads=self.inputs.threads,
            seed=self.inputs.seed,
            iron=iron,
            params=registration_params(self.inputs.sloppy),
        )
        self._results["dseg_file"] = save_array(
            reg.labels, mag_img.affine, os.path.join(cwd, "dseg.nii"), dtype=np.int16
        )
        self._results["transforms"] = {k: str(v) for k, v in reg.transforms.items()}
        fig = registration_figure(
            mag_img, reg, os.path.join(cwd, "registration.png"), structures=atlas.structures
        )
        self._results["figure_file"] = str(fig)
        self._results["params_file"] = save_json(
            {
                "skipped": False,
                "parameters": reg.parameters,
                "brain_dice": float(reg.brain_dice),
                "qc": reg.qc,
                "timings_s": reg.timings_s,
                "atlas": atlas.name,
                "template": atlas.template_name,
            },
            os.path.join(cwd, "registration.json"),
        )
        return runtime
