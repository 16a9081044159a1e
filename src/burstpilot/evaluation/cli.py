"""Command line for `burstpilot evaluate`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("evaluate", help="replay scaling policies on a workload: SLO attainment vs GPU-hours")
    parser.set_defaults(handler=lambda args: parser.print_help())
