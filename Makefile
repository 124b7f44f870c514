# `make run`: run the default suite; `make test`: run the test suite.
# Both bootstrap .venv on a fresh machine. TORCH pins the torch wheel (CPU build by default).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
# experiments `make run` runs at once (one process each; the results do not depend on it)
WORKERS ?= 2

.PHONY: run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,all]"
	touch $@

run: $(VENV)/.installed
	$(BIN)/memdyn run --workers $(WORKERS)

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q -n auto --dist worksteal

bench: $(VENV)/.installed
	$(BIN)/python benchmarks/engine.py

clean:
	rm -rf $(VENV) runs
