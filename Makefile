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

# A first, short version of the demo (issue 9 will tune sizes and report figures): synthetic data,
# cache, both models for a couple of epochs, diagnosis of the validation series, evaluation.
# A second run reuses the data, the cache and finished runs.
DEMO ?= demo
CT := $(VENV)/bin/ct
demo: install
	test -f $(DEMO)/data/candidates.csv || $(CT) synth $(DEMO)/data --series 12 --size small --seed 0
	$(CT) prepcache --data-root $(DEMO)/data --cache-dir $(DEMO)/cache --workers 2
	test -f $(DEMO)/runs/seg/last.ckpt || $(CT) train-seg --data-root $(DEMO)/data --cache-dir $(DEMO)/cache --out $(DEMO)/runs/seg --epochs 2 --epoch-size 400 --val-stride 4
	test -f $(DEMO)/runs/cls/last.ckpt || $(CT) train-cls --data-root $(DEMO)/data --cache-dir $(DEMO)/cache --out $(DEMO)/runs/cls --epochs 2 --epoch-size 640 --val-stride 4
	$(PY) -c "from pathlib import Path; from ct_pipeline.catalog import open_catalog; \
	  val = open_catalog([Path('$(DEMO)/data')]).split(4)[1]; Path('$(DEMO)/val_series.txt').write_text('\n'.join(val) + '\n')"
	$(CT) diagnose --data-root $(DEMO)/data --series-file $(DEMO)/val_series.txt --seg-model $(DEMO)/runs/seg/best.ckpt \
	  --cls-model $(DEMO)/runs/cls/best.ckpt --csv $(DEMO)/findings.csv --report $(DEMO)/report
	$(CT) evaluate $(DEMO)/findings.csv --annotations $(DEMO)/data/annotations.csv --series-file $(DEMO)/val_series.txt \
	  --plot $(DEMO)/froc.png --bootstrap 200
	@echo "report: $(DEMO)/report/index.html  FROC: $(DEMO)/froc.png  TensorBoard: tensorboard --logdir $(DEMO)/runs  checkpoints: $(DEMO)/runs/*/best.ckpt"

clean:
	rm -rf $(VENV) .pytest_cache
