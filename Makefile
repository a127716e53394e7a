# Two entry points (see README): `make demo` and `make test`. Both set up .venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# The first Python >= 3.12 among: $PYTHON, python3.13, python3.12, python3, pyenv's installs.
PYTHON_CANDIDATES := $(PYTHON) python3.13 python3.12 python3 $(wildcard $(HOME)/.pyenv/versions/3.1[2-9]*/bin/python3)
FIND_PYTHON := for p in $(PYTHON_CANDIDATES); do \
	  if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; then \
	    command -v $$p; break; fi; done

.PHONY: demo test bench venv browser redis clean
venv: $(STAMP)

$(STAMP): pyproject.toml
	@py="$$($(FIND_PYTHON))"; \
	if [ -z "$$py" ]; then echo "error: gaelp_bayes needs Python >= 3.12 (tried: $(PYTHON_CANDIDATES)); install one or set PYTHON=/path/to/python3.12" >&2; exit 1; fi; \
	echo "using $$py ($$($$py --version))"; \
	[ -x $(PY) ] || $$py -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gaelp-bayes demo

# Chromium for the report's browser render test: Debian's package, installed when missing and possible
# (as root or with password-less sudo); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the report render test"; \
	    $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1; } || \
	    echo "warning: could not install chromium; the browser render test will skip"; \
	  else echo "warning: chromium missing and not installable here (needs apt-get as root); the browser render test will skip"; fi; }

# redis-server for the fleet ledger's tests and benchmark: Debian's package, installed the same way; the tests
# start their own server on a free port of 127.0.0.1 (nothing runs as a service), or skip and say why.
redis:
	@command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi; \
	  if [ "$$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's redis-server for the fleet ledger tests"; \
	    $$SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || \
	    { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q redis-server >/dev/null 2>&1; } || \
	    echo "warning: could not install redis-server; the fleet ledger's Redis tests will skip"; \
	  else echo "warning: redis-server missing and not installable here (needs apt-get as root); the fleet ledger's Redis tests will skip"; fi; }

test: $(STAMP) browser redis
	$(PY) -m pytest -q

bench: $(STAMP) redis
	$(PY) -m gaelp_bayes.bench all

clean:
	rm -rf $(VENV) models/demo models/demo.journal models/demo_windows.csv reports/demo reports/demo_figures reports/demo.html reports/simulation
