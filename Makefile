# Two commands are the whole set-up: `make reproduce` and `make test` create .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PROFILE ?= paper
RUN_DIR ?= runs/$(PROFILE)
# Two pytest-xdist workers, each taking whole test files (a module's fixtures are built once);
# tests/conftest.py gives each worker its share of the cores' threads.
PYTEST_WORKERS ?= 2
PYTEST_ARGS ?= -n $(PYTEST_WORKERS) --dist loadfile --durations=15
# YES=1 confirms a run whose estimated cost on this machine passes 2 hours.
YES ?=

.PHONY: reproduce test test-fast lint notebooks-clean benchmarks clean site

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev]'
	touch $@

reproduce: $(VENV)/.installed
	$(PY) -m nbutils reproduce --profile $(PROFILE) --run-dir $(RUN_DIR) $(if $(YES),--yes,)

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

# The unit tests alone (no training, no papermill): about a minute and a half on 2 cores.
test-fast: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS) -m "not slow"

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check nbutils tests benchmarks scripts

benchmarks: $(VENV)/.installed
	$(PY) benchmarks/train_throughput.py
	$(PY) benchmarks/analysis_speed.py
	$(PY) benchmarks/eval_batch.py

# The README, docs/ and the executed notebooks as one static site: open build/site/index.html.
# MkDocs (--strict) and a check of every link in the built HTML fail it on a broken link.
site: $(VENV)/.installed
	$(PY) -m nbutils site

clean:
	rm -rf runs build .pytest_cache

# Notebooks 06-10 and 12 (experiments beyond the headline): runs under runs/experiments (reused
# when finished), figures, results JSON and executed copies under figures/experiments.
EXPERIMENTS ?=
.PHONY: experiments
experiments: $(VENV)/.installed
	$(PY) -m nbutils experiments $(if $(EXPERIMENTS),--only $(EXPERIMENTS),)
