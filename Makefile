# The two commands: `make paper` (the whole workflow) and `make test`.
# Both build the virtual environment first if it is missing or out of date.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# auto: paper where a GPU is found, quick on a CPU; SCALE=paper|quick|smoke is obeyed.
SCALE ?= auto
CORES ?= all
# More workflow settings, all in Snakemake's one --config: CONFIG="experiments=[mnist_mlp] runs_per_job=all".
CONFIG ?=
# More Snakemake options, e.g. ARGS="-n" or ARGS="--profile profiles/slurm".
ARGS ?=
# Snakemake keeps only the last of several --config flags: a second one would silently drop SCALE.
ifneq (,$(findstring --config,$(ARGS)))
$(error ARGS holds --config, which would replace scale=$(SCALE); pass settings as CONFIG="key=value ...")
endif

.PHONY: env tex test paper reference report bench bench-grid bench-pipeline clean-env

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[workflow,dev]'
	# The CITATION.cff validator (tests/test_citation.py): cffconvert declares jsonschema<4, older than this
	# project's pin, and validates with 4.x; so it goes in without its own version limits.
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -c requirements.lock cffconvert pykwalify ruamel.yaml
	touch $@

# TeX for the paper: installed on Debian or Ubuntu as root, else one line naming the command (tools/setup-tex).
# A dry run (ARGS=-n) installs nothing.
tex:
ifeq (,$(filter -n --dry-run --dryrun,$(ARGS)))
	tools/setup-tex
endif

test: env
	$(BIN)/python -m pytest

paper: env tex
	$(BIN)/snakemake --cores $(CORES) $(ARGS) --config scale=$(SCALE) $(CONFIG)

# The paper-scale report from the reference runs shipped in reference/ (trained on an H200), built in
# build/reference/ without a GPU, data or training (the train and fetch rules may not run); results/ untouched.
REFERENCE := build/reference
ARCHIVE := reference/mnist_mlp-paper-h200.tgz
reference: env tex
	@test -f $(ARCHIVE) || { echo "error: $(ARCHIVE) is missing; restore it with: git checkout -- $(ARCHIVE)" >&2; exit 1; }
	@tar -tzf $(ARCHIVE) >/dev/null 2>&1 || { echo "error: $(ARCHIVE) cannot be read (a damaged archive); restore it with: git checkout -- $(ARCHIVE)" >&2; exit 1; }
	rm -rf $(REFERENCE) && mkdir -p $(REFERENCE)
	tar -xzf $(ARCHIVE) -C $(REFERENCE)
	$(BIN)/snakemake -s $(CURDIR)/Snakefile --directory $(REFERENCE) --cores $(CORES) $(ARGS) \
		--configfile $(CURDIR)/reference/grid.yaml \
		--allowed-rules check_runs aggregate theory figures claims paper all everything
	@echo "reference: $(REFERENCE)/results/paper/paper.pdf"

report: env
	$(BIN)/snakemake $(ARGS) --config scale=$(SCALE) $(CONFIG) --report results/report.html

bench: env
	$(BIN)/python bench/epoch_bench.py

# Grid throughput: K models per step against one at a time (sizes for the device found).
bench-grid: env
	$(BIN)/python bench/grid_bench.py

# The pipeline's overhead: wall time against the training floor, smoke grid and the reference build.
bench-pipeline: env tex
	$(BIN)/python bench/pipeline_bench.py --scales smoke --reference

clean-env:
	rm -rf $(VENV)
