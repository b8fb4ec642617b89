# Two entry points (see README): `make demo` runs the main job, `make test` the test suite.
# Both create the virtual environment from scratch when it is missing or stale.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
# Tests and CI read the real MedMNIST files from ../shared/medmnist when it is there;
# elsewhere the default root ./data is used (and downloaded into, with internet).
MDD_DATA ?= $(if $(wildcard ../shared/medmnist/breastmnist.npz),../shared/medmnist,data)
export MDD_DATA

.PHONY: demo test env browser clean

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

test: env browser
	$(PY) -m pytest

# tests/test_browser.py runs the notebooks in JupyterLab + headless Chromium through
# Debian's chromium and chromium-driver (Selenium is told their paths: nothing is
# downloaded at run time). Installed here when missing and we are root with apt-get
# (about 30 s); elsewhere the browser test is skipped and says why.
CHROMIUM_PACKAGES := chromium chromium-driver
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing $(CHROMIUM_PACKAGES) for tests/test_browser.py (apt-get, log: $(VENV)/apt-chromium.log)"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  { apt-get install -y -q $(CHROMIUM_PACKAGES) || \
	    { apt-get update -q && apt-get install -y -q $(CHROMIUM_PACKAGES); }; \
	  } > $(VENV)/apt-chromium.log 2>&1 || \
	  echo "could not install $(CHROMIUM_PACKAGES) (see $(VENV)/apt-chromium.log): tests/test_browser.py will be skipped"; \
	else echo "no /usr/bin/chromium and not root with apt-get: tests/test_browser.py will be skipped"; fi

clean:
	rm -rf $(VENV)
