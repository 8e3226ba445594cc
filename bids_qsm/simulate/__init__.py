"""bids_qsm.simulate"""
