#!/usr/bin/env bash
# The GPU check: grid throughput and a real MNIST paper grid, in one command of under 8 minutes.
#
#   bash bench/gpu_check.sh prepare      # here, with the internet (pip) and ../shared/data/mnist:
#                                        # fills bench/carry/ (ignored by git): MNIST files and wheels
#   bash bench/gpu_check.sh run [OUT]    # on the GPU machine (no internet, no Snakemake), with
#                                        # bench/carry/ carried along; figures go to OUT (default $OUT
#                                        # or bench/out)
#
# `run` needs only python3 with torch (and numpy); Hydra and OmegaConf come from the carried wheels
# when they are missing. It runs, each under its own time limit:
#   1. bench/grid_bench.py in bf16 + TF32, then fp32, then bf16 with torch.compile and CUDA graphs;
#   2. the whole MNIST MLP paper grid (145 runs, 50 epochs, engine.precision=bf16, engine.tf32=true)
#      through python -m dropout_lab.pack as one pack (runs_per_job: all), timing the training.
# Set DEVICE=cpu SCALE=smoke to rehearse it on a CPU machine.
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=bench/carry

prepare() {
    local shared=${MNIST_DIR:-../shared/data/mnist}
    rm -rf "$CARRY"
    mkdir -p "$CARRY/mnist" "$CARRY/wheels"
    cp "$shared"/* "$CARRY/mnist/"
    local py=${PYTHON:-.venv/bin/python}
    local versions
    versions=$("$py" - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ("hydra-core", "omegaconf", "antlr4-python3-runtime")))
EOF
)
    # Pure-Python packages: a wheel built here installs on the GPU machine's Python too.
    "$py" -m pip wheel --no-deps -q -w "$CARRY/wheels" $versions
    du -sh "$CARRY"  # the device tool carries at most 64 MiB
}

run() {
    local out=${1:-${OUT:-bench/out}}
    mkdir -p "$out"
    local py=${PYTHON:-python3}
    if ! "$py" -c "import hydra, omegaconf" 2>/dev/null; then
        "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/dropout-lab-site "$CARRY"/wheels/*.whl \
            || { echo "could not install the carried wheels; run 'bash bench/gpu_check.sh prepare' first"; exit 1; }
        export PYTHONPATH=/tmp/dropout-lab-site
    fi
    export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    # The verified cache goes outside bench/carry, which must stay small enough to travel.
    export DROPOUT_LAB_DATA_DIR=${DROPOUT_LAB_DATA_DIR:-/tmp/dropout-lab-data} DROPOUT_LAB_MNIST_MIRROR=$PWD/$CARRY/mnist
    local device=${DEVICE:-cuda} scale=${SCALE:-paper}
    local bench_args=()
    [ "$device" = cpu ] && bench_args=(--device cpu --steps 10 --repeats 1 --baseline-models 1)
    {
        echo "# GPU check, $(date -u +%FT%TZ)"
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
        "$py" -c "import torch; print('torch', torch.__version__)"
    } | tee "$out/check.txt"

    echo "## 1. grid throughput" | tee -a "$out/check.txt"
    timeout 100 "$py" bench/grid_bench.py "${bench_args[@]}" --precision bf16 --tf32 --json "$out/bench_bf16.json" \
        2>&1 | tee -a "$out/check.txt"
    timeout 60 "$py" bench/grid_bench.py "${bench_args[@]}" --precision fp32 --json "$out/bench_fp32.json" \
        2>&1 | tee -a "$out/check.txt"
    timeout 90 "$py" bench/grid_bench.py "${bench_args[@]}" --grid mlp --precision bf16 --tf32 --compile \
        --cuda-graphs --json "$out/bench_compiled.json" 2>&1 | tee -a "$out/check.txt"

    echo "## 2. the MNIST MLP grid at scale=$scale, trained by packs" | tee -a "$out/check.txt"
    timeout 210 "$py" bench/paper_grid.py --scale "$scale" --device "$device" --work "$out/grid" \
        --summary "$out/grid_summary.json" -- engine.precision=bf16 engine.tf32=true 2>&1 | tee -a "$out/check.txt"
    rm -rf "$out/grid"  # the per-run files stay on the machine; the summary comes back
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: bash bench/gpu_check.sh prepare | run [OUT]"; exit 2 ;;
esac
