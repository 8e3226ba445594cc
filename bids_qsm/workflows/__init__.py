"""bids_qsm.workflows"""
