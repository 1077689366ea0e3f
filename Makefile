# The two commands: `make paper` (the whole workflow) and `make test`.
# Both build the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SCALE ?= paper
CORES ?= all
# More workflow settings, all in Snakemake's one --config: CONFIG="experiments=[mnist_mlp] runs_per_job=all".
CONFIG ?=
# More Snakemake options, e.g. ARGS="-n" or ARGS="--profile workflow/profiles/slurm".
ARGS ?=
# Snakemake keeps only the last of several --config flags: a second one would silently drop SCALE.
ifneq (,$(findstring --config,$(ARGS)))
$(error ARGS holds --config, which would replace scale=$(SCALE); pass settings as CONFIG="key=value ...")
endif

.PHONY: env test paper report bench bench-grid clean-env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[workflow,dev]'
	touch $@

test: env
	$(BIN)/python -m pytest

paper: env
	$(BIN)/snakemake --cores $(CORES) $(ARGS) --config scale=$(SCALE) $(CONFIG)

report: env
	$(BIN)/snakemake $(ARGS) --config scale=$(SCALE) $(CONFIG) --report results/report.html

bench: env
	$(BIN)/python bench/epoch_bench.py

# Grid throughput: K models per step against one at a time (sizes for the device found).
bench-grid: env
	$(BIN)/python bench/grid_bench.py

clean-env:
	rm -rf $(VENV)
