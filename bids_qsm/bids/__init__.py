"""BIDS input and output handling.

- :mod:`bids_qsm.bids.discovery`: find GRE acquisitions with pybids (:class:`GreAcquisition`,
  :func:`discover`, :func:`get_layout`).
- :mod:`bids_qsm.bids.checks`: input checks before processing (:func:`check_acquisition`, exit 65).
- :mod:`bids_qsm.bids.loading`: arrays for the numerical core (:class:`GreData`, :func:`load_gre`).
- :mod:`bids_qsm.bids.validation`: bids-validator-deno on the selected subjects (exit 16).
- :mod:`bids_qsm.bids.writers`: atomic writes, derivative names, dataset_description.json.
"""
