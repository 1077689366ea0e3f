"""`python -m dropout_lab.train`: one training run (or a Hydra multirun), as the docs and config/train.yaml name it;
the code is dropout_lab.training.train.

A documented entry point, kept at this path so that commands written for earlier versions still run.
Nothing else lives here.
"""

import sys

from dropout_lab.training.train import cli

if __name__ == "__main__":
    sys.exit(cli())
