"""Command line for `burstpilot replay`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("replay", help="open-loop trace replay against OpenAI-compatible endpoints")
    parser.set_defaults(handler=lambda args: parser.print_help())
