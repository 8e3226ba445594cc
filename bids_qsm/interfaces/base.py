"""Specs shared by the interfaces: the acquisition metadata, the multi-echo GRE, and
:func:`file_spec`, a spec of described files."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from nipype.interfaces.base import BaseInterfaceInputSpec, File


class MetaInputSpec(BaseInterfaceInputSpec):
    """The acquisition metadata JSON written by :class:`~bids_qsm.interfaces.gre.LoadGRE`."""

    meta_file = File(exists=True, mandatory=True, desc="acquisition metadata JSON")


class GreInputSpec(MetaInputSpec):
    """The 4D multi-echo GRE of one acquisition (the outputs of ``LoadGRE``)."""

    mag_file = File(exists=True, mandatory=True, desc="4D magnitude")
    phase_file = File(exists=True, mandatory=True, desc="4D phase (rad)")


def file_spec(
    name: str,
    module: str,
    base: type,
    descriptions: Mapping[str, str],
    names: Iterable[str],
    *,
    mandatory: bool = False,
    may_be_absent: Collection[str] = (),
    **traits_: Any,
) -> type:
    """A Nipype spec class ``module.name`` derived from ``base``: one File trait per entry of
    ``names``, described by ``descriptions``, plus ``traits_``.

    The files must exist, except those in ``may_be_absent``; with ``mandatory`` (inputs) the
    files that must exist are also required. ``module`` is the module that binds the class to
    ``name`` (Nipype pickles the outputs, so the class must be found there).
    """
    body: dict[str, Any] = {"__module__": module}
    for n in names:
        must = n not in may_be_absent
        body[n] = File(
            desc=descriptions[n],
            **({"exists": True} if must else {}),
            **({"mandatory": True} if must and mandatory else {}),
        )
    body.update(traits_)
    return type(name, (base,), body)
