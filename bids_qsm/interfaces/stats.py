"""Nipype interfaces computing the regional and lesion iron tables."""

from __future__ import annotations

import logging
import os

import numpy as np
from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    SimpleInterface,
    TraitedSpec,
    traits,
)

from bids_qsm.interfaces.nifti_io import load_array, load_json, load_optional

LOGGER = logging.getLogger("bids_qsm.stats")


def _apt(threshold: float | None, phase_iron: object, mask: object) -> float | None:
    """The given abnormal-phase threshold, else the run's own (brain mean + 2 SD)."""
    if threshold is not None or phase_iron is None:
        return threshold
    from bids_qsm.swi.phase_iron import participant_threshold

    threshold = participant_threshold(phase_iron, mask)
    if not np.isfinite(threshold):
        LOGGER.warning(
            "no abnormal-phase measures (MP-APT): fewer than two phase-iron voxels pass the "
            "phase-quality mask"
        )
        return None
    return threshold


class _IronTableInputSpec(BaseInterfaceInputSpec):
    """Inputs common to the iron tables: the maps, the phase iron and the row entities."""

    chi_file = File(exists=True, mandatory=True)
    mask_file = File(exists=True, mandatory=True)
    phaseiron_file = File()
    entities = traits.Dict(mandatory=True, desc="participant_id, session_id, acq, run")
    apt_threshold_rad = traits.Either(None, traits.Float, default=None, usedefault=True)


class _IronTableOutputSpec(TraitedSpec):
    stats_file = File(exists=True, desc="stats TSV (regional or lesion table)")


class _IronTable(SimpleInterface):
    """Base of the table interfaces: one TSV written the same way (n/a, 6 significant digits)."""

    output_spec = _IronTableOutputSpec

    def _write_table(self, df, runtime, name: str):
        out = os.path.join(runtime.cwd, name)
        df.to_csv(out, sep="\t", index=False, na_rep="n/a", float_format="%.6g")
        self._results["stats_file"] = out
        return runtime


class _RegionalInputSpec(_IronTableInputSpec):
    qsm_params_file = File(exists=True, mandatory=True, desc="reference region and value")
    dseg_file = File(desc="atlas labels in GRE space (absent: whole brain only)")
    r2star_file = File()
    hpphase_file = File()
    atlas = traits.Dict(mandatory=True, desc="atlas spec")
    threads = traits.Int(1, usedefault=True, desc="FFT threads of the self-positive ROIs")


class RegionalStats(_IronTable):
    """Per-structure susceptibility, R2* and SWI phase-iron statistics."""

    input_spec = _RegionalInputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from bids_qsm.specs import atlas_from_spec
        from bids_qsm.stats.regional import Entities, regional_table

        chi, affine = load_array(self.inputs.chi_file)
        mask, _ = load_array(self.inputs.mask_file, bool)
        params = load_json(self.inputs.qsm_params_file)
        voxel_volume = float(np.prod(np.sqrt((affine[:3, :3] ** 2).sum(0))))
        labels = load_optional(self.inputs.dseg_file, np.int32)
        if labels is not None:
            atlas = atlas_from_spec(self.inputs.atlas)
            structures, atlas_name = atlas.structures, atlas.name
        else:
            labels, structures = np.zeros(chi.shape, np.int32), []
            atlas_name = self.inputs.atlas.get("name", "AAL3")
        phase_iron = load_optional(self.inputs.phaseiron_file)
        phase_labels = None
        if structures and phase_iron is not None:
            # SWI phase columns over each structure's self-positive ROI (docs/methods_swi.md)
            from scipy import fft as sfft

            from bids_qsm.qsm.geometry import b0_direction_from_affine
            from bids_qsm.swi import SWIOptions, self_positive_labels

            # threaded FFTs transform the same lines the same way: the same numbers
            with sfft.set_workers(max(1, int(self.inputs.threads))):
                phase_labels = self_positive_labels(
                    labels,
                    structures,
                    np.sqrt((affine[:3, :3] ** 2).sum(0)),
                    b0_direction_from_affine(affine),
                    SWIOptions().gaussian_sigma_mm,
                    mask,
                )
        df = regional_table(
            chi,
            labels,
            mask,
            structures,
            voxel_volume,
            Entities(**self.inputs.entities),
            atlas_name,
            r2star_hz=load_optional(self.inputs.r2star_file),
            hp_phase_rad=load_optional(self.inputs.hpphase_file),
            phase_iron_rad=phase_iron,
            apt_threshold_rad=_apt(self.inputs.apt_threshold_rad, phase_iron, mask),
            phase_labels=phase_labels,
            reference_region=params["reference_region"],
            reference_value_ppm=params["reference_value_ppm"],
        )
        return self._write_table(df, runtime, "regional_stats.tsv")


class _LesionInputSpec(_IronTableInputSpec):
    lesion_masks = traits.Dict(mandatory=True, desc="label -> lesion mask file (any space)")


class LesionStats(_IronTable):
    """Resample lesion masks into GRE space and tabulate lesion-wise iron."""

    input_spec = _LesionInputSpec

    def _run_interface(self, runtime):
        import nibabel as nib
        import numpy as np

        from bids_qsm.interfaces.nifti_io import resample_mask_to
        from bids_qsm.stats.lesions import lesion_table
        from bids_qsm.stats.regional import Entities

        chi_img = nib.load(self.inputs.chi_file)
        chi = np.asarray(chi_img.dataobj, dtype=np.float32)
        mask, _ = load_array(self.inputs.mask_file, bool)
        masks = {
            label: resample_mask_to(nib.load(path), chi_img)
            for label, path in self.inputs.lesion_masks.items()
        }
        voxel_volume = float(np.prod(chi_img.header.get_zooms()[:3]))
        phase_iron = load_optional(self.inputs.phaseiron_file)
        df = lesion_table(
            masks,
            chi,
            mask,
            voxel_volume,
            Entities(**self.inputs.entities),
            phase_iron_rad=phase_iron,
            apt_threshold_rad=_apt(self.inputs.apt_threshold_rad, phase_iron, mask),
        )
        return self._write_table(df, runtime, "lesion_stats.tsv")
