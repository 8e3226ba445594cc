"""bids_qsm.interfaces"""
