# twinml — two commands from a fresh clone: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install quickstart notebook lint format test test-slow bench clean

install: $(STAMP)

# torch first, pinned: on these machines 2.13.0 is a CPU wheel on local disk;
# an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev,spark]'
	touch $(STAMP)

quickstart: install
	$(VENV)/bin/twinml quickstart

# the walkthrough, run top to bottom in notebooks/ (its outputs in notebooks/runs/walkthrough/);
# the executed copy is notebooks/runs/walkthrough.ipynb
notebook: install
	mkdir -p notebooks/runs
	$(VENV)/bin/jupyter-execute notebooks/walkthrough.ipynb --output='runs/{notebook_name}'

# ruff: lint rules and format in pyproject.toml ([tool.ruff]); `make format` applies both fixes.
# mypy: the type checker on twinml/ ([tool.mypy])
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: install lint
	$(PY) -m pytest -q -m "not slow"

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) benchmarks/features.py
	$(PY) benchmarks/simulate.py
	$(PY) benchmarks/baseline.py
	$(PY) benchmarks/sequence.py
	$(PY) benchmarks/ingest.py --omop-subjects 100000
	$(PY) -m pip install -q -e ".[benchmarks]"
	$(PY) benchmarks/whatif.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
