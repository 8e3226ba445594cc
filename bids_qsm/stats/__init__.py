"""bids_qsm.stats"""
