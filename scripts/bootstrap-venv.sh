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
# -P keeps the working directory off sys.path: run from the repository root, `python -m` would otherwise
# import our operator/ folder in place of the standard library's operator module.
[ -x "$venv/bin/python" ] || "$python" -P -m venv "$venv"
"$venv/bin/python" -P -m pip install -q --upgrade pip
"$venv/bin/python" -P -m pip install -q -e '.[dev]'
