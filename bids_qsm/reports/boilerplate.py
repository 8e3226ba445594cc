"""Methods boilerplate (compatibility module): see :mod:`bids_qsm.reports.methods`.

The text is generated per processing stage by the modules of :mod:`bids_qsm.reports.methods`;
this module keeps the historical import path.
"""

from __future__ import annotations

from bids_qsm.reports.methods import methods_boilerplate, write_citation_files

__all__ = ["methods_boilerplate", "write_citation_files"]
