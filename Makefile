PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml setup.py extractor/_speedups.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,lint]'
	$(BIN)/extractor --version  # names the parser in use: compiled readers, or why not
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/extractor demo

test: $(STAMP)  # under 2 minutes on 2 cores: the slowest tests are listed to keep it so
	$(BIN)/python -m pytest -q -n auto --dist worksteal --durations=10

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

lint: $(STAMP)
	$(BIN)/ruff check extractor tests benchmarks
	$(BIN)/ruff format --check extractor
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
