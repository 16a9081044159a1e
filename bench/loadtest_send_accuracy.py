"""Send accuracy of burstpilot's replay against vLLM bench serve, AIPerf, GuideLLM and inference-perf.

One fast fake OpenAI streaming server (bench/loadtest_fake_server.py, its own process) logs the
arrival time of every request; it is the judge, independent of each tool's own report. Each tool
drives it at constant rates (200 to 3200 req/s by default, 15 s each), interleaved per rate,
and burstpilot (and AIPerf, through its timestamped-trace mode) also replays a bursty BurstGPT-shaped
trace. Per run: requests that arrived, achieved rate, and the p50/p99/max of |send error|, where the
send error of the k-th arriving request is its arrival time minus the k-th scheduled time, with the
schedule anchored at the median offset (each tool starts its clock at its own moment). A rate is held
when every request arrived, at the rate, with p99 |send error| <= 5 ms; issue 16's target is that
burstpilot holds twice the highest rate the best peer holds, measured side by side in this one run.

Every peer lives in its own virtual environment under $BURSTPILOT_CACHE/bench-venvs (default
~/.cache/burstpilot), installed on first use with a time limit; a tool that cannot be installed or
run is reported with the reason. A tiny byte-level BPE tokenizer directory is made locally, since
none of the tools can download one here.

    .venv/bin/python bench/loadtest_send_accuracy.py [--rates 200,400,800,1600,3200] [--duration 15]
        [--tools 'burstpilot,vllm bench serve,aiperf'] [--repeats 1]
Writes bench/results/loadtest.json (after every run) and prints the table and the target's verdict.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from burstpilot.traces import make_trace, write_burstgpt_csv
from burstpilot.traces.generate import generate_preset

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BURSTPILOT_CACHE", Path.home() / ".cache" / "burstpilot"))
VENVS = CACHE / "bench-venvs"
PROMPT_TOKENS, OUTPUT_TOKENS = 32, 2
console = Console(width=200)

# name -> (venv folder, python minor version, pip requirements, executable)
PEERS = {
    "vllm bench serve": ("vllm", "3.11", ["vllm"], "vllm"),
    "aiperf": ("aiperf", "3.11", ["aiperf"], "aiperf"),
    "guidellm": ("guidellm", "3.11", ["guidellm"], "guidellm"),
    "inference-perf": (
        "inference-perf",
        "3.12",
        ["inference-perf"],
        "inference-perf",
    ),  # needs Python >= 3.12
}
SERVER_VENV = ("server", "3.11", ["aiohttp", "uvloop", "tokenizers"], "python")

TOKENIZER_SCRIPT = r"""
import json, random, sys
from pathlib import Path
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
rng = random.Random(0)
words = ("the of and to in is that for it as was with be by on not he this are or his from at which but have "
         "an had they you were their one all we can her has there been if more when will would who so no burst "
         "token serve model latency request").split()
corpus = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(2000)]
tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
tok.save(str(out / "tokenizer.json"))
special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
(out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
    "model_max_length": 32768, "clean_up_tokenization_spaces": False, **special}))
(out / "special_tokens_map.json").write_text(json.dumps(special))
(out / "config.json").write_text(json.dumps({"model_type": "gpt2", "vocab_size": tok.get_vocab_size(),
    "bos_token_id": 0, "eos_token_id": 0, "n_positions": 32768, "max_position_embeddings": 32768}))
"""


# ---------------------------------------------------------------------------------------------
# environments


def python_for(version: str) -> str | None:
    for cand in (f"python{version}", str(Path.home() / ".pyenv" / "versions" / version / "bin" / "python")):
        path = shutil.which(cand)
        if path:
            return path
    pyenv = Path.home() / ".pyenv" / "versions"
    for d in sorted(pyenv.glob(f"{version}.*")) if pyenv.is_dir() else []:
        if (d / "bin" / "python").exists():
            return str(d / "bin" / "python")
    return None


def ensure_venv(name: str, spec, timeout_s: float) -> tuple[Path | None, str]:
    """The venv's executable, installing it if needed; (None, reason) when it can't be had."""
    folder, version, reqs, exe = spec
    venv = VENVS / folder
    target = venv / "bin" / exe
    if target.exists():
        return target, "cached"
    py = python_for(version)
    if py is None:
        return None, f"no Python {version} on this machine"
    VENVS.mkdir(parents=True, exist_ok=True)
    log = venv.with_suffix(".install.log")
    t = time.monotonic()
    console.print(f"installing {name} into {venv} (limit {timeout_s:.0f} s) ...")
    try:
        subprocess.run([py, "-m", "venv", str(venv)], check=True, capture_output=True)
        with open(log, "w") as fh:
            subprocess.run(
                [
                    "nice",
                    "-n",
                    "19",
                    str(venv / "bin" / "pip"),
                    "install",
                    "--disable-pip-version-check",
                    *reqs,
                ],
                check=True,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
            )
    except subprocess.TimeoutExpired:
        return None, f"pip install {' '.join(reqs)} did not finish in {timeout_s:.0f} s"
    except subprocess.CalledProcessError:
        tail = log.read_text().strip().splitlines()[-3:] if log.exists() else []
        return None, f"pip install {' '.join(reqs)} failed: {' | '.join(tail)[:300]}"
    if not target.exists():
        return None, f"installed, but {target} is missing"
    return target, f"installed in {time.monotonic() - t:.0f} s"


def version_of(venv_bin: Path, dist: str) -> str:
    py = venv_bin.parent / "python"
    r = subprocess.run(
        [str(py), "-I", "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or "?"


# ---------------------------------------------------------------------------------------------
# the judge


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 (loopback only)
        return json.loads(r.read())


def _die_with_parent() -> None:
    """In the child: SIGTERM when this benchmark ends, however it ends (PR_SET_PDEATHSIG)."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def start_server(python: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [str(python), str(REPO / "bench" / "loadtest_fake_server.py"), "--port", str(port)],
        preexec_fn=_die_with_parent,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            http_json(url + "/v1/models")
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the fake server did not start")


def take_arrivals(url: str) -> np.ndarray:
    return np.sort(np.asarray(http_json(url + "/_arrivals?clear=1")["arrivals"], dtype=np.float64))


def score(arrivals: np.ndarray, schedule: np.ndarray) -> dict:
    """Pair the k-th arrival with the k-th scheduled time; anchor at the median offset."""
    n_expected = schedule.size
    if arrivals.size > n_expected:  # warm-up or probe requests come first
        arrivals = arrivals[arrivals.size - n_expected :]
    n = arrivals.size
    if n < 2:
        return {"arrived": int(n), "expected": int(n_expected)}
    err = arrivals - schedule[:n]
    err = np.abs(err - np.median(err))
    return {
        "arrived": int(n),
        "expected": int(n_expected),
        "achieved_rate": (n - 1) / float(arrivals[-1] - arrivals[0]),
        "scheduled_rate": (n - 1) / float(schedule[n - 1] - schedule[0])
        if schedule[n - 1] > schedule[0]
        else None,
        "send_error_p50_ms": float(np.percentile(err, 50) * 1e3),
        "send_error_p99_ms": float(np.percentile(err, 99) * 1e3),
        "send_error_max_ms": float(err.max() * 1e3),
    }


# ---------------------------------------------------------------------------------------------
# the tools


BURSTPILOT = Path(sys.executable).parent / "burstpilot"  # this checkout's, from its virtual environment

# the burstpilot variants this benchmark runs: name -> (extra flags, extra environment)
BURSTPILOT_VARIANTS = {
    "burstpilot": ([], {}),
    "burstpilot --workers 2": (["--workers", "2"], {}),
    "burstpilot (asyncio loop)": ([], {"BURSTPILOT_EVENT_LOOP": "asyncio"}),  # what uvloop gains
}


def cmd_burstpilot(url, workload_csv, out, variant="burstpilot", **_):
    extra, _env = BURSTPILOT_VARIANTS[variant]
    return [
        str(BURSTPILOT),
        "replay",
        str(workload_csv),
        "--target",
        url,
        "--out",
        str(out),
        "--no-progress",
        "--no-plot",
        "--no-report",
        "--no-server-metrics",
        *extra,
    ]


def cmd_vllm(exe, url, tok, rate, n, **_):
    return [
        str(exe),
        "bench",
        "serve",
        "--backend",
        "vllm",
        "--base-url",
        url,
        "--endpoint",
        "/v1/completions",
        "--model",
        "tiny",
        "--tokenizer",
        str(tok),
        "--dataset-name",
        "random",
        "--random-input-len",
        str(PROMPT_TOKENS),
        "--random-output-len",
        str(OUTPUT_TOKENS),
        "--num-prompts",
        str(n),
        "--request-rate",
        str(rate),
        "--burstiness",
        "1000000",  # ~constant gaps
        "--ignore-eos",
        "--disable-tqdm",
        "--seed",
        "0",
    ]


def cmd_aiperf(exe, url, tok, rate, n, out, trace_jsonl=None, **_):
    cmd = [
        str(exe),
        "profile",
        "--model",
        "tiny",
        "--tokenizer",
        str(tok),
        "--url",
        url,
        "--endpoint-type",
        "completions",
        "--streaming",
        "--extra-inputs",
        "ignore_eos:true",
        "--ui-type",
        "none",
        "--output-artifact-dir",
        str(out),
        "--no-server-metrics",
        "--no-gpu-telemetry",
    ]
    if trace_jsonl is not None:
        return cmd + [
            "--input-file",
            str(trace_jsonl),
            "--custom-dataset-type",
            "mooncake_trace",
            "--fixed-schedule",
        ]
    return cmd + [
        "--request-rate",
        str(rate),
        "--arrival-pattern",
        "constant",
        "--request-count",
        str(n),
        "--prompt-input-tokens-mean",
        str(PROMPT_TOKENS),
        "--prompt-input-tokens-stddev",
        "0",
        "--prompt-output-tokens-mean",
        str(OUTPUT_TOKENS),
    ]


def cmd_guidellm(exe, url, tok, rate, n, out, **_):
    return [
        str(exe),
        "run",
        "--backend",
        f"kind=openai_http,target={url},model=tiny,request_format=/v1/completions",
        "--profile",
        f"kind=constant,rate={rate}",
        "--data",
        f"kind=synthetic_text,prompt_tokens={PROMPT_TOKENS},output_tokens={OUTPUT_TOKENS}",
        "--tokenizer",
        f"kind=huggingface_auto,model={tok}",
        "--constraint",
        f"kind=max_requests,count={n}",
        "--disable-console",
        "--output",
        f"kind=json,path={out}/guidellm.json",
    ]


def cmd_inference_perf(exe, url, tok, rate, n, out, duration, **_):
    cfg = {
        "load": {"type": "constant", "stages": [{"rate": rate, "duration": int(duration)}]},
        "api": {"type": "completion", "streaming": True},
        "server": {"type": "vllm", "model_name": "tiny", "base_url": url, "ignore_eos": True},
        "tokenizer": {"pretrained_model_name_or_path": str(tok)},
        "data": {
            "type": "random",
            "input_distribution": {
                "min": PROMPT_TOKENS,
                "max": PROMPT_TOKENS,
                "mean": PROMPT_TOKENS,
                "std_dev": 0,
                "total_count": n,
            },
            "output_distribution": {
                "min": OUTPUT_TOKENS,
                "max": OUTPUT_TOKENS,
                "mean": OUTPUT_TOKENS,
                "std_dev": 0,
                "total_count": n,
            },
        },
        "storage": {"local_storage": {"path": str(out)}},
    }
    path = Path(out) / "config.yml"
    Path(out).mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return [str(exe), "-c", str(path)]


BUILDERS = {
    "vllm bench serve": cmd_vllm,
    "aiperf": cmd_aiperf,
    "guidellm": cmd_guidellm,
    "inference-perf": cmd_inference_perf,
}


def run_tool(
    cmd: list[str], timeout_s: float, log: Path, env: dict | None = None
) -> tuple[int | None, float, str]:
    """Run one tool; (exit code or None on timeout, CPU seconds of the tool's processes, log tail)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(log, "w") as fh:
        try:
            rc = subprocess.run(
                cmd,
                stdout=fh,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                cwd=log.parent,
                env={**os.environ, "NO_COLOR": "1", **(env or {})},
            ).returncode
        except subprocess.TimeoutExpired:
            rc = None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
    return rc, cpu, tail


def own_report(out: Path) -> dict:
    """burstpilot's own dispatch lag (send time against schedule, measured in the client)."""
    path = out / "replay" / "summary.json"
    if not path.is_file():
        return {}
    summary = json.loads(path.read_text())
    lag = summary["dispatch_lag_s"]
    own = {"own_errors": summary["requests"]["errors"]}  # why a request may never have arrived
    if lag["p50"] is not None:
        own |= {"own_dispatch_lag_p50_ms": lag["p50"] * 1e3, "own_dispatch_lag_p99_ms": lag["p99"] * 1e3}
    return own


def aggregate(runs: list[dict]) -> list[dict]:
    """Median over the repeats of each (tool, mode, rate)."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["tool"], r["mode"], round(r["rate"], 3)), []).append(r)

    def med(rows, key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return float(np.median(vals)) if vals else None

    return [
        {
            "tool": tool,
            "mode": mode,
            "rate": rate,
            "runs": len(rows),
            "arrived_share": med(
                [{"x": r.get("arrived", 0) / max(r.get("expected", 1), 1)} for r in rows], "x"
            ),
            "achieved_rate": med(rows, "achieved_rate"),
            "send_error_p50_ms": med(rows, "send_error_p50_ms"),
            "send_error_p99_ms": med(rows, "send_error_p99_ms"),
            "p99_per_run_ms": [
                r["send_error_p99_ms"] for r in rows if r.get("send_error_p99_ms") is not None
            ],
            "cpu_s": med(rows, "cpu_s"),
            "loadavg_1m": med(rows, "loadavg_1m"),
        }
        for (tool, mode, rate), rows in groups.items()
    ]


def holds(g: dict, limit_ms: float) -> bool:
    """A (tool, rate) keeps the schedule: every request arrived, at the rate, with p99 |send error| <= limit."""
    return (
        g["send_error_p99_ms"] is not None
        and g["send_error_p99_ms"] <= limit_ms
        and (g["arrived_share"] or 0) >= 0.999
        and (g["achieved_rate"] or 0) >= 0.98 * g["rate"]
    )


def target(agg: list[dict], limit_ms: float) -> dict:
    """Issue 16's target: burstpilot keeps p99 <= limit at twice the highest rate at which the best peer does."""
    const = [g for g in agg if g["mode"] == "constant"]

    def best_rate(tool):
        ok = [g["rate"] for g in const if g["tool"] == tool and holds(g, limit_ms)]
        return max(ok) if ok else None

    peers = {t: best_rate(t) for t in {g["tool"] for g in const} if not t.startswith("burstpilot")}
    ours = {t: best_rate(t) for t in {g["tool"] for g in const} if t.startswith("burstpilot")}
    best_peer = (
        max((r, t) for t, r in peers.items() if r is not None) if any(peers.values()) else (None, None)
    )
    wanted = 2 * best_peer[0] if best_peer[0] else None
    rows_at = {g["tool"]: g for g in const if wanted is not None and g["rate"] == wanted}
    return {
        "limit_ms": limit_ms,
        "highest_rate_held": {**peers, **ours},
        "best_peer": best_peer[1],
        "best_peer_rate": best_peer[0],
        "wanted_rate": wanted,
        "burstpilot_at_wanted_rate": {
            t: (rows_at[t]["send_error_p99_ms"] if t in rows_at else None) for t in ours
        },
        "met": bool(wanted) and any(t in rows_at and holds(rows_at[t], limit_ms) for t in ours),
        "measured": wanted is not None and any(t in rows_at for t in ours),
    }


# ---------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--rates", default="200,400,800,1600,3200", help="constant rates, req/s (default: %(default)s)"
    )
    ap.add_argument(
        "--duration", type=float, default=15.0, help="seconds per constant-rate run (default: 15)"
    )
    ap.add_argument(
        "--tools",
        default=",".join([*BURSTPILOT_VARIANTS, *PEERS]),
        help="comma-separated (default: every burstpilot variant and every peer)",
    )
    ap.add_argument(
        "--repeats", type=int, default=1, help="runs of each (tool, rate), interleaved (default: 1)"
    )
    ap.add_argument("--bursty-duration", type=float, default=30.0)
    ap.add_argument("--bursty-rps", type=float, default=150.0)
    ap.add_argument(
        "--limit-ms", type=float, default=5.0, help="the p99 send error a rate must keep (default: 5)"
    )
    ap.add_argument("--install-timeout", type=float, default=1500.0)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "loadtest.json")
    args = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C: the running tool and the fake server are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    rates = [float(r) for r in args.rates.split(",")]
    tools = [t.strip() for t in args.tools.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bp-loadtest-bench-"))
    result: dict = {
        "benchmark": "loadtest_send_accuracy",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "loadavg_at_start": os.getloadavg(),
        },
        "method": __doc__.split("\n\n")[1].replace("\n", " "),
        "workload": {
            "prompt_tokens": PROMPT_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
            "duration_s": args.duration,
        },
        "tools": {},
        "runs": [],
    }

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")

    server_py, why = ensure_venv("server", SERVER_VENV, args.install_timeout)
    if server_py is None:
        raise SystemExit(f"cannot set up the fake server's environment: {why}")
    tok = CACHE / "tiny-tokenizer"
    if not (tok / "tokenizer.json").exists():
        subprocess.run([str(server_py), "-I", "-c", TOKENIZER_SCRIPT, str(tok)], check=True, cwd=work)
    exes: dict[str, Path] = {}
    for name in tools:
        if name in BURSTPILOT_VARIANTS:
            result["tools"][name] = {"status": "ok", "version": "this checkout"}
            continue
        exe, why = ensure_venv(name, PEERS[name], args.install_timeout)
        dist = PEERS[name][2][0]
        result["tools"][name] = {
            "status": "ok" if exe else "unavailable",
            "detail": why,
            "version": version_of(exe, dist) if exe else None,
        }
        if exe:
            exes[name] = exe
        save()
    runnable = [t for t in tools if t in BURSTPILOT_VARIANTS or t in exes]
    server, url = start_server(server_py)

    def one(
        name: str, mode: str, rate: float, rep: int, cmd: list[str], judge: np.ndarray, out: Path
    ) -> None:
        timeout_s = float(judge[-1]) * 3 + 240
        take_arrivals(url)
        load = os.getloadavg()[0]
        env = BURSTPILOT_VARIANTS[name][1] if name in BURSTPILOT_VARIANTS else None
        rc, cpu, tail = run_tool(cmd, timeout_s, out / "tool.log", env)
        row = {
            "tool": name,
            "mode": mode,
            "rate": rate,
            "repeat": rep,
            "exit": rc,
            "cpu_s": round(cpu, 2),
            "loadavg_1m": load,
            "loadavg_1m_after": os.getloadavg()[0],
            **score(take_arrivals(url), judge),
        }
        if rc != 0:
            row["error"] = tail
        row.update(own_report(out))
        result["runs"].append(row)
        save()
        console.print(row)

    try:
        csvs = {}
        for rate in rates:
            n = int(round(rate * args.duration))
            csvs[rate] = work / f"const-{int(rate)}.csv"
            trace = make_trace(np.arange(n) / rate, np.full(n, PROMPT_TOKENS), np.full(n, OUTPUT_TOKENS))
            write_burstgpt_csv(trace, csvs[rate])
        # every (rate, tool) once per repeat, interleaved, so slow drifts in the machine's load hit all alike
        for rep in range(args.repeats):
            for rate in rates:
                n = int(round(rate * args.duration))
                for name in runnable:
                    out = (
                        work / f"{name.replace(' ', '-').replace('(', '').replace(')', '')}-{int(rate)}-{rep}"
                    )
                    out.mkdir()
                    if name in BURSTPILOT_VARIANTS:
                        cmd = cmd_burstpilot(url, csvs[rate], out / "replay", variant=name)
                    else:
                        cmd = BUILDERS[name](
                            exes[name], url=url, tok=tok, rate=rate, n=n, out=out, duration=args.duration
                        )
                    one(name, "constant", rate, rep, cmd, np.arange(n) / rate, out)
        # a bursty BurstGPT-shaped trace, replayed on its own schedule
        trace = generate_preset(
            "burstgpt", duration_s=args.bursty_duration, rps=args.bursty_rps, seed=1, start_s=10 * 3600
        )
        trace = trace.subset(~trace.failed)
        csv = work / "bursty.csv"
        write_burstgpt_csv(trace, csv)
        sched = trace.arrival_s - trace.arrival_s[0]
        counts = np.bincount((sched * 10).astype(int))
        result["bursty_workload"] = {
            "requests": len(trace),
            "duration_s": float(sched[-1]),
            "mean_rate": len(trace) / float(sched[-1]),
            "peak_rate_100ms": float(counts.max() * 10),
            "interarrival_cv": float(np.std(np.diff(sched)) / np.mean(np.diff(sched))),
        }
        mooncake = work / "bursty.jsonl"
        mooncake.write_text(
            "".join(
                json.dumps(
                    {"timestamp": int(round(s * 1000)), "input_length": int(i), "output_length": int(o)}
                )
                + "\n"
                for s, i, o in zip(sched, trace.request_tokens, trace.response_tokens, strict=True)
            )
        )
        for rep in range(args.repeats):
            for name in [t for t in runnable if t in BURSTPILOT_VARIANTS or t == "aiperf"]:
                out = work / f"bursty-{name.replace(' ', '-').replace('(', '').replace(')', '')}-{rep}"
                out.mkdir()
                if name == "aiperf":
                    cmd = cmd_aiperf(exes[name], url, tok, None, None, out, trace_jsonl=mooncake)
                    judge = np.round(sched * 1000) / 1000  # AIPerf's trace format has millisecond timestamps
                else:
                    cmd = cmd_burstpilot(url, csv, out / "replay", variant=name)
                    judge = sched
                one(name, "bursty", result["bursty_workload"]["mean_rate"], rep, cmd, judge, out)
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
    result["machine"]["loadavg_at_end"] = os.getloadavg()
    result["aggregate"] = aggregate(result["runs"])
    result["target"] = target(result["aggregate"], args.limit_ms)
    save()
    table = Table(title="send accuracy (judge: the fake server's arrival log), median over repeats")
    for col in ("tool", "mode", "target /s", "achieved /s", "arrived", "p50 err ms", "p99 err ms", "p99 per run",
                "CPU s", "load 1m"):  # fmt: skip
        table.add_column(col)
    for g in result["aggregate"]:
        table.add_row(
            g["tool"],
            g["mode"],
            f"{g['rate']:.0f}",
            "-" if g["achieved_rate"] is None else f"{g['achieved_rate']:.0f}",
            "-" if g["arrived_share"] is None else f"{g['arrived_share']:.1%}",
            "-" if g["send_error_p50_ms"] is None else f"{g['send_error_p50_ms']:.2f}",
            "-" if g["send_error_p99_ms"] is None else f"{g['send_error_p99_ms']:.1f}",
            " / ".join(f"{x:.1f}" for x in g["p99_per_run_ms"]),
            f"{g['cpu_s']:.1f}",
            f"{g['loadavg_1m']:.1f}",
        )
    for name, info in result["tools"].items():
        if info["status"] != "ok":
            table.add_row(name, "unavailable: " + str(info["detail"])[:60], "", "", "", "", "", "", "", "")
    console.print(table)
    t = result["target"]
    console.print(
        f"highest rate with p99 <= {t['limit_ms']:g} ms (all arrived): {t['highest_rate_held']}; best peer: "
        f"{t['best_peer']} at {t['best_peer_rate']}; wanted: burstpilot at {t['wanted_rate']} req/s -> "
        f"{t['burstpilot_at_wanted_rate']}: {'met' if t['met'] else 'not met' if t['measured'] else 'not measured'}"
    )
    console.print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
