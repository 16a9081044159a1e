"""Command line for `burstpilot trace`."""

from __future__ import annotations


def register(sub) -> None:
    parser = sub.add_parser("trace", help="read, characterize and generate traces")
    parser.set_defaults(handler=lambda args: parser.print_help())
