"""Methods boilerplate: generated from the parameters used, tolerant, written atomically."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bids_qsm.qsm.pipeline import QSMOptions
from bids_qsm.reports._markdown import markdown_to_html
from bids_qsm.reports.boilerplate import methods_boilerplate, write_citation_files
from bids_qsm.reports.references import REFERENCES
from bids_qsm.swi.pipeline import SWIOptions


def _params(**qsm) -> dict:
    q = QSMOptions(**qsm).to_dict()
    q.update(
        {
            "phase_offset_removal": "MCPC-3D-S (Eckstein 2018)",
            "echo_combination": "weighted least squares over TE through the origin, w = mag^2",
            "mask_source": "magnitude threshold + morphology",
            "reference_value_ppm": 0.0123,
            "echo_times_s": [0.004, 0.01, 0.016, 0.022],
            "b0_tesla": 3.0,
            "voxel_size_mm": [1.0, 1.0, 2.0],
        }
    )
    return {
        "qsm": q,
        "swi": SWIOptions().to_dict(),
        "atlas": {
            "Software": "ANTs via antspyx 0.5.4 (antsRegistration)",
            "Template": "MNI152NLin6Asym",
            "Atlas": "AAL3",
            "SubjectImage": "GRE magnitude (RSS over echoes) masked by brain mask",
            "LabelInterpolation": "genericLabel",
            "TemplateToSubject": {
                "Stages": [
                    {"Transform": "Rigid[0.1]"},
                    {"Transform": "Affine[0.1]"},
                    {"Transform": "SyN[0.2,3,0]"},
                ]
            },
        },
        "software": {"numpy": "2.1.0", "scipy": "1.14.1", "nipype": "1.9.0", "pybids": "0.17"},
    }


def _refs(md: str) -> list[str]:
    return md.split("### References", 1)[1].strip().splitlines()


def _cited_numbers(md: str) -> set[int]:
    body = md.split("### References", 1)[0]
    nums: set[int] = set()
    for group in re.findall(r"\[(\d+(?:, \d+)*)\]", body):
        nums.update(int(x) for x in group.split(", "))
    return nums


@pytest.mark.parametrize(
    ("inversion", "name", "ref", "absent"),
    [
        ("rts", "rapid two-step", "kames2018", "shmueli2009"),
        ("tkd", "thresholded k-space division", "shmueli2009", "kames2018"),
        ("tikhonov", "Tikhonov", "tikhonov1963", "kames2018"),
        ("tv", "total-variation", "bilgic2014", "kames2018"),
    ],
)
def test_inversion_named_and_cited(inversion: str, name: str, ref: str, absent: str) -> None:
    md = methods_boilerplate(_params(inversion=inversion), "9.9.9")
    assert name in md
    assert REFERENCES[ref].title in md
    assert REFERENCES[absent].title not in md
    assert "bids-qsm 9.9.9" in md
    # every citation number in the text resolves to an entry, and every entry is cited
    refs = _refs(md)
    assert _cited_numbers(md) == set(range(1, len(refs) + 1))
    assert refs[0].startswith("1. QSM Consensus")


def test_parameters_values_appear() -> None:
    md = methods_boilerplate(
        _params(inversion="tikhonov", tikhonov_lambda=0.05, bg_removal="vsharp"), "1.0"
    )
    assert "λ = 0.05" in md and "CG tolerance = 0.03" in md
    assert "V-SHARP" in md and "12 mm" in md
    assert "MCPC-3D-S" in md and "10, 10, 5 voxels" in md
    assert "+0.0123 ppm" in md and "whole-brain mask" in md
    assert "4 echoes" in md and "TE = 4, 10, 16, 22 ms" in md and "B0 = 3 T" in md
    assert "CLEAR-SWI" in md and "power 4" in md and "8 mm" in md
    assert "AAL3" in md and "SyN" in md and REFERENCES["avants2008"].title in md
    assert "NumPy 2.1.0" in md and "PyBIDS 0.17" in md and "Nipype 1.9.0" in md


def test_other_algorithm_choices_change_text() -> None:
    base = methods_boilerplate(_params(), "1.0")
    pdf = methods_boilerplate(_params(bg_removal="pdf"), "1.0")
    lap = methods_boilerplate(_params(unwrapping="laplacian"), "1.0")
    csf = methods_boilerplate(_params(reference="csf"), "1.0")
    flip = methods_boilerplate(_params(phase_sign=-1), "1.0")
    assert "PDF" in pdf and "V-SHARP" not in pdf and REFERENCES["liu2011"].title in pdf
    assert "Laplacian" in lap and REFERENCES["schofield2003"].title in lap
    assert "Laplacian method" not in base
    # Defaults (issue 13): LBV, exact RTS step 1, polynomial offset, Chimap erosion.
    assert "(LBV)" in base and "exact k-space division" in base
    assert "weighted inside the brain mask only" in base and "μ2 = 0.03" in base  # wtv
    assert "polynomial of degree 3" in base and "outer 2 mm" in base
    assert "cerebrospinal fluid" in csf
    assert "negated" in flip and "negated" not in base
    p = _params()
    p["swi"] = SWIOptions(highpass="homodyne", homodyne_window=32).to_dict()
    homo = methods_boilerplate(p, "1.0")
    assert "homodyne" in homo and "32 × 32" in homo and "CLEAR-SWI" not in homo


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"qsm": None, "swi": 3, "atlas": "AAL3", "software": []},
        {"qsm": {"inversion": {"method": "rts", "mu": 1e5}}},
        {"qsm": {"inversion": "something-new", "bg_removal": "lbv", "unwrapping": "romeo"}},
        {"swi": {"highpass": "gaussian"}, "atlas": {"name": "Custom"}},
        {"acquisition": {"n_echoes": 1}, "qsm": {"inversion": "tkd"}},
    ],
)
def test_missing_or_odd_keys_tolerated(params: dict) -> None:
    md = methods_boilerplate(params, "1.0")
    assert md.startswith("## Methods (bids-qsm 1.0)")
    assert "### References" in md
    refs = _refs(md)
    assert _cited_numbers(md) == set(range(1, len(refs) + 1))


def test_nested_and_single_echo_forms() -> None:
    md = methods_boilerplate({"qsm": {"inversion": {"method": "rts", "mu": 1e5}}}, "1")
    assert "μ = 10⁵" in md
    md = methods_boilerplate(
        {"acquisition": {"n_echoes": 1}, "qsm": {"inversion": "tkd", "unwrapping": "quality"}}, "1"
    )
    assert "single echo" in md and "MCPC" not in md and "quick previews" in md
    md = methods_boilerplate({"qsm": {"unwrapping": "romeo", "bg_removal": "lbv"}}, "1")
    assert "ROMEO" in md and "LBV" in md


def test_write_citation_files_atomic(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    md_path = write_citation_files(_params(inversion="tv"), "0.1.0", logs)
    assert md_path == logs / "CITATION.md"
    assert sorted(p.name for p in logs.iterdir()) == [
        "CITATION.bib",
        "CITATION.html",
        "CITATION.md",
    ]
    md = md_path.read_text(encoding="utf-8")
    assert md == methods_boilerplate(_params(inversion="tv"), "0.1.0")
    page = (logs / "CITATION.html").read_text(encoding="utf-8")
    assert "<ol>" in page and "ADMM" in page and 'href="https://doi.org/10.1002/mrm.25029"' in page
    bib = (logs / "CITATION.bib").read_text(encoding="utf-8")
    assert "@article{bilgic2014," in bib and "@article{kames2018," not in bib
    assert bib.count("@article") == len(_refs(md))
    # rewriting is idempotent and leaves no temporary file
    write_citation_files(_params(inversion="tv"), "0.1.0", logs)
    assert md_path.read_text(encoding="utf-8") == md
    assert len(list(logs.iterdir())) == 3


def test_markdown_converter_escapes_and_formats() -> None:
    html = markdown_to_html("# T <x>\n\npara *it* **b** `c` [l](https://a.b/c)\n\n- a\n- b\n")
    assert "<h1>T &lt;x&gt;</h1>" in html
    assert "<em>it</em>" in html and "<strong>b</strong>" in html and "<code>c</code>" in html
    assert '<a href="https://a.b/c">l</a>' in html
    assert "<ul><li>a</li><li>b</li></ul>" in html
    assert "R2* and T2*" in markdown_to_html("R2* and T2* maps")  # lone stars stay text


def test_user_field_replaces_the_phase_text() -> None:
    p = _params()
    p["qsm"].update(field_source="user total field", phase_offset_removal="none (user field)")
    md = methods_boilerplate(p, "1.0")
    assert "total field (Hz) was supplied by the user" in md
    assert "MCPC-3D-S" not in md and "unwrapped exactly" not in md
