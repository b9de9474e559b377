# The course's two commands. Both create .venv on first use and reuse it afterwards;
# the install is redone only when pyproject.toml or the constraints file changes.
#
#   make lab                      JupyterLab on notebooks/ (prints the URL)
#   make lab LAB_ARGS="--no-browser --ip=127.0.0.1 --port=8899"   headless
#   make test                     the whole test suite
#   make test PYTEST_ARGS="-k data -x"                            a subset
#   make test TEST_JOBS=0         the suite in one process (no workers)

PYTHON ?= python3
VENV ?= .venv
CONSTRAINTS ?= constraints/ci.txt
LAB_ARGS ?=
PYTEST_ARGS ?=
# Test workers (pytest-xdist): two fit the course's 2-core reference machine and CI.
TEST_JOBS ?= 2

BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed
# Jupyter refuses to run as root unless told to (containers, workshop VMs often are root).
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
# nbgrader shells out to `alembic`, and notebooks call `jupyter`: the venv's bin goes first.
export PATH := $(BIN):$(PATH)

.PHONY: lab test install release check lint clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --constraint $(CONSTRAINTS) --editable '.[all]'
	@touch $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist worksteal,) $(PYTEST_ARGS)

# Instructor shortcuts (see "For instructors" in README.md).
release: $(STAMP)
	$(BIN)/python -m autograde release

check: $(STAMP)
	$(BIN)/python -m autograde check

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)
