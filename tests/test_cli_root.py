"""The root command: --version on every subcommand, and shell completion scripts that complete."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from burstpilot import __version__
from burstpilot.cli import build_parser, main

BIN = Path(sys.executable).parent / "burstpilot"


def _commands(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_version_on_every_subcommand(capsys):
    commands = list(_commands(build_parser()))
    assert len(commands) > 10 and (("replay",) in dict(commands)) and (("sim", "serve") in dict(commands))
    for path, _ in commands:
        with pytest.raises(SystemExit) as e:
            main([*path, "--version"])
        assert e.value.code == 0
        assert capsys.readouterr().out.strip() == f"burstpilot {__version__}", path


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_bash_completion_completes_commands_and_flags():
    script = subprocess.run(
        [str(BIN), "completion", "bash"], capture_output=True, text=True, check=True
    ).stdout

    def complete(line: str) -> list[str]:
        words = line.split(" ")
        prog = (
            f"{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; COMP_LINE='{line}'; "
            f"COMP_POINT=${{#COMP_LINE}}; _shtab_burstpilot; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        )
        return subprocess.run(["bash", "-c", prog], capture_output=True, text=True, check=True).stdout.split()

    assert "replay" in complete("burstpilot re") and "sim" in complete("burstpilot s")
    assert complete("burstpilot replay --wait") == ["--wait-ready"]
    assert set(complete("burstpilot replay --api ")) == {"completions", "chat"}
    assert "--cold-start" in complete("burstpilot sim fleet --co")


def test_zsh_script_names_commands_and_flags():
    for shell in ("zsh",):
        out = subprocess.run(
            [str(BIN), "completion", shell], capture_output=True, text=True, check=True
        ).stdout
        assert "replay" in out and "--wait-ready" in out and "trace" in out, shell
