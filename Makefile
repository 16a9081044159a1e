# The two commands a fresh machine needs:
#   make demo   runs the main job on the embedded default (simulated GPU fleet)
#   make test   runs the whole test suite (lint, packaging, unit, end-to-end)
# Heavy binaries are cached outside the repository, under $(BURSTPILOT_CACHE).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export BURSTPILOT_CACHE ?= $(HOME)/.cache/burstpilot
PYTEST_ARGS ?=

.PHONY: venv demo demo-cluster cluster-up cluster-down test lint unit e2e toolchain browser bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	scripts/bootstrap-venv.sh $(PYTHON) $(VENV)
	@touch $@

demo: venv
	$(BIN)/burstpilot demo --out reports/demo

# A burst replayed through a local cluster (control plane, kwok GPU nodes, Prometheus, the chart, the operator):
# the operator's decisions live, then reports/demo-cluster/README.md with replicas vs arrival rate.
demo-cluster: venv toolchain
	$(BIN)/burstpilot cluster demo --out reports/demo-cluster

# The local cluster on its own, until cluster-down (state under $(BURSTPILOT_CACHE)/cluster).
cluster-up: venv toolchain
	$(BIN)/burstpilot cluster up

cluster-down: venv
	$(BIN)/burstpilot cluster down

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

toolchain:
	scripts/build-toolchain.sh

# Debian's headless Chromium, for the tests that open the HTML reports as a reader would.
browser:
	scripts/install-browser.sh >/dev/null

unit: venv
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

e2e: venv toolchain
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test: venv lint toolchain browser
	BURSTPILOT_REQUIRE_BROWSER=1 $(BIN)/pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist reports
