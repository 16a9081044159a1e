"""Command line for `burstpilot forecast`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("forecast", help="short-term request and token rate forecasts")
    parser.set_defaults(handler=lambda args: parser.print_help())
