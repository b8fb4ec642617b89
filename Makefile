# Two entry points (see README): `make demo` runs the main job, `make test` the test suite.
# Both create the virtual environment from scratch when it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Tests and CI read the real MedMNIST files from ../shared/medmnist when it is there;
# elsewhere the default root ./data is used (and downloaded into, with internet).
MDD_DATA ?= $(if $(wildcard ../shared/medmnist/breastmnist.npz),../shared/medmnist,data)
export MDD_DATA

.PHONY: demo test env clean

env: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and exact: the CPU build here; a range would pull a CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: env
	$(VENV)/bin/mdd demo

test: env
	$(PY) -m pytest

clean:
	rm -rf $(VENV)
