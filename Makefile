# `make demo` and `make test` work on a fresh machine: each creates .venv when it is missing.
# torch==2.13.0 goes in first so that the project's `torch>=2.6` is already satisfied and pip
# does not fetch a multi-gigabyte CUDA build.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.proxysweep-installed

.PHONY: setup demo test test-slow test-all lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sweep launch sweeps/demo.yaml
	$(VENV)/bin/sweep status demo
	$(VENV)/bin/sweep fit demo
	@echo "Runs and metrics: MLflow store $${MLFLOW_TRACKING_URI:-./mlflow.db}, trial directories under ./runs/."
	@echo "Fit: outputs/fit/demo/fit.json, figures outputs/fit/demo/plots/*.png (also in the MLflow fit run)."
	@echo "Open the UI with: $(VENV)/bin/sweep ui demo   (then browse http://127.0.0.1:5000)"

# `make test`: everything but the tests marked slow (whole sweeps killed and resumed through the
# CLI, the deployment stack, the muP transfer check) and gpu; ~13-14 min on 2 cores.
# `make test-slow`: the slow ones, ~20-23 min; CI (.ci/run) runs both. `make test-all`: both in one.
test: $(STAMP)
	$(PY) -m pytest -m "not gpu and not slow" -q --durations=15

test-slow: $(STAMP)
	$(PY) -m pytest -m "slow and not gpu" -q --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -m "not gpu" -q --durations=25

lint: $(STAMP)
	$(VENV)/bin/ruff check trainer orchestrator fitter tests benchmarks

clean:
	rm -rf $(VENV) runs mlflow.db optuna.db mlruns mlflow-artifacts outputs coord_check .pytest_cache
