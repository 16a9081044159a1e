#!/usr/bin/env bash
# Creates the project's virtual environment and installs burstpilot in editable mode with its dev tools.
set -euo pipefail
python=${1:-python3}
venv=${2:-.venv}
"$python" - <<'PY'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"burstpilot needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]}")
PY
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[dev]'
