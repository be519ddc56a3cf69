# The two set-up commands of the README live here: `make demo` and `make test`.
# Both work on a fresh Debian machine as root: they install the Debian packages
# the project needs, create .venv and install the project into it.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := miredo miredo-server iproute2 nftables iputils-ping tcpdump iperf3 procps prometheus miniupnpd miniupnpc \
	openssh-server openssh-client python3-venv systemd zsh gcc python3-dev

.PHONY: demo test lint bench flood-bench fuzz deps venv clean

deps:
	@bash scripts/install-deps.sh $(APT_PACKAGES)

# setup.py builds the compiled relay data path (engine/runtime/_fastloop.c) from source: gcc
# and python3-dev above; a changed C file is rebuilt by the same editable install.
# editable_mode=compat puts the checkout on sys.path with a plain .pth line; the default mode
# installs an import finder that every interpreter start then imports (with pathlib, re,
# urllib.parse...): `site` took 18 ms instead of 3, and a bare interpreter 1.8 MiB more PSS
# (docs/performance.md, "The evening pass")
$(VENV)/.installed: Makefile pyproject.toml setup.py engine/runtime/_fastloop.c
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' --config-settings editable_mode=compat
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	@bash scripts/demo.sh

# Two pytest workers, one test file each at a time (pytest-xdist, --dist loadfile: a file's
# module fixtures, such as one lab for a whole file, stay in one worker). The kernel tests spend
# most of their time waiting on timers and the network, so two at once roughly halve the run.
# Their own short folder under /tmp: a worker's default one is long enough to push a fleet's
# supervisor.sock past the 107 bytes a UNIX socket path can hold.
TEST_WORKERS ?= 2
test: deps venv
	$(VENV)/bin/ruff check .
	base=$$(mktemp -d /tmp/mdt.XXXXXX) && \
	TEREDO_TESTS_NO_SKIP=1 $(PY) -m pytest -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile \
		--basetemp=$$base; rc=$$?; [ $$rc -ne 0 ] || rm -rf $$base; exit $$rc

lint: venv
	$(VENV)/bin/ruff check .

bench: deps venv
	$(PY) -m bench

# A relay under an on-the-wire flood to FLOOD_DESTINATIONS distinct Teredo destinations, ours
# beside Debian's miredo (bench/README.md); not part of `make test`. About 3.5 min per round.
FLOOD_DESTINATIONS ?= 100000
FLOOD_ROUNDS ?= 1
flood-bench: deps venv
	$(PY) -m bench.flood --destinations $(FLOOD_DESTINATIONS) --rounds $(FLOOD_ROUNDS)

# Coverage-guided fuzzing of the parsers and roles (fuzz/), FUZZ_SECONDS per target; new
# inputs are kept in fuzz/corpus/, findings land in fuzz/crashes/. CI runs 6 s per target.
FUZZ_SECONDS ?= 600
fuzz: venv
	$(PY) -m fuzz all --seconds $(FUZZ_SECONDS) --keep --report bench/results/fuzz-latest.json

clean:
	rm -rf $(VENV) build *.egg-info
