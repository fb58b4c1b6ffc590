# Two commands for a fresh machine:
#   make demo   set up .venv and run a short real training that shows the gate at work
#   make test   set up .venv and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build on the project's machines; elsewhere use the build for your accelerator.
TORCH_SPEC ?= torch==2.13.0
# test processes (pytest-xdist); each runs with a share of the cores (tests/conftest.py)
TEST_JOBS ?= 2
DATA ?= $(if $(MEMGATE_DATA),$(MEMGATE_DATA),$(abspath ../shared/data))

.PHONY: setup demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	MEMGATE_DATA="$(DATA)" $(VENV)/bin/memgate demo

test: setup
	MEMGATE_DATA="$(DATA)" $(PY) -m pytest -q -n $(TEST_JOBS) --dist loadfile

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks

bench: setup
	MEMGATE_DATA="$(DATA)" $(PY) -m benchmarks.train_speed

# Removes the environment and caches only; trained runs (runs/, $HOME/memgate-runs) are never touched.
clean:
	@echo "removing $(VENV) .pytest_cache .ruff_cache (trained runs are kept)"
	rm -rf $(VENV) .pytest_cache .ruff_cache
