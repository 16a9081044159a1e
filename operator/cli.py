"""Command line for `burstpilot operator`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("operator", help="run the ServingPool operator")
    parser.set_defaults(handler=lambda args: parser.print_help())
