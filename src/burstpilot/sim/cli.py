"""Command line for `burstpilot sim`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("sim", help="simulated vLLM-compatible GPU serving replicas")
    parser.set_defaults(handler=lambda args: parser.print_help())
