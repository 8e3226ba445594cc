"""bids_qsm.atlas"""
