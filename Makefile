# The two set-up commands of the README live here: `make demo` and `make test`.
# Both work on a fresh Debian machine as root: they install the Debian packages
# the project needs, create .venv and install the project into it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := miredo miredo-server iproute2 nftables iputils-ping tcpdump iperf3 procps

.PHONY: demo test lint bench deps venv clean

deps:
	@bash scripts/install-deps.sh $(APT_PACKAGES)

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	@bash scripts/demo.sh

test: deps venv
	$(VENV)/bin/ruff check .
	TEREDO_TESTS_NO_SKIP=1 $(PY) -m pytest -p no:cacheprovider

lint: venv
	$(VENV)/bin/ruff check .

bench: deps venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) build *.egg-info
