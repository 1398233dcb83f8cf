# `make run` and `make test` create .venv and install pgsweep on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test docs bench ui clean

IS_311 := -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'

# A .venv left by a failed install with another Python is replaced, not reused.
$(STAMP): pyproject.toml
	@$(PYTHON) $(IS_311) 2>/dev/null || { echo "make: PYTHON=$(PYTHON) is not Python 3.11, which pgsweep needs: pass PYTHON=python3.11" >&2; exit 1; }
	@if [ -e $(VENV) ] && ! $(BIN)/python $(IS_311) 2>/dev/null; then echo "make: $(VENV) is not a Python 3.11 environment: recreating it"; rm -rf $(VENV); fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ray-launcher,docs]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pgsweep $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)
	$(MAKE) --no-print-directory docs

# The documentation site (mkdocs.yml, docs/): any broken link, missing figure or docstring
# that does not render fails the build. Its figures and tables: scripts/refresh_docs.py.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py
	# torchattacks (a speed reference only) asks for torchvision, which would replace the pinned torch
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/python benchmarks/bench_adversarial.py
	$(BIN)/python benchmarks/bench_adversarial.py --resnet
	$(BIN)/python benchmarks/bench_knockout.py

# One server process, no job runner: 2 processes, about 0.5 GB (mlflow's defaults start 4
# workers and a job runner). --app-name pgsweep (pgsweep/mlflow_ui.py) is MLflow's own server
# whose UI opens experiments in the model-training view in a browser that never chose a view
# (plain `mlflow ui`: GenAI, README); the link carries no workflowType, which would pin that
# one page's view.
PORT ?= 5000
ui: $(STAMP)
	@echo "MLflow UI: http://127.0.0.1:$(PORT)/#/experiments (Ctrl-C stops it)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --app-name pgsweep --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port $(PORT) --workers 1

clean:
	rm -rf $(VENV) outputs multirun mlflow.db mlartifacts server.db site
