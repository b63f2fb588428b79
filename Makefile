# Everything goes through a local virtual environment so a fresh clone needs only Python 3.11+.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch is the default here; on a GPU cluster pass e.g.
#   make install TORCH_SPEC="torch==2.13.0" PIP_TORCH_ARGS="--index-url <your CUDA wheel index>"
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
STAMP := $(VENV)/.installed

.PHONY: install test test-fast bench demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) -m benchmarks.run

# The whole pipeline on synthetic data in ~11 minutes on a 2-core CPU (see `ct demo --help`);
# a second run reuses the data, the cache, the trained models and the diagnosed series.
DEMO ?= demo
demo: install
	$(VENV)/bin/ct demo --out $(DEMO)

clean:
	rm -rf $(VENV) .pytest_cache
