"""bids_qsm.cli"""
