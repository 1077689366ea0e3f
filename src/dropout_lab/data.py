"""`python -m dropout_lab.data`: the workflow's fetch_data rule runs this name; the code is dropout_lab.training.data.

A workflow entry point, kept at this path on purpose: a rule's shell command is part of the code
Snakemake fingerprints, so a new module path would rerun the rule for every finished result
(and retrain every pack). Nothing else lives here.
"""

import sys

from dropout_lab.training.data import main

if __name__ == "__main__":
    sys.exit(main())
