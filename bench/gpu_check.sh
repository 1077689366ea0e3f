#!/usr/bin/env bash
# The GPU check: the workflow trains the MNIST MLP paper grid, its runs come back as a tarball, and
# the grid's throughput is measured, in one command of about 9 minutes.
#
#   bash bench/gpu_check.sh prepare      # here, with the internet (pip) and ../shared/data/mnist:
#                                        # fills bench/carry/ (ignored by git): the MNIST files and
#                                        # the wheels of Snakemake and Hydra (below)
#   bash bench/gpu_check.sh run [OUT]    # on the GPU machine (no internet, no Snakemake, python3 with
#                                        # torch), with bench/carry/ carried along; everything that
#                                        # comes back goes to OUT (default $OUT or bench/out)
#   bash bench/gpu_check.sh rehearse [OUT]  # here: `run` at smoke scale on the CPU, in a fresh
#                                        # Python 3.12 environment built like the GPU image
#
# Wheels (`prepare`): Snakemake (the venv's version) and Hydra, OmegaConf and antlr with every package
# they need, at the versions installed in .venv, for CPython $PYVER (default 3.12, the GPU image's) on
# Linux x86-64 (bench/gpu_check.py closure). Those the GPU image lacks go to bench/carry/wheels; those
# it has (bench/gpu_image_packages.txt) go to bench/carry/fallback, installed there only where the
# image's version does not meet a requirement (packaging 25 where the image's is 26 or later, say). PuLP
# (16 MiB) is left out: it serves only Snakemake's ilp scheduler, and the check runs --scheduler greedy.
# bench/carry holds 24 MiB with MNIST (11 MiB); the device tool carries at most 64 MiB. `run`
# installs the wheels into /tmp/dropout-lab-site (pip --no-index --no-deps --target) and puts it on
# PYTHONPATH, unless snakemake, hydra and omegaconf import already.
#
# `run` writes OUT/check.txt (the summary, after every step) and runs, in order, each under `timeout`
# with the smaller of its own limit and what is left of BUDGET seconds (default 540), a step that
# would get less than its minimum being skipped:
#   1. Snakemake (the workflow's fetch_data, train and run_metrics rules, --until run_metrics) trains
#      the MNIST MLP grid at SCALE (GRID=main, the default: the fixed protocol's grid without the
#      budget sweep; GRID=all adds the tuned protocol's 255 runs and the budget sweep's 150, about
#      six more minutes at paper scale, bench/RESULTS.md) (paper: 285 runs, 50 epochs, runs_per_job=all: the 235 runs
#      of the fixed-width grids in one pack, the width sweep's 10 widths in a pack each,
#      bf16 with TF32) in the work dir WORK (default /tmp/dropout-lab-work); limit 400 s. No TeX
#      needed: the workflow's onstart asks for latexmk only when the paper job is to run. Its log goes
#      to OUT/snakemake.log, its figures (runs found, seconds from its start to the last metrics.json,
#      training seconds, accuracy by hidden rate) to OUT/workflow.json and check.txt;
#   2. every run's metrics.json, as results/runs/... of the work dir, into OUT/runs-SCALE.tgz (the
#      check fails if it exceeds the 16 MiB a file that comes back may hold; the paper grid's is
#      about 0.3 MiB). No pack.json: the workflow does not need it to build on the runs;
#   3. bench/grid_bench.py in bf16 + TF32 (100 s), in fp32 (60 s), and the MLP grid in bf16 + TF32
#      with torch.compile (90 s);
#   4. bench/paper_grid.py: the same grid in packs without Snakemake (240 s, skipped under 230 s
#      left, so at paper scale only with BUDGET=800 or so).
# Exit status: non-zero if the workflow or the tarball failed. The device tool's timeout_s: 600.
#
# Rehearsal (`rehearse`): a venv from REHEARSAL_PYTHON (default python$PYVER, else pyenv's) with torch
# $TORCH_VERSION (default 2.11.0, the image's) and numpy and the image's share of the closure from
# PyPI, no Snakemake or Hydra; then `DEVICE=cpu SCALE=smoke run` with the carried wheels. On the
# project's 2-core CPU machine: prepare 50 s, the venv 2 min (3 GB from PyPI), run 6 min (Snakemake
# trained the 58 smoke runs of the grid before the width sweep and the two new gates in 90 s).
#
# Train there, build the paper here: in a checkout,
#   tar -xzf runs-paper.tgz
#   snakemake --cores all --config scale=paper 'experiments=[mnist_mlp]' runs_per_job=all \
#       'train_overrides=[engine.precision=bf16,engine.tf32=true]'
# (the settings the runs were trained with: the workflow refuses runs of other settings). Every run's
# metrics.json exists, so nothing trains, with any runs_per_job (the packs stay missing, 'no update' in
# --summary); only a results/packs/.../pack.json newer than the runs, left by an earlier run in that
# checkout, would have run_metrics overwrite them.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=bench/carry
SITE=/tmp/dropout-lab-site
# What the GPU machine must import besides torch and numpy: the workflow and the package's own needs.
ROOTS="snakemake hydra-core omegaconf tqdm pyyaml jsonschema"
# Left out of the wheels (see above).
OMIT="--omit pulp"
PYVER=${PYVER:-3.12}

prepare() {
    local shared=${MNIST_DIR:-../shared/data/mnist} py=${PYTHON:-.venv/bin/python}
    rm -rf "$CARRY"
    mkdir -p "$CARRY/mnist" "$CARRY/wheels" "$CARRY/fallback"
    cp "$shared"/* "$CARRY/mnist/" || return 1
    "$py" bench/gpu_check.py closure --python-version "$PYVER" --image bench/gpu_image_packages.txt $OMIT $ROOTS \
        >"$CARRY/closure.txt" || return 1
    local platforms=(--platform manylinux1_x86_64 --platform manylinux2010_x86_64 --platform manylinux2014_x86_64)
    local n where spec dir
    for n in $(seq 5 39); do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    while read -r where spec; do
        dir=$CARRY/wheels
        [ "$where" = image ] && dir=$CARRY/fallback
        # A wheel from PyPI for that Python and platform, else one built here (pure Python only:
        # verified below).
        "$py" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
            "${platforms[@]}" -d "$dir" "$spec" 2>/dev/null \
            || "$py" -m pip wheel -q --no-deps -w "$dir" "$spec" \
            || { echo "no wheel for $spec"; return 1; }
    done <"$CARRY/closure.txt"
    "$py" bench/gpu_check.py verify --python-version "$PYVER" "$CARRY"/wheels/*.whl "$CARRY"/fallback/*.whl || return 1
    echo "$(ls "$CARRY"/wheels | wc -l) wheels to install, $(ls "$CARRY"/fallback | wc -l) fallbacks, for CPython $PYVER"
    du -sh "$CARRY"/* "$CARRY"  # the device tool carries at most 64 MiB
}

run() {
    local out=${1:-${OUT:-bench/out}}
    mkdir -p "$out" && out=$(cd "$out" && pwd)
    local py=${PYTHON:-python3} device=${DEVICE:-cuda} scale=${SCALE:-paper} budget=${BUDGET:-540}
    local work=${WORK:-/tmp/dropout-lab-work} check=$out/check.txt failed=0 t0=$SECONDS
    note() { echo "$*" | tee -a "$check"; }
    # step NAME LIMIT MIN LOG CMD...: CMD under `timeout`, for LIMIT seconds or what is left of the
    # budget if less; skipped if that is under MIN. Output to LOG (and the terminal).
    step() {
        local name=$1 want=$2 min=$3 log=$4 left limit started rc
        shift 4
        left=$((budget - (SECONDS - t0)))
        limit=$((want < left ? want : left))
        if ((limit < min)); then
            note "-- $name: skipped, $left s left of the $budget s budget"
            return 0
        fi
        started=$SECONDS
        timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
        rc=${PIPESTATUS[0]}
        local cut=""
        ((rc == 124 || rc == 137)) && cut=" (cut off at $limit s)"
        note "-- $name: exit $rc$cut after $((SECONDS - started)) s"
        return "$rc"
    }

    : >"$check"
    {
        echo "# GPU check, $(date -u +%FT%TZ), scale=$scale, device=$device, budget $budget s"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
        "$py" -c "import sys, torch; print('python', sys.version.split()[0], 'torch', torch.__version__)"
    } 2>&1 | tee -a "$check"
    if "$py" -c "import snakemake, hydra, omegaconf" 2>/dev/null; then
        note "snakemake, hydra and omegaconf import already: no wheels installed"
    else
        ls "$CARRY"/wheels/*.whl >/dev/null 2>&1 \
            || { note "no wheels in $CARRY/wheels: run 'bash bench/gpu_check.sh prepare' first"; return 1; }
        rm -rf "$SITE"
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$CARRY"/wheels/*.whl \
            || { note "could not install the carried wheels"; return 1; }
        export PYTHONPATH=$SITE
        # Where the image's version of a package misses a requirement, its carried wheel goes in too.
        local fallbacks
        fallbacks=$("$py" bench/gpu_check.py check --fallback "$CARRY/fallback" $OMIT $ROOTS 2> >(tee -a "$check" >&2))
        if [ -n "$fallbacks" ]; then
            "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
                $fallbacks || note "could not install the fallback wheels"
            "$py" bench/gpu_check.py check $OMIT $ROOTS 2>&1 | tee -a "$check"
        fi
        note "installed $(ls "$CARRY"/wheels | wc -l) wheels and $(echo "$fallbacks" | grep -c whl)" \
            "fallbacks in $((SECONDS - t0)) s"
    fi
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    # The data: from the carried mirror, cached outside bench/carry (which must stay small enough
    # to travel). The workflow caches it in WORK/data (its data.dir), the benches in DROPOUT_LAB_DATA_DIR.
    export DROPOUT_LAB_DATA_DIR=${DROPOUT_LAB_DATA_DIR:-/tmp/dropout-lab-data} DROPOUT_LAB_MNIST_MIRROR=$PWD/$CARRY/mnist

    note "## 1. the workflow trains the MNIST MLP grid at scale=$scale (snakemake --until run_metrics)"
    # KEEP_WORK=1 keeps the packs an earlier call trained on this (still warm) machine.
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$work"
    rm -f "$out/snakemake.log"
    mkdir -p "$work"
    local start rc
    start=$("$py" -c "import time; print(time.time())")
    # GRID=main (default): the fixed protocol's grid, without the tuned protocol's and the budget
    # sweep's packs, which do not fit one call at paper scale; GRID=all: the whole grid.
    local grid_args=()
    if [ "${GRID:-main}" = main ]; then
        printf 'protocols: {run: [fixed], judge: fixed}\ngrids: {mnist_mlp: {budget_sweep: null}}\n' > "$work/grid.yaml"
        grid_args=(--configfile "$work/grid.yaml")
    fi
    step snakemake 400 60 "$out/snakemake.log" "$py" -m snakemake -s Snakefile -d "$work" --cores all --scheduler greedy \
        "${grid_args[@]}" \
        --config scale="$scale" 'experiments=[mnist_mlp]' runs_per_job=all device="$device" \
        'train_overrides=[engine.precision=bf16,engine.tf32=true]' --until run_metrics >/dev/null
    rc=$?
    "$py" bench/gpu_check.py workflow --work "$work" --scale "$scale" --experiment mnist_mlp --device "$device" \
        --start "$start" --snakemake-rc "$rc" --summary "$out/workflow.json" 2>&1 | tee -a "$check"
    local found=${PIPESTATUS[0]}
    ((rc == 0 && found == 0)) || failed=1
    {
        grep '^plan:' "$out/snakemake.log"
        grep -E '^[0-9]+ of [0-9]+ steps' "$out/snakemake.log" | tail -n 1
        grep -iE 'error|exception' "$out/snakemake.log" | head -n 5
    } | sed 's/^/    /' >>"$check"

    note "## 2. the runs, for the paper elsewhere: runs-$scale.tgz"
    local tgz=$out/runs-$scale.tgz count size
    count=$(cd "$work" && find results/runs -name metrics.json 2>/dev/null | LC_ALL=C sort | tee "$work/runs.txt" | wc -l)
    if ((count == 0)); then
        note "FAILED: no metrics.json under $work/results/runs"
        failed=1
    else
        tar -czf "$tgz" -C "$work" -T "$work/runs.txt"
        size=$(stat -c %s "$tgz")
        note "runs-$scale.tgz: $count runs' metrics.json, $size bytes ($(numfmt --to=iec "$size"))"
        if ((size > 16 * 1024 * 1024)); then
            note "FAILED: runs-$scale.tgz is over 16 MiB, the most a file that comes back may hold"
            failed=1
        fi
    fi

    note "## 3. grid throughput (bench/grid_bench.py)"
    local bench_args=()
    [ "$device" = cpu ] && bench_args=(--device cpu --grid mlp --steps 10 --repeats 1 --baseline-models 1)
    step "grid_bench bf16+tf32" 100 60 "$check" "$py" bench/grid_bench.py "${bench_args[@]}" --precision bf16 --tf32 \
        --json "$out/bench_bf16.json"
    step "grid_bench fp32" 60 40 "$check" "$py" bench/grid_bench.py "${bench_args[@]}" --precision fp32 \
        --json "$out/bench_fp32.json"
    step "grid_bench compiled" 90 60 "$check" "$py" bench/grid_bench.py "${bench_args[@]}" --grid mlp --precision bf16 \
        --tf32 --compile --json "$out/bench_compiled.json"

    note "## 4. the same grid in packs without Snakemake (bench/paper_grid.py)"
    # Its runs stay in /tmp/dropout-lab-grid: the workflow's runs above are the ones that come back.
    step paper_grid 240 230 "$check" "$py" bench/paper_grid.py --scale "$scale" --device "$device" \
        --work /tmp/dropout-lab-grid --summary "$out/grid_summary.json" -- engine.precision=bf16 engine.tf32=true

    note "# done in $((SECONDS - t0)) s$( ((failed)) && echo ': FAILED (the workflow or the tarball)')"
    echo "== summary ($check)"
    grep -E '^(#|--|workflow:|runs-|FAILED|installed|snakemake, hydra)' "$check"
    return "$failed"
}

rehearse() {
    local out=${1:-/tmp/dropout-lab-rehearsal} venv=${REHEARSAL_VENV:-/tmp/dropout-lab-gpuvenv}
    local py=${REHEARSAL_PYTHON:-}
    if [ -z "$py" ]; then
        if "python$PYVER" -c '' 2>/dev/null; then
            py=python$PYVER
        else
            py=$(ls "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$PYVER".*/bin/python"$PYVER" 2>/dev/null | tail -n 1)
        fi
    fi
    if [ -z "$py" ]; then
        echo "no Python $PYVER here: set REHEARSAL_PYTHON, or PYVER to this machine's and prepare again"
        return 1
    fi
    [ -f "$CARRY/closure.txt" ] || { echo "run 'bash bench/gpu_check.sh prepare' first"; return 1; }
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" || return 1
        # What the GPU image has: torch, numpy and the image's share of the closure (latest versions).
        "$venv/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.11.0}" numpy \
            $(awk '$1 == "image" { sub(/==.*/, "", $2); print $2 }' "$CARRY/closure.txt") || return 1
    fi
    if "$venv/bin/python" -c "import snakemake" 2>/dev/null || "$venv/bin/python" -c "import hydra" 2>/dev/null; then
        echo "$venv has snakemake or hydra: not a rehearsal of the GPU image"
        return 1
    fi
    DEVICE=cpu SCALE=smoke PYTHON=$venv/bin/python WORK=${WORK:-/tmp/dropout-lab-rehearsal-work} run "$out"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    rehearse) shift; rehearse "$@" ;;
    *) echo "usage: bash bench/gpu_check.sh prepare | run [OUT] | rehearse [OUT]"; exit 2 ;;
esac
