"""Participant level, the Nipype graph of one subject (built, not run, here).

:func:`init_participant_wf` holds one :func:`init_gre_wf` per GRE acquisition (see the graph in
:mod:`bids_qsm.workflows.participant`); every node is a thin interface of
:mod:`bids_qsm.interfaces`. Also the thread settings of the nodes, the stage names shown in the
logs and the per-stage timings. Layering: imports interfaces and lower layers only, never the
scheduler, the reporting or the participant entry point.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

from nipype import config as nipype_config
from nipype.interfaces.utility import IdentityInterface
from nipype.pipeline import engine as pe

from bids_qsm.config import Config
from bids_qsm.interfaces.atlas import RegisterAtlas
from bids_qsm.interfaces.gre import LoadGRE
from bids_qsm.interfaces.outputs import WriteDerivatives
from bids_qsm.interfaces.qsm import (
    QSM_OUTPUTS,
    InvertField,
    PrepareQSMField,
    RemoveBackground,
)
from bids_qsm.interfaces.stats import LesionStats, RegionalStats
from bids_qsm.interfaces.swi import ComputeSWI
from bids_qsm.qsm.pipeline import stage_options
from bids_qsm.specs import acquisition_to_dict

LOGGER = logging.getLogger("bids_qsm.participant")


def qsm_options(config: Config) -> dict[str, Any]:
    """QSMOptions fields chosen on the command line (:meth:`WorkflowConfig.qsm_options`)."""
    return config.workflow.qsm_options()


def swi_options(config: Config) -> dict[str, Any]:
    """SWIOptions fields chosen on the command line (:meth:`WorkflowConfig.swi_options`)."""
    return config.workflow.swi_options()


def apt_threshold(config: Config) -> float | None:
    """Participant-level abnormal-phase threshold (rad): the option, else None (the run's own
    brain mean + 2 SD of phase iron, see ``bids_qsm.swi.phase_iron.participant_threshold``)."""
    if config.workflow.apt_threshold_rad is not None:
        return float(config.workflow.apt_threshold_rad)
    return None


def omp_threads(config: Config) -> int:
    """Threads per node: ``--omp-nthreads``, else all of ``--nprocs`` (default: CPU count)."""
    n = config.nipype.omp_nthreads or config.nipype.nprocs or os.cpu_count() or 1
    return max(1, int(n))


THREAD_VARIABLES: tuple[str, ...] = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS",
)


def set_thread_limits(threads: int, force: bool = False) -> None:
    """Limit BLAS/OpenMP/ITK threads of the Nipype worker processes (inherited environment).

    ``force`` (``--omp-nthreads`` given) overrides values already in the environment;
    otherwise a scheduler's or user's setting is kept.
    """
    for var in THREAD_VARIABLES:
        if force:
            os.environ[var] = str(threads)
        else:
            os.environ.setdefault(var, str(threads))


def init_qsm_wf(*, options: dict[str, Any], threads: int, name: str = "qsm_wf") -> pe.Workflow:
    """QSM reconstruction in three cached stages (``bids_qsm.interfaces.qsm``).

    ``qsm_field`` (mask, exact unwrapping, echo fit, R2*) -> ``qsm_background`` (V-SHARP, PDF
    or LBV) -> ``qsm`` (dipole inversion, referencing; the former single node's name); each
    node gets only the options of its stage, so a re-run with another ``--inversion`` reuses
    the first two.
    Inputs: ``mag_file``, ``phase_file`` (rad), ``meta_file``; user mask / field files are set
    on the ``qsm_field`` node. Outputs: the susceptibility map (ppm) and every intermediate the
    later stages need (those of the former single ``ReconstructQSM`` node).
    """
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(
        IdentityInterface(["mag_file", "phase_file", "meta_file"]), name="inputnode"
    )
    outputnode = pe.Node(IdentityInterface(list(QSM_OUTPUTS)), name="outputnode")
    field = pe.Node(
        PrepareQSMField(options=stage_options(options, "field"), threads=threads),
        name="qsm_field", n_procs=threads, mem_gb=3.5,
    )  # fmt: skip
    background = pe.Node(
        RemoveBackground(options=stage_options(options, "background"), threads=threads),
        name="qsm_background", n_procs=threads, mem_gb=2.5,
    )  # fmt: skip
    invert = pe.Node(
        InvertField(options=stage_options(options, "inversion"), threads=threads),
        name="qsm", n_procs=threads, mem_gb=2.5,
    )  # fmt: skip
    wf.connect([
        (inputnode, field, [("mag_file", "mag_file"), ("phase_file", "phase_file"),
                            ("meta_file", "meta_file")]),
        (inputnode, background, [("meta_file", "meta_file")]),
        (inputnode, invert, [("meta_file", "meta_file")]),
        (field, background, [(f, f) for f in ("field_ppm_box_file", "mask_box_file",
                                              "user_local_box_file", "state_file")]),
        (field, invert, [("r2star_box_file", "r2star_box_file"),
                         ("combined_mag_file", "combined_mag_file")]),
        (background, invert, [(f, f) for f in ("local_box_file", "local_mask_box_file",
                                               "state_file")]),
        (field, outputnode, [(o, o) for o in ("brain_mask_file", "field_hz_file",
                                              "residual_file", "combined_mag_file",
                                              "r2star_file", "t2star_file")]),
        (background, outputnode, [("local_field_file", "local_field_file")]),
        (invert, outputnode, [("chi_file", "chi_file"), ("mask_file", "mask_file"),
                              ("params_file", "params_file")]),
    ])  # fmt: skip
    return wf


def init_swi_wf(*, options: dict[str, Any], name: str = "swi_wf") -> pe.Workflow:
    """SWI, minIP, high-pass filtered phase and phase-iron map from the QSM field estimate."""
    wf = pe.Workflow(name=name)
    fields = ["mag_file", "phase_file", "meta_file", "field_hz_file", "mask_file",
              "local_field_file", "local_mask_file", "r2star_file", "residual_file"]  # fmt: skip
    inputnode = pe.Node(IdentityInterface(fields), name="inputnode")
    outs = ["swi_file", "minip_file", "hpphase_file", "phaseiron_file", "params_file"]
    outputnode = pe.Node(IdentityInterface(outs), name="outputnode")
    swi = pe.Node(ComputeSWI(options=options), name="swi", mem_gb=2.0)
    wf.connect([
        (inputnode, swi, [(f, f) for f in fields]),
        (swi, outputnode, [(o, o) for o in outs]),
    ])  # fmt: skip
    return wf


def init_atlas_wf(
    *,
    atlas: dict[str, str],
    prefix: str,
    threads: int,
    seed: int,
    skip: bool,
    sloppy: bool = False,
    name: str = "atlas_wf",
) -> pe.Workflow:
    """Template-to-subject registration (antspyx affine + SyN) and atlas labels in GRE space
    (``sloppy``: the fast low-quality preset of ``--sloppy``)."""
    wf = pe.Workflow(name=name)
    inputnode = pe.Node(
        IdentityInterface(["mag_file", "mask_file", "t1w_file", "iron_file"]), name="inputnode"
    )
    outs = ["dseg_file", "transforms", "figure_file", "params_file"]
    outputnode = pe.Node(IdentityInterface(outs), name="outputnode")
    reg = pe.Node(
        RegisterAtlas(
            atlas=atlas, prefix=prefix, threads=threads, seed=seed, skip=skip, sloppy=sloppy
        ),
        name="register",
        n_procs=threads,
        mem_gb=2.5,
    )
    wf.connect([
        (inputnode, reg, [("mag_file", "mag_file"), ("mask_file", "mask_file"),
                          ("iron_file", "iron_file")]),
        (reg, outputnode, [(o, o) for o in outs]),
    ])  # fmt: skip
    return wf


def _user_inputs(qsm_node: pe.Node, acquisition: Any, config: Config) -> None:
    """Give the QSM node the user's brain mask and total/local field, when found."""
    if config.execution.brain_mask_source:
        user_mask = find_user_brain_mask(Path(config.execution.brain_mask_source), acquisition)
        if user_mask is None:
            LOGGER.warning(
                "sub-%s: no brain mask in %s; using the automatic mask",
                acquisition.subject,
                config.execution.brain_mask_source,
            )
        else:
            LOGGER.info("sub-%s: user brain mask %s", acquisition.subject, user_mask)
            qsm_node.inputs.mask_file = str(user_mask)
    for kind in ("total", "local"):
        source = getattr(config.execution, f"{kind}_field_source", None)
        if source:
            found = find_user_field(Path(source), acquisition, kind)
            if found is None:
                LOGGER.warning("sub-%s: no %s field in %s; using the phase",
                               acquisition.subject, kind, source)  # fmt: skip
            else:
                LOGGER.info("sub-%s: user %s field %s", acquisition.subject, kind, found)
                setattr(qsm_node.inputs, f"{kind}_field_file", str(found))


def _add_lesion_stats(
    wf: pe.Workflow,
    acquisition: Any,
    entities: dict[str, Any],
    apt: float | None,
    qsm_wf: pe.Workflow,
    swi_wf: pe.Workflow,
    ds: pe.Node,
) -> None:
    """The lesion table node (with ``--lesion-masks``), between the QSM/SWI and ds nodes."""
    lesions = pe.Node(
        LesionStats(
            lesion_masks={k: str(v) for k, v in acquisition.lesion_masks.items()},
            entities=entities,
            apt_threshold_rad=apt,
        ),
        name="lesion_stats",
    )
    wf.connect([
        (qsm_wf, lesions, [("outputnode.chi_file", "chi_file"),
                           ("outputnode.mask_file", "mask_file")]),
        (swi_wf, lesions, [("outputnode.phaseiron_file", "phaseiron_file")]),
        (lesions, ds, [("stats_file", "lesion_tsv")]),
    ])  # fmt: skip


def init_gre_wf(
    *, acquisition: Any, config: Config, name: str, threads: int | None = None
) -> pe.Workflow:
    """Everything for one GRE acquisition, from raw files to written derivatives.

    ``threads``: threads of the QSM and registration nodes (default :func:`omp_threads`).
    """
    acq = acquisition_to_dict(acquisition)
    threads = threads or omp_threads(config)
    atlas = config.workflow.atlas_spec().to_dict()
    entities = {
        "participant_id": f"sub-{acquisition.subject}",
        "session_id": f"ses-{acquisition.session}" if acquisition.session else None,
        "acq": acquisition.acq,
        "run": acquisition.run,
    }
    apt = apt_threshold(config)

    wf = pe.Workflow(name=name)
    load = pe.Node(
        LoadGRE(acquisition=acq, b0_tesla=config.execution.b0_tesla, threads=threads),
        name="load",
        mem_gb=1.5,
        n_procs=threads,
    )
    qsm_wf = init_qsm_wf(options=config.workflow.qsm_options(), threads=threads)
    _user_inputs(qsm_wf.get_node("qsm_field"), acquisition, config)
    swi_wf = init_swi_wf(options=config.workflow.swi_options())
    atlas_wf = init_atlas_wf(
        atlas=atlas,
        prefix=acq["source_prefix"],
        threads=threads,
        seed=int(config.execution.random_seed or 0),
        skip=bool(config.workflow.skip_registration),
        sloppy=bool(config.workflow.sloppy),
    )
    if acquisition.t1w:
        atlas_wf.get_node("register").inputs.t1w_file = str(acquisition.t1w)
    regional = pe.Node(
        RegionalStats(atlas=atlas, entities=entities, apt_threshold_rad=apt, threads=threads),
        name="regional_stats",
        n_procs=threads,
    )
    ds = pe.Node(
        WriteDerivatives(
            output_dir=str(config.execution.output_dir),
            bids_dir=str(config.execution.bids_dir),
            acquisition=acq,
            atlas=atlas,
            threads=threads,
        ),
        name="ds",
        mem_gb=1.5,
        n_procs=threads,
    )
    wf.connect([
        (load, qsm_wf, [("mag_file", "inputnode.mag_file"), ("phase_file", "inputnode.phase_file"),
                        ("meta_file", "inputnode.meta_file")]),
        (load, swi_wf, [("mag_file", "inputnode.mag_file"), ("phase_file", "inputnode.phase_file"),
                        ("meta_file", "inputnode.meta_file")]),
        (qsm_wf, swi_wf, [("outputnode.field_hz_file", "inputnode.field_hz_file"),
                          ("outputnode.brain_mask_file", "inputnode.mask_file"),
                          ("outputnode.local_field_file", "inputnode.local_field_file"),
                          ("outputnode.mask_file", "inputnode.local_mask_file"),
                          ("outputnode.r2star_file", "inputnode.r2star_file"),
                          ("outputnode.residual_file", "inputnode.residual_file")]),
        (qsm_wf, atlas_wf, [("outputnode.combined_mag_file", "inputnode.mag_file"),
                            ("outputnode.chi_file", "inputnode.iron_file"),
                            ("outputnode.brain_mask_file", "inputnode.mask_file")]),
        (qsm_wf, regional, [("outputnode.chi_file", "chi_file"),
                            ("outputnode.mask_file", "mask_file"),
                            ("outputnode.params_file", "qsm_params_file"),
                            ("outputnode.r2star_file", "r2star_file")]),
        (swi_wf, regional, [("outputnode.hpphase_file", "hpphase_file"),
                            ("outputnode.phaseiron_file", "phaseiron_file")]),
        (atlas_wf, regional, [("outputnode.dseg_file", "dseg_file")]),
        (load, ds, [("meta_file", "meta_file")]),
        (qsm_wf, ds, [("outputnode.params_file", "qsm_params_file"),
                      ("outputnode.chi_file", "chi"), ("outputnode.mask_file", "mask"),
                      ("outputnode.combined_mag_file", "mag"),
                      ("outputnode.r2star_file", "r2star"), ("outputnode.t2star_file", "t2star")]),
        (swi_wf, ds, [("outputnode.params_file", "swi_params_file"),
                      ("outputnode.swi_file", "swi"), ("outputnode.minip_file", "minip"),
                      ("outputnode.hpphase_file", "hpphase"),
                      ("outputnode.phaseiron_file", "phaseiron")]),
        (atlas_wf, ds, [("outputnode.dseg_file", "dseg"), ("outputnode.transforms", "transforms"),
                        ("outputnode.figure_file", "registration_figure"),
                        ("outputnode.params_file", "registration_params_file")]),
        (regional, ds, [("stats_file", "regional_tsv")]),
    ])  # fmt: skip
    if acquisition.lesion_masks:
        _add_lesion_stats(wf, acquisition, entities, apt, qsm_wf, swi_wf, ds)
    return wf


def _find_user_file(folder: Path, acquisition: Any, desc_suffix: str, what: str) -> Path | None:
    """The one ``sub-<l>[_ses-<l>]..._<desc_suffix>.nii[.gz]`` of an acquisition below
    ``folder``: the name starting with its source prefix wins; None when the subject has none;
    several candidates -> :class:`InputDataError` naming them."""
    from bids_qsm.errors import InputDataError

    sub = f"sub-{acquisition.subject}"
    found = sorted(
        p
        for p in Path(folder).rglob(f"{sub}_*{desc_suffix}.nii*")
        if acquisition.session is None or f"_ses-{acquisition.session}_" in p.name
    )
    exact = [p for p in found if p.name.startswith(acquisition.source_prefix + "_")]
    found = exact or found
    if len(found) > 1:
        raise InputDataError(
            f"several {what} match {acquisition.source_prefix}: "
            + ", ".join(p.name for p in found),
            folder,
        )
    return found[0] if found else None


def find_user_brain_mask(folder: Path, acquisition: Any) -> Path | None:
    """The user's brain mask for an acquisition in a ``--brain-mask-source`` folder.

    Looks for ``sub-<l>[_ses-<l>]..._desc-brain_mask.nii[.gz]`` anywhere below ``folder``;
    with several candidates, the one whose name starts with the acquisition's source prefix
    (same acq/run) wins. Returns None when the subject has none.
    """
    return _find_user_file(folder, acquisition, "desc-brain_mask", "brain masks")


def find_user_field(folder: Path, acquisition: Any, kind: str) -> Path | None:
    """The user's ``kind`` ("total", Hz, or "local", ppm) field map for an acquisition.

    Looks for ``sub-<l>[_ses-<l>]..._desc-<kind>_fieldmap.nii[.gz]`` below ``folder``; the
    name starting with the acquisition's source prefix wins; None when the subject has none.
    """
    return _find_user_file(folder, acquisition, f"desc-{kind}_fieldmap", f"{kind} fields")


def _wf_name(acquisition: Any) -> str:
    parts = [acquisition.session, acquisition.acq, acquisition.run]
    label = "_".join(p for p in parts if p)
    label = "".join(c if c.isalnum() else "_" for c in label)
    return f"gre_{label}_wf" if label else "gre_wf"


def init_participant_wf(
    *, subject: str, acquisitions: list[Any], config: Config, threads: int | None = None
) -> pe.Workflow:
    """One subject's workflow: one :func:`init_gre_wf` per acquisition.

    With several sessions the atlas registration of each session is deferred: the
    longitudinal step registers the atlas once to the within-subject template.
    """
    from bids_qsm.workflows.longitudinal import defer_registration, session_acquisitions

    deferred = {id(a) for a in session_acquisitions(acquisitions)}
    wf = pe.Workflow(name=f"sub_{subject}_wf")
    for acq in acquisitions:
        gre = init_gre_wf(acquisition=acq, config=config, name=_wf_name(acq), threads=threads)
        if id(acq) in deferred:
            defer_registration(gre)
        wf.add_nodes([gre])
    return wf


#: Terminal names of the workflow stages (node name -> what it does).
STAGE_LABELS: dict[str, str] = {
    "load": "load GRE (checks, units, B0 direction)",
    "qsm_field": "QSM field (mask, unwrap, echo fit, R2*)",
    "qsm_background": "QSM background field removal",
    "qsm": "QSM dipole inversion and referencing",
    "swi": "SWI, minIP and phase-iron",
    "register": "atlas registration (ANTs)",
    "regional_stats": "regional iron table",
    "lesion_stats": "lesion table",
    "ds": "write derivatives",
}
_NODE_RE = re.compile(r'\[Node\] (Executing|Finished) "([^"]+)"(?:, elapsed time ([0-9.]+)s)?')


def _configure_nipype(crash_dir: Path, config: Config) -> None:
    nipype_config.update_config(
        {
            "execution": {
                "crashdump_dir": str(crash_dir),
                "crashfile_format": "txt",
                "stop_on_first_crash": bool(config.nipype.stop_on_first_crash),
                "remove_unnecessary_outputs": False,
                "create_report": False,
                "parameterize_dirs": False,
            },
            "monitoring": {"enabled": False},
        }
    )
    nipype_config.set("logging", "workflow_level", "INFO")


def write_stage_timings(
    graph: Any, log_dir: Path, cpu_s: dict[str, float] | None = None
) -> Path | None:
    """Write the per-stage timings (s) of this run to ``log_dir/stage_timings.json``.

    ``cpu_s``: CPU seconds per node (full name), when measured (``StageTracker``); nodes
    taken from the work directory's cache have none and an ``elapsed_s`` of their first run.

    Timings change from run to run, so they are kept with the logs rather than in the
    derivative sidecars (which a re-run must rewrite byte for byte). ``graph`` is the execution
    graph returned by ``Workflow.run``; keys are the nodes' full names.
    """
    from bids_qsm.bids.writers import atomic_write_json
    from bids_qsm.interfaces.nifti_io import load_json

    timings: dict[str, Any] = {}
    for node in sorted(graph.nodes(), key=lambda nd: nd.fullname):
        if node.name not in STAGE_LABELS:
            continue
        try:
            result = node.result
            timings[node.fullname] = {"elapsed_s": round(float(result.runtime.duration), 2)}
            if cpu_s and node.fullname in cpu_s:
                timings[node.fullname]["cpu_s"] = cpu_s[node.fullname]
            params = getattr(result.outputs, "params_file", None)
            if params and Path(params).is_file():
                timings[node.fullname]["stages_s"] = load_json(params).get("timings_s", {})
        except Exception:  # timings are informative only
            LOGGER.debug("no timings for %s", node.fullname, exc_info=True)
    if not timings:
        return None
    return atomic_write_json(Path(log_dir) / "stage_timings.json", timings)
