# The two commands a fresh machine needs:
#   make demo   runs the main job on the embedded default (simulated GPU fleet)
#   make test   runs the whole test suite (lint, packaging, unit, end-to-end)
# Heavy binaries are cached outside the repository, under $(BURSTPILOT_CACHE).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export BURSTPILOT_CACHE ?= $(HOME)/.cache/burstpilot
PYTEST_ARGS ?=

.PHONY: venv demo test lint unit e2e toolchain chromium bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	scripts/bootstrap-venv.sh $(PYTHON) $(VENV)
	@touch $@

demo: venv
	$(BIN)/burstpilot demo --out reports/demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

toolchain:
	scripts/build-toolchain.sh

# Headless Chromium from Debian's packages, for the HTML report tests (tests/evaluation/test_html_report.py).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

unit: venv
	$(BIN)/pytest -m "not e2e" $(PYTEST_ARGS)

e2e: venv toolchain
	$(BIN)/pytest -m e2e $(PYTEST_ARGS)

test: venv lint toolchain
	$(BIN)/pytest $(PYTEST_ARGS)

bench: venv
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build dist reports
