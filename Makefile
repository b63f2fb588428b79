# Everything goes through a local virtual environment so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is the default here; on a GPU cluster pass e.g.
#   make install TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.installed

# The numeric tests again with the oldest kernels torch and oneDNN have (SSE4.1, no AVX): fp32
# sums then run in another order, so a tolerance that only holds on one CPU fails here first.
CAPPED_ISA := ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default

.PHONY: install lint format test test-fast test-numeric-capped bench demo quality clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# ruff's linter and formatter check (the same version for everyone: pinned in the dev extra).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install
	$(PY) -m pytest -q
	$(MAKE) --no-print-directory test-numeric-capped

test-numeric-capped: install
	$(CAPPED_ISA) $(PY) -m pytest -q -m numeric

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m benchmarks.run

# The whole pipeline on synthetic data in ~11 minutes on a 2-core CPU (see `ct demo --help`);
# a second run reuses the data, the cache, the trained models and the diagnosed series.
DEMO ?= demo
demo: install
	$(VENV)/bin/ct demo --out $(DEMO)

# Detection quality of the recommended recipe on a LUNA16-layout folder (one JSON object; about
# 20 minutes on a 2-core CPU for 40 series of 256x256): make quality DATA=synth_data [OUT=...] [SEED=0]
# [TEST=independent LUNA16-layout folder, diagnosed and evaluated with the trained models]
DATA ?=
OUT ?= quality-run
SEED ?= 0
TEST ?=
quality: install
	@test -n "$(DATA)" || { echo "usage: make quality DATA=<LUNA16-layout folder> [OUT=dir] [SEED=n] [TEST=folder]"; exit 2; }
	$(PY) -m benchmarks.quality --data-root $(DATA) --out $(OUT) --seed $(SEED) $(if $(TEST),--test-root $(TEST))

clean:
	rm -rf $(VENV) .pytest_cache
