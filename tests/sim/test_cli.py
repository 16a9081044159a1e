"""`burstpilot sim predict|serve|fleet` as a user runs them."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from burstpilot.cli import build_parser, main
from burstpilot.sim import load_profile
from burstpilot.sim.fleet import free_port_block

P8 = load_profile("h100-llama3-8b")
BURSTPILOT = Path(sys.executable).parent / "burstpilot"


def predict(capsys, *args) -> tuple[int, dict | str]:
    rc = main(["sim", "predict", "--profile", "h100-llama3-8b", *args])
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 else out.err)


def test_predict_context_is_per_sequence_and_kv_tokens_the_total(capsys):
    rc, out = predict(capsys, "--batch", "8", "--context", "8192")
    assert rc == 0 and out["kv_tokens"] == 8 * 8192
    assert out["decode_step_ms"] == pytest.approx(P8.decode_ms(8, 8 * 8192), abs=1e-3)
    rc, total = predict(capsys, "--batch", "8", "--kv-tokens", str(8 * 8192))
    assert rc == 0 and total == out
    assert predict(capsys, "--prefill-tokens", "512")[1]["prefill_ms"] == pytest.approx(
        P8.prefill_ms(512), abs=1e-3
    )


@pytest.mark.parametrize(
    "args, says",
    [
        (["--batch", "8"], "--context (tokens per sequence) or --kv-tokens"),
        (["--batch", "8", "--context", "40000"], "max_model_len, 32768"),
        (["--batch", "300", "--context", "10"], "max_num_seqs, 256"),
        (["--batch", "64", "--context", "10000"], "do not fit the profile's KV cache"),
        (["--batch", "8", "--kv-tokens", "4"], "at least --batch"),
        (["--prefill-tokens", "5", "--batch", "2"], "goes alone"),
    ],
)
def test_predict_refuses_impossible_steps(capsys, args, says):
    rc, err = predict(capsys, *args)
    assert rc == 2 and says in err and "Traceback" not in err


def test_predict_context_and_kv_tokens_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "sim",
                "predict",
                "--profile",
                "h100-llama3-8b",
                "--batch",
                "2",
                "--context",
                "1",
                "--kv-tokens",
                "2",
            ]
        )
    assert "not allowed with argument" in capsys.readouterr().err


def sim_commands():
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    sim = sub.choices["sim"]
    return next(a for a in sim._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("command", ["predict", "serve", "fleet", "simulate", "profiles"])
def test_every_option_has_help_and_its_default_once(command):
    parser = sim_commands()[command]
    for action in parser._actions:
        name = action.option_strings or action.dest
        assert action.help, f"sim {command} {name} has no help"
        assert action.help.count("default") <= 1, name
        if action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            assert "default" in action.help, f"sim {command} {name} does not say its default"
    assert "(default: None)" not in parser.format_help()


def read_until(proc, pattern: str, timeout_s: float = 60) -> list[str]:
    """Lines from the process's stdout (a pipe, not a terminal) until one contains ``pattern``."""
    lines = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if pattern in line:
            return lines
    raise AssertionError(f"no line with {pattern!r}; got {lines}")


def run_cli(*args):
    return subprocess.Popen(
        [str(BURSTPILOT), "sim", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ,
    )


def stop(proc) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_fleet_says_when_replicas_are_ready_off_a_terminal():
    port = free_port_block(4)
    proc = run_cli(
        "fleet", "--profile", "h100-llama3-8b", "--replicas", "2", "--cold-start", "1.5", "--port", str(port)
    )
    try:
        lines = read_until(proc, "ready: 2 of 2")
        assert any("waiting for the cold start: 0 of 2 ready" in x for x in lines), lines
        assert sum("replica 127.0.0.1:" in x and "ready" in x for x in lines) == 2, lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200  # it said ready when it was
    finally:
        assert stop(proc) == 0, proc.stderr.read()


def test_serve_says_when_the_model_is_loaded_off_a_terminal():
    port = free_port_block(1)
    proc = run_cli("serve", "--profile", "h100-llama3-8b", "--cold-start", "1", "--port", str(port))
    try:
        lines = read_until(proc, "ready: 1 of 1")
        assert any("waiting for the cold start" in x for x in lines), lines
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            assert r.status == 200
    finally:
        assert stop(proc) == 0, proc.stderr.read()


def test_serve_on_a_port_in_use_is_a_clear_error():
    port = free_port_block(1)
    first = run_cli("serve", "--profile", "h100-llama3-8b", "--cold-start", "0", "--port", str(port))
    try:
        read_until(first, "ready")
        second = run_cli("serve", "--profile", "h100-llama3-8b", "--cold-start", "0", "--port", str(port))
        _, err = second.communicate(timeout=60)
        assert (
            second.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in err and "Traceback" not in err
        )
    finally:
        stop(first)
