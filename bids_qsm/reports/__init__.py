"""bids_qsm.reports"""
