"""bids_qsm.bids"""
