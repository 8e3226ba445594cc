"""Nipype interface that writes one acquisition's derivatives (see bids/derivatives.py)."""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)

from bids_qsm.interfaces.nifti_io import load_json


class _WriteInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True, desc="OUTPUT_DIR")
    bids_dir = Directory(mandatory=True, desc="BIDS_DIR (for Sources URIs)")
    acquisition = traits.Dict(mandatory=True)
    atlas = traits.Dict(mandatory=True)
    meta_file = File(exists=True, mandatory=True)
    qsm_params_file = File(exists=True, mandatory=True)
    swi_params_file = File()
    registration_params_file = File()
    transforms = traits.Dict()
    chi = File(exists=True, mandatory=True)
    mask = File(exists=True, mandatory=True)
    mag = File(desc="combined magnitude")
    registration_figure = File()
    r2star = File()
    t2star = File()
    swi = File()
    minip = File()
    hpphase = File()
    phaseiron = File()
    dseg = File()
    regional_tsv = File()
    lesion_tsv = File()
    threads = traits.Int(1, usedefault=True, desc="images compressed at once (threads)")


class _WriteOutputSpec(TraitedSpec):
    out_files = traits.Dict(desc="output key -> final derivative path")


class WriteDerivatives(SimpleInterface):
    """Atomically write the BIDS derivatives of one acquisition with provenance sidecars."""

    input_spec = _WriteInputSpec
    output_spec = _WriteOutputSpec

    def _run_interface(self, runtime):
        from pathlib import Path

        from bids_qsm.bids.derivatives import bids_uris, write_acquisition_derivatives
        from bids_qsm.specs import atlas_from_spec

        def opt(name: str) -> str | None:
            value = getattr(self.inputs, name)
            return value if isdefined(value) and value else None

        acq = self.inputs.acquisition
        raw = [*acq.get("mag_files", []), *acq.get("phase_files", [])]
        raw += [*acq.get("real_files", []), *acq.get("imag_files", [])]
        keys = ("chi", "mask", "mag", "r2star", "t2star", "swi", "minip", "hpphase", "phaseiron")
        files = {k: opt(k) for k in (*keys, "dseg", "registration_figure")}
        reg = (
            load_json(opt("registration_params_file")) if opt("registration_params_file") else None
        )
        atlas_table = None
        atlas_name = self.inputs.atlas.get("name", "AAL3")
        if files["dseg"]:
            atlas = atlas_from_spec(self.inputs.atlas)
            atlas_table, atlas_name = atlas.table, atlas.name
        self._results["out_files"] = write_acquisition_derivatives(
            output_dir=Path(self.inputs.output_dir),
            source_prefix=acq["source_prefix"],
            sources=bids_uris(raw, Path(self.inputs.bids_dir)),
            files=files,
            qsm_params=load_json(self.inputs.qsm_params_file),
            swi_params=load_json(opt("swi_params_file")) if opt("swi_params_file") else None,
            registration=reg,
            transforms=dict(self.inputs.transforms) if isdefined(self.inputs.transforms) else {},
            meta=load_json(self.inputs.meta_file),
            atlas_name=atlas_name,
            atlas_table=atlas_table,
            regional_tsv=opt("regional_tsv"),
            lesion_tsv=opt("lesion_tsv"),
            threads=int(self.inputs.threads),
        )
        return runtime
