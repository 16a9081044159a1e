"""Fixtures of the end-to-end tier (the harness itself is e2e_harness.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from e2e_harness import (  # noqa: E402, F401  (fixtures are found by name)
    chart_installed,
    cluster,
    front_factory,
    keda,
    operator,
    procs,
    prometheus,
    toolchain,
)
