"""bids_qsm.qsm"""
