"""The `dropout-lab` command: one entry point for the project's tools.

    dropout-lab train  [HYDRA OVERRIDES]      one run (python -m dropout_lab.training.train)
    dropout-lab pack   --dir D ... --run ...  runs trained together (python -m dropout_lab.training.pack)
    dropout-lab data   mnist|cifar10 ...      fetch, verify and cache (python -m dropout_lab.training.data)
    dropout-lab plan   [--configfile F] [KEY=VALUE ...]  the runs, packs and expected time of the workflow
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


PLAN_USAGE = "dropout-lab plan [--configfile FILE ...] [KEY=VALUE ...]"
SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


class PlanError(ValueError):
    """A plan argument that cannot be read; the message is one line naming it and the fix."""


def _merge(config: dict, overlay: dict) -> None:
    """Merge `overlay` into `config` as Snakemake merges a --configfile or --config: mappings key by key."""
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            _merge(config[key], value)
        else:
            config[key] = value


def _yaml(text: str, source: str, fix: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise PlanError(f"{source} is not YAML{where}: {problem}; {fix}") from None


def _flow(value) -> str:
    """A value as one line of YAML (the example of a fix); a long one as the shape of a mapping or list."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 16).strip().removesuffix("...").strip()
    if len(text) <= 60:
        return text
    return "{key: value, ...}" if isinstance(value, dict) else "[a, b]"


def _configfile(path: str) -> dict:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise PlanError(f"--configfile {path} cannot be read ({err.strerror or err}); give a YAML file of "
                        "settings such as config/config.yaml") from None
    loaded = _yaml(text, f"--configfile {path}", "fix the YAML at that place (a value holding ': ' or ' #' "
                   "needs quotes)")
    if not isinstance(loaded, dict):
        raise PlanError(f"--configfile {path} holds {type(loaded).__name__}, not a mapping of settings; write "
                        "it as config/config.yaml is, e.g. 'scale: quick'")
    return loaded


def plan_config(argv: list[str]) -> dict:
    """config/config.yaml merged with each --configfile, then each KEY=VALUE (a YAML value), as Snakemake merges
    them; a KEY=VALUE with an unknown KEY or an unreadable value raises PlanError."""
    from dropout_lab.settings.config import CONFIG_DIR

    config = yaml.safe_load((Path(CONFIG_DIR) / "config.yaml").read_text())
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg == "--configfile" or arg.startswith("--configfile="):
            path = arg.partition("=")[2] or (args.pop(0) if args else "")
            if not path:
                raise PlanError(f"--configfile needs a FILE; usage: {PLAN_USAGE}")
            _merge(config, _configfile(path))
            continue
        key, sep, value = arg.partition("=")
        if not sep or key not in config:
            raise PlanError(f"{arg!r} is not KEY=VALUE with KEY one of {sorted(config)}; usage: {PLAN_USAGE}")
        _merge(config, {key: _yaml(value, repr(arg), f"give a YAML value, quoted whole for the shell, e.g. "
                                   f"'{key}={_flow(config[key])}'")})
    return config


def plan(argv: list[str]) -> int:
    """Print the plan of the workflow config (config/config.yaml with --configfile files and KEY=VALUE changes,
    values as YAML), after the checks the workflow makes at the same point: a bad value is one line, exit 2."""
    from dropout_lab.planning.checks import GridError
    from dropout_lab.planning.packs import gpu_visible
    from dropout_lab.planning.plan import by_experiment, checked_grid, plan_lines

    try:
        config = plan_config(argv)
        runs, _, packs, expected = checked_grid(config, SCHEMA if SCHEMA.is_file() else None)
    except (PlanError, GridError) as err:
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
