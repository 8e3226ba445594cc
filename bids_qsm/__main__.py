"""``python -m bids_qsm`` runs the BIDS App command line."""

from bids_qsm.cli.run import main

if __name__ == "__main__":
    main()
