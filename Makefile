PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test bench docs lint clean

$(STAMP): pyproject.toml setup.py extractor/_speedups.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench,lint]'
	$(BIN)/extractor --version  # names the parser in use: compiled readers, or why not
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/extractor demo

# under 2 minutes on 2 cores: the slowest tests are listed to keep it so. Test files on tmpfs
# where there is one with 4 GB free (a run writes and deletes some 30,000 files, and each
# publish syncs the disk); a worker more than the cores, since each waits now and then
# (subprocesses, sockets, Dask). Bytecode is cached even where the environment says not to
# (PYTHONDONTWRITEBYTECODE): every CLI subprocess and worker would compile the package again
test: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE TMPDIR=$${TMPDIR:-$$(test -w /dev/shm && test $$(df -Pk /dev/shm | awk 'NR==2 {print $$4}') -gt 4000000 && echo /dev/shm || echo /tmp)} \
	  $(BIN)/python -m pytest -q -n $$(($$(getconf _NPROCESSORS_ONLN) + 1)) --dist worksteal --durations=10

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

# the data dictionary, from the code (tests/test_dictionary.py fails when it is stale)
docs: $(STAMP)
	$(BIN)/python -m extractor.dictionary > docs/tables.md.tmp
	mv docs/tables.md.tmp docs/tables.md

lint: $(STAMP)
	$(BIN)/ruff check extractor tests benchmarks
	$(BIN)/ruff format --check extractor
	$(BIN)/mypy

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
