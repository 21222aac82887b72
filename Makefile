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

# The demo's schedule (successive halving, #18): four candidates train one epoch each, the best one goes on from
# its checkpoint to three; 240 s per rung leaves a full epoch of shapes:3000 room on a busy 2-core machine.
DEMO_ARGS ?= --max-candidates 4 --min-candidates 4 --rungs 1,3 --promote 0.25 --train-time-s 240

demo: setup
	$(VENV)/bin/capnas run $(DEMO_ARGS)

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

clean:
	rm -rf $(VENV) build dist *.egg-info
