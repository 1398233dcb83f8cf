# `make run` and `make test` create .venv and install pgsweep on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test bench ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/pgsweep $(ARGS)

test: $(STAMP)
	$(BIN)/pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_engine.py
	# torchattacks (a speed reference only) asks for torchvision, which would replace the pinned torch
	$(BIN)/pip install --quiet --no-deps torchattacks==3.5.1
	$(BIN)/python benchmarks/bench_adversarial.py

ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db --port 5000

clean:
	rm -rf $(VENV) outputs multirun mlflow.db mlartifacts
