"""Helpers of bench/gpu_check.sh: which wheels travel, whether they fit the GPU image, what the workflow did.

    python bench/gpu_check.py closure --python-version 3.12 --image bench/gpu_image_packages.txt [--omit NAME] ROOT...
        Every distribution ROOT needs, read from the environment running this (its installed
        versions: the ones the project is tested with), with markers evaluated for Linux x86-64
        and the given Python. One line each: `carry NAME==VERSION` (not on the GPU image) or
        `image NAME==VERSION` (on the image; carried only as a fallback).
    python bench/gpu_check.py verify --python-version 3.12 WHEEL...
        Fails naming each wheel that would not install on CPython of that version on Linux x86-64
        (a compiled wheel built here for another Python, say).
    python bench/gpu_check.py check [--fallback DIR] [--omit NAME] ROOT...
        On the GPU machine, with the carried wheels on sys.path: every requirement of ROOT's
        closure that the visible versions do not meet, on stderr. With --fallback, the wheels
        of DIR that meet them are printed, one path a line, to be installed.
    python bench/gpu_check.py workflow --work DIR --scale S --experiment E --device D --start T
        --snakemake-rc RC --summary FILE
        What the workflow's run in DIR produced: runs expected and found, the wall time from T
        (a Unix time) to the last metrics.json, the training seconds of its packs, the mean test
        accuracy per hidden rate. Writes FILE (JSON) and prints one line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path

try:
    from packaging import tags
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name, parse_wheel_filename
except ImportError:  # pip always has its own copy
    from pip._vendor.packaging import tags  # type: ignore[no-redef]
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
    from pip._vendor.packaging.utils import canonicalize_name, parse_wheel_filename  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parents[1]


def _applies(req: Requirement, extras: set[str], environment: dict[str, str] | None) -> bool:
    if req.marker is None:
        return True
    for extra in extras or {""}:
        if req.marker.evaluate({**(environment or {}), "extra": extra}):
            return True
    return False


def _walk(roots: list[str], environment: dict[str, str] | None, omit: list[str]):
    """(name, distribution or None, the requirements naming it) over the closure of roots, less omit."""
    omitted = {canonicalize_name(name) for name in omit}
    wanted: dict[str, tuple[set[str], list[tuple[str, Requirement]]]] = {
        canonicalize_name(r): (set(), []) for r in roots
    }
    done: dict[str, metadata.Distribution | None] = {}
    queue = list(wanted)
    while queue:
        name = queue.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            dist = None
        done[name] = dist
        if dist is None:
            continue
        extras = wanted[name][0]
        for line in dist.requires or []:
            req = Requirement(line)
            if not _applies(req, extras, environment):
                continue
            dep = canonicalize_name(req.name)
            if dep in omitted:
                continue
            entry = wanted.setdefault(dep, (set(), []))
            entry[1].append((name, req))
            if dep not in done or not req.extras <= entry[0]:
                entry[0].update(req.extras)
                if dep not in queue:
                    queue.append(dep)
    return [(name, done[name], wanted[name][1]) for name in sorted(done)]


def closure(args: argparse.Namespace) -> int:
    environment = {
        "python_version": args.python_version,
        "python_full_version": f"{args.python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }
    image = {
        canonicalize_name(line.strip())
        for line in Path(args.image).read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    missing = []
    for name, dist, _ in _walk(args.roots, environment, args.omit):
        if dist is None:
            missing.append(name)
            continue
        print(f"{'image' if name in image else 'carry'} {name}=={dist.version}")
    if missing:
        print(f"not installed here, so their versions are unknown: {', '.join(missing)}", file=sys.stderr)
        return 1
    return 0


def verify(args: argparse.Namespace) -> int:
    version = tuple(int(p) for p in args.python_version.split(".")[:2])
    platforms = ["linux_x86_64", "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64"]
    platforms += [f"manylinux_2_{n}_x86_64" for n in range(5, 40)]
    supported = {str(t) for t in tags.cpython_tags(version, platforms=platforms)}
    supported |= {str(t) for t in tags.compatible_tags(version, f"cp{version[0]}{version[1]}", platforms)}
    bad = []
    for path in args.wheels:
        _, _, _, wheel_tags = parse_wheel_filename(Path(path).name)
        if not {str(t) for t in wheel_tags} & supported:
            bad.append(Path(path).name)
    for name in bad:
        print(f"{name} does not install on CPython {args.python_version} on Linux x86-64", file=sys.stderr)
    return 1 if bad else 0


def _unmet(roots: list[str], omit: list[str]) -> list[tuple[str, Requirement, str | None, str | None]]:
    """(name, requirement, version found or None, who needs it) for every requirement the visible versions miss."""
    unmet = []
    for name, dist, needed_by in _walk(roots, None, omit):
        for parent, req in needed_by or [(None, Requirement(name))]:
            if dist is None or not req.specifier.contains(dist.version, prereleases=True):
                unmet.append((name, req, None if dist is None else dist.version, parent))
    return unmet


def check(args: argparse.Namespace) -> int:
    unmet = _unmet(args.roots, args.omit)
    wheels = {}
    if args.fallback:
        for path in sorted(Path(args.fallback).glob("*.whl")):
            name, version, _, _ = parse_wheel_filename(path.name)
            wheels[canonicalize_name(name)] = (str(version), path)
    chosen, left = set(), []
    for name, req, found, parent in unmet:
        fallback = wheels.get(name)
        if fallback and req.specifier.contains(fallback[0], prereleases=True):
            chosen.add(fallback[1])
            why = f"installing the carried {name} {fallback[0]}"
        else:
            left.append(name)
            why = "no carried wheel meets it"
        print(f"{parent or 'root'} needs {req}, found {found or 'nothing'}: {why}", file=sys.stderr)
    for path in sorted(chosen):
        print(path)
    if not unmet:
        print(f"every requirement of {', '.join(args.roots)} is met", file=sys.stderr)
    return 1 if left else 0


def workflow(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    import yaml

    from dropout_lab.planning import grid

    config = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    config.update(scale=args.scale, experiments=[args.experiment], device=args.device)
    runs = grid.expand_runs(config)
    work = Path(args.work)
    found = [run for run in runs if (work / run.folder / "metrics.json").is_file()]
    times = [(work / run.folder / "metrics.json").stat().st_mtime for run in found]
    summary: dict = {
        "scale": args.scale, "experiment": args.experiment, "runs": len(runs), "runs_found": len(found),
        "snakemake_rc": args.snakemake_rc,
        "wall_seconds_to_last_metrics": round(max(times) - args.start, 1) if times else None,
        "wall_seconds_snakemake": round(time.time() - args.start, 1),
    }
    packs = []
    for path in sorted((work / "results/packs").rglob("pack.json")):
        metrics = json.loads(path.read_text())
        metrics = metrics.get("runs", metrics) if isinstance(metrics, dict) else metrics
        seconds = sum(h["train_seconds"] for h in metrics[0]["history"])
        packs.append({"pack": str(path.parent.relative_to(work / "results/packs")), "runs": len(metrics),
                      "training_seconds": round(seconds, 1), "engine": metrics[0].get("engine"),
                      "device": metrics[0].get("device")})
    summary["packs"] = packs
    summary["training_seconds"] = round(sum(p["training_seconds"] for p in packs), 1)
    by_rate: dict[float, list[float]] = {}
    for run in found:
        if "hidden_sweep" in run.sweeps:
            m = json.loads((work / run.folder / "metrics.json").read_text())
            if m.get("status") == "ok":
                by_rate.setdefault(dict(run.rates)["hidden"], []).append(m["final"]["test_acc"])
    summary["hidden_sweep_test_acc"] = {str(r): round(statistics.mean(a), 4) for r, a in sorted(by_rate.items())}
    Path(args.summary).write_text(json.dumps(summary, indent=2))
    print(f"workflow: {len(found)}/{len(runs)} runs' metrics.json, snakemake exit {args.snakemake_rc}, "
          f"{summary['wall_seconds_to_last_metrics']} s from start to the last metrics.json, "
          f"{summary['training_seconds']} s of training in {len(packs)} pack(s)")
    return 0 if len(found) == len(runs) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("closure")
    p.add_argument("--python-version", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--omit", action="append", default=[], help="a package left out, with what only it needs")
    p.add_argument("roots", nargs="+")
    p.set_defaults(func=closure)
    p = sub.add_parser("verify")
    p.add_argument("--python-version", required=True)
    p.add_argument("wheels", nargs="+")
    p.set_defaults(func=verify)
    p = sub.add_parser("check")
    p.add_argument("--fallback")
    p.add_argument("--omit", action="append", default=[], help="a package left out (not checked)")
    p.add_argument("roots", nargs="+")
    p.set_defaults(func=check)
    p = sub.add_parser("workflow")
    p.add_argument("--work", required=True)
    p.add_argument("--scale", required=True)
    p.add_argument("--experiment", required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--snakemake-rc", type=int, required=True)
    p.add_argument("--summary", required=True)
    p.set_defaults(func=workflow)
    args = parser.parse_args()
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
