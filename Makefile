# Two targets a newcomer needs: `make demo` (set up, run the main job on embedded defaults) and
# `make test` (set up, run the tests). Everything else is a building block of those two.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# torch 2.14.1 + torchvision 0.29.1 are the pair that installs (and imports together) on these machines.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup sysdeps demo test test-fast bench clean

setup: sysdeps $(VENV)/.installed

sysdeps:
	@bash scripts/sysdeps.sh

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PINS)
	$(PY) -m pip install -q -e '.[dev,embedded,ray,langgraph]'
	touch $@

demo: setup
	$(VENV)/bin/capnas run $(DEMO_ARGS)

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info
