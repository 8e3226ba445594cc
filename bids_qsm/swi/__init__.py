"""bids_qsm.swi"""
