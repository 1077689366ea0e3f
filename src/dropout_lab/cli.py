"""The `dropout-lab` command: one entry point for the project's tools.

    dropout-lab train  [HYDRA OVERRIDES]      one run (python -m dropout_lab.training.train)
    dropout-lab pack   --dir D ... --run ...  runs trained together (python -m dropout_lab.training.pack)
    dropout-lab data   mnist|cifar10 ...      fetch, verify and cache (python -m dropout_lab.training.data)
    dropout-lab plan   [KEY=VALUE ...]        the runs, packs and expected time of the workflow
    dropout-lab paper  [SNAKEMAKE OPTIONS]    the whole workflow (snakemake --cores all), from a checkout

Tab completion of the Hydra settings: eval "$(dropout-lab-train -sc install=bash)".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

COMMANDS = ("train", "pack", "data", "plan", "paper")


def plan(argv: list[str]) -> int:
    """Print the plan of the workflow config (config/config.yaml with KEY=VALUE changes, values as YAML)."""
    from dropout_lab.planning import grid
    from dropout_lab.planning.packs import gpu_visible, make_packs, runs_per_job
    from dropout_lab.planning.plan import by_experiment, plan_lines
    from dropout_lab.settings.config import CONFIG_DIR

    config = yaml.safe_load((Path(CONFIG_DIR) / "config.yaml").read_text())
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or key not in config:
            print(f"error: {arg!r} is not KEY=VALUE with KEY one of {sorted(config)}", file=sys.stderr)
            return 2
        config[key] = yaml.safe_load(value)
    try:
        grid.drop_switched_off(config)
        runs = grid.expand_runs(config)
        packs = make_packs(runs, runs_per_job(config))
        expected = grid.expected_settings(config, runs)
    except grid.GridError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    templates, counts = by_experiment(runs, expected)
    gpu = gpu_visible(config["device"])
    for line in plan_lines(config, templates, counts, counts, len(packs), len(packs), gpu, os.cpu_count() or 1):
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command, rest = argv[0], argv[1:]
    sys.argv = [f"dropout-lab {command}", *rest]
    if command == "train":
        from dropout_lab.training.train import cli

        cli()
        return 0
    if command == "pack":
        from dropout_lab.training.pack import cli

        cli()
        return 0
    if command == "data":
        from dropout_lab.training.data import main as data_main

        return data_main(rest)
    if command == "plan":
        return plan(rest)
    root = Path(__file__).resolve().parents[2]
    if not (root / "Snakefile").is_file():
        print("error: dropout-lab paper runs the workflow of a checkout (git clone the project); this "
              "installation has no Snakefile", file=sys.stderr)
        return 2
    return subprocess.call([str(Path(sys.executable).parent / "snakemake"), "-s", str(root / "Snakefile"),
                            "--cores", "all", *rest])


if __name__ == "__main__":
    sys.exit(main())
