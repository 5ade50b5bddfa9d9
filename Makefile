# Two commands for a newcomer:  `make demo` (train + evaluate on the embedded dataset)  and  `make test`.
# Each creates .venv and installs the pinned dependencies when they are missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo course test test-fast lint docs notebooks benchmark gpu-check venv clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-notebooks.txt requirements-docs.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r requirements-notebooks.txt -r requirements-docs.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -c "import torch, torchvision; from torchvision.ops import nms; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m paa_toolkit.train --budget bench

# The course notebooks' detector (6–20 min on 2 cores the first time, then cached): prints where it is
course: $(STAMP)
	$(PY) -m paa_toolkit.course

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# ruff (pyproject.toml): the linter, then the formatter's check; CI runs this before the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The site (README, the course executed with its outputs, benchmarks, API reference) -> site/, strict.
# Renders the notebooks tests/test_notebooks.py executed (build/course/), else executes them against the cached
# course detector (`make course`; trained on first use). PAA_FAST=1 make docs: a quick preview.
docs: $(STAMP)
	$(PY) docs/build_site.py

benchmark: $(STAMP)
	$(PY) benchmarks/bench_assign.py

# The GPU path in <= 8 min on one GPU -> benchmarks/gpu_check.md + .json (without CUDA: the CPU quick mode)
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache build/site-src site
