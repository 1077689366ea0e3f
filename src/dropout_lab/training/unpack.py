"""Take one run's metrics out of its pack's pack.json (the workflow's run_metrics rule).

    python -m dropout_lab.training.unpack results/packs/P/pack.json results/runs/.../metrics.json

Light on purpose (json, the atomic writer and the run folder's lock only, no torch): the
workflow runs it once per run, as a shell job in Snakemake's own process pool. It holds
the run folder's lock while it writes (dropout_lab.settings.run_folder).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dropout_lab.settings.atomic import write_json
from dropout_lab.settings.run_folder import FolderInUse, writing


class UnpackError(ValueError):
    """The pack holds no run for the target; one line."""


def unpack_run(pack_json: str | Path, target: str | Path) -> None:
    """Write the metrics of the run whose folder holds `target` out of its pack's pack.json."""
    folder = str(Path(target).parent)
    runs = json.loads(Path(pack_json).read_text())["runs"]
    found = [run for run in runs if str(run["config"]["out"]).rstrip("/") == folder]
    if len(found) != 1:
        raise UnpackError(f"{pack_json} holds no run with out={folder}; delete it and run again to retrain the pack")
    with writing([Path(target).parent]):
        write_json(target, found[0])


def main(argv: list[str] | None = None) -> int:
    pack_json, target = (sys.argv[1:] if argv is None else argv)
    try:
        unpack_run(pack_json, target)
    except (UnpackError, FolderInUse, OSError, ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{target} from {pack_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
