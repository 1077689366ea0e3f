"""Train several runs together in one process (dropout_lab.training.engine); write DIR/pack.json.

    python -m dropout_lab.training.pack --dir results/packs/example scale=paper model=mlp \
        --run "dropout.hidden=0.5 seed=0 out=results/runs/a" \
        --run "dropout.hidden=0.2 seed=1 out=results/runs/b" [--write-runs]

Arguments outside --run are Hydra overrides shared by every run; each --run
adds that run's own (seed, dropout rates, out; a width, learning rate or
budget too). The runs that share everything but seed, gate, rates and out are
trained together (a stack, dropout_lab.training.engine); a pack of several
stacks trains them one after another, writing each stack's runs when it ends,
a checkpoint per stack. DIR/pack.json holds every run's metrics, in --run order; with
--write-runs each run's metrics.json is also written to its own `out` folder
(refused before training where that folder holds another run's finished result;
a run whose folder holds its own finished result is kept, not retrained).
While the pack trains, DIR/checkpoint.pt lets a rerun resume; the pack holds the
lock of DIR and of every run's folder (dropout_lab.settings.run_folder).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from omegaconf import OmegaConf

from dropout_lab.settings import metrics_schema, run_folder
from dropout_lab.settings.atomic import WriteError, write_result
from dropout_lab.settings.composing import compose_configs
from dropout_lab.settings.config import COMPOSITION_ERRORS, ConfigError, compose_config, describe_composition_error
from dropout_lab.training import data
from dropout_lab.training.checkpoint import CHECKPOINT, interrupted_line
from dropout_lab.training.engine import EngineError
from dropout_lab.training.train import check_runs, stacks, train_runs


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        # `dropout-lab pack` names itself so (dropout_lab.cli sets argv[0]); run as a module, it is the module.
        prog=sys.argv[0] if sys.argv[0].startswith("dropout-lab ") else "python -m dropout_lab.training.pack",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dir", required=True, help="folder of the pack: pack.json and its checkpoint")
    parser.add_argument("--run", action="append", required=True, metavar="OVERRIDES",
                        help="one run's own overrides, as one quoted string (repeat per run)")
    parser.add_argument("--write-runs", action="store_true", help="also write OUT/metrics.json of each run")
    parser.add_argument("--retrain-changed", action="store_true",
                        help="with --write-runs: retrain a run whose OUT holds a result made with other settings "
                             "(or one that cannot be read) instead of refusing it; the workflow's rule, where a "
                             "settings edit must reach the results")
    return parser.parse_known_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args, shared = parse(sys.argv[1:] if argv is None else argv)
    if unknown := [arg for arg in shared if arg.startswith("-")]:
        raise ConfigError(f"{unknown[0]} is not an option; see python -m dropout_lab.training.pack --help")
    runs = [[*shared, *shlex.split(run)] for run in args.run]
    try:
        cfgs = compose_configs(runs)
    except COMPOSITION_ERRORS as err:  # name the first run that does not compose
        for i, run in enumerate(args.run):
            try:
                compose_config(runs[i])
            except COMPOSITION_ERRORS as err:
                raise ConfigError(f"run {i} ({run}): {describe_composition_error(err)}") from err
        raise
    for cfg in cfgs:  # once: every check, stack key and record reads them resolved, the costly part of each
        OmegaConf.resolve(cfg)
    folder = Path(args.dir)
    run_folder.distinct_outs([c.out for c in cfgs])
    groups = stacks(cfgs)
    states = [stack_checkpoint(folder, g, len(groups)) for g in range(len(groups))]
    rates = {}  # every stack checked before the first trains
    for group, state in zip(groups, states):
        rates.update(zip(group, check_runs([cfgs[i] for i in group], state)))
    with run_folder.writing([folder, *(cfg.out for cfg in cfgs)]):
        kept = finished_runs(cfgs, args.retrain_changed) if args.write_runs else {}
        if kept:
            print(f"kept {len(kept)} finished run(s), not retrained: "
                  + ", ".join(str(cfgs[i].out) for i in sorted(kept)), file=sys.stderr)
        metrics: dict[int, dict] = dict(kept)
        for group, state in zip(groups, states):  # one stack after another; each run written when its stack ends
            left = [i for i in group if i not in kept]
            trained = train_runs([cfgs[i] for i in left], state, [rates[i] for i in left]) if left else []
            for i, run in zip(left, trained):
                metrics[i] = run
                if args.write_runs:
                    write_result(Path(cfgs[i].out) / run_folder.METRICS, run)
        write_result(folder / "pack.json", {"runs": [metrics[i] for i in range(len(cfgs))]})
        for state in states:
            state.unlink(missing_ok=True)  # finished: pack.json is the record
    return [metrics[i] for i in range(len(cfgs))]


def stack_checkpoint(folder: Path, stack: int, count: int) -> Path:
    """Where a stack's checkpoint is kept while it trains: DIR/checkpoint.pt for a job of one stack."""
    return folder / (CHECKPOINT if count == 1 else f"{Path(CHECKPOINT).stem}-{stack}{Path(CHECKPOINT).suffix}")


def finished_runs(cfgs: list, retrain_changed: bool) -> dict[int, dict]:
    """The runs whose `out` already holds their own finished result, by position: kept as they are, never
    retrained (a pack that gained a seed trains that seed only; a pack.json lost after its runs finished is
    rebuilt without training). A folder holding another run's result, or one that cannot be believed, is
    refused in one line; with retrain_changed that run trains again instead."""
    kept = {}
    for i, cfg in enumerate(cfgs):
        try:
            if run_folder.finished(Path(cfg.out), OmegaConf.to_container(cfg, resolve=True)):
                kept[i] = metrics_schema.read_metrics(Path(cfg.out) / run_folder.METRICS)
        except (ConfigError, metrics_schema.MetricsError) as err:
            if not retrain_changed:
                raise ConfigError(str(err)) from None
    return kept


def cli() -> None:
    try:
        main()
    except (ConfigError, EngineError, data.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt as err:
        print(interrupted_line(err), file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    cli()
