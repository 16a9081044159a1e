"""The ``burstpilot`` console command.

Each area registers its own subcommands through ``register(subparsers)`` in its
``cli`` module, so the areas stay independent and this file stays small. A
subcommand handler receives the parsed ``argparse.Namespace`` and returns an
exit code (or None for 0).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from burstpilot import __version__
from burstpilot.errors import BurstpilotError

# (module with a register(subparsers) function) in the order shown by --help.
AREAS = (
    "burstpilot.traces.cli",
    "burstpilot.sim.cli",
    "burstpilot.loadtest.cli",
    "burstpilot.forecasting.cli",
    "burstpilot.evaluation.cli",
    "burstpilot.operator.cli",
    "burstpilot.operator.cluster.cli",
)


VERSION = f"burstpilot {__version__}"


def _version_everywhere(parser: argparse.ArgumentParser) -> None:
    """``--version`` on every subcommand, at any depth (``burstpilot sim serve --version``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases share one parser
                if "--version" not in sub._option_string_actions:
                    sub.add_argument("--version", action="version", version=VERSION, help="print the version")
                _version_everywhere(sub)


def _completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="burstpilot",
        description="Keep GPU-backed LLM serving inside its latency SLO through bursty traffic, "
        "at the fewest GPU-hours.",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in AREAS:
        importlib.import_module(name).register(sub)
    c = sub.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a tab-completion script for every burstpilot command and option. Bash: "
        'eval "$(burstpilot completion bash)" (or save it in /etc/bash_completion.d/burstpilot); zsh: '
        "burstpilot completion zsh > ~/.zfunc/_burstpilot.",
    )
    c.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    c.set_defaults(handler=_completion)
    _version_everywhere(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(handler(args) or 0)
    except BurstpilotError as exc:
        print(f"burstpilot: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("burstpilot: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
