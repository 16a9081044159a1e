"""``make demo-cluster``: a burst replayed through the local cluster, the operator's decisions shown live, a report.

The workload: Poisson arrivals, 1 request/s for 30 s, 8/s for 40 s, 0.5/s for 50 s (100 prompt + 50 output
tokens each), against the sample pool, whose declared replica capacity (about 1.8 requests/s) makes the burst
need more replicas than the four fake GPUs hold. Each second the ServingPool's status is read; every change is
printed as one line (what ``kubectl get servingpools -w`` would show, with the pending pods and the reason) and
kept. The report (``README.md``, ``replicas.png``) puts the replicas the operator asked for, the Ready and the
Pending pods against the arrival rate, with the load generator's SLO attainment and the pods' GPU-seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from burstpilot.operator.cluster.local import (  # noqa: E402
    SAMPLE_CAPACITY,
    SAMPLE_INTERVAL_S,
    SAMPLE_STABILIZATION_S,
    LocalCluster,
)
from burstpilot.operator.cluster.procs import ClusterError  # noqa: E402
from burstpilot.traces import make_trace, write_burstgpt_csv  # noqa: E402

PHASES = ((30.0, 1.0), (40.0, 8.0), (50.0, 0.5))  # (seconds, requests per second)
PROMPT, OUTPUT = 100, 50
SLO = "ttft=2s,tpot=100ms"
BIN = Path(sys.executable).parent
SETTLE_S = 90.0  # after the replay: how long to wait for the pool to come back to minReplicas


def phased_workload(
    path: Path, phases, prompt: int = PROMPT, output: int = OUTPUT, seed: int = 7
) -> np.ndarray:
    """Writes a BurstGPT CSV of Poisson arrivals in ``phases`` ((seconds, requests per second), ...), each
    request ``prompt`` + ``output`` tokens; returns the arrival times."""
    rng = np.random.default_rng(seed)
    t, arrivals = 0.0, []
    for seconds, rate in phases:
        end = t + seconds
        x = t + rng.exponential(1.0 / rate)
        while x < end:
            arrivals.append(x)
            x += rng.exponential(1.0 / rate)
        t = end
    arr = np.asarray(arrivals)
    n = len(arr)
    trace = make_trace(
        arr, np.full(n, prompt), np.full(n, output), model=["ChatGPT"] * n, log_type=["Conversation log"] * n
    )
    write_burstgpt_csv(trace, path)
    return arr


def _row(st: dict) -> dict:
    cond = next((c for c in st.get("conditions", []) if c["type"] == "ScalingLimited"), {})
    return {
        "desired": st.get("desiredReplicas"),
        "current": st.get("currentReplicas"),
        "ready": st.get("readyReplicas", 0),
        "pending": st.get("pendingReplicas", 0),
        "forecast": (st.get("forecast") or {}).get("rate"),
        "reason": (st.get("lastDecision") or {}).get("reason", ""),
        "limited": cond.get("reason") if cond.get("status") == "True" else "",
    }


HEADER = f"{'t':>5}  {'DESIRED':>7} {'CURRENT':>7} {'READY':>5} {'PENDING':>7} {'FORECAST':>8}  REASON"


def _line(t: float, r: dict) -> str:
    fc = f"{r['forecast']:.1f}/s" if r["forecast"] is not None else "-"
    limited = f"  [{r['limited']}]" if r["limited"] and r["limited"] != "WithinLimits" else ""
    return (
        f"{t:>4.0f}s  {r['desired']!s:>7} {r['current']!s:>7} {r['ready']!s:>5} {r['pending']!s:>7} {fc:>8}  "
        f"{r['reason']}{limited}"
    )


def replay_start(run_json: Path, default: float) -> float:
    """When the replay's schedule began (Unix s), from its run.json once written; ``default`` until then."""
    try:
        return float(json.loads(run_json.read_text())["started_at"])
    except (OSError, ValueError, KeyError):
        return default


def watch(
    lc: LocalCluster, namespace: str, pool: str, replay: subprocess.Popen, run_json: Path
) -> list[dict]:
    """Polls the pool's status each second while the replay runs and until it is back at minReplicas. Each row's
    ``t`` is seconds since the replay's schedule began (the workload's time axis)."""
    plane = lc.plane
    history: list[dict] = []
    last = None
    settle_until = None
    launched = time.time()
    print(HEADER, flush=True)
    while True:
        wall = time.time()
        t = wall - replay_start(run_json, launched)
        res = plane.kubectl("get", "servingpool", pool, "-n", namespace, "-o", "json", check=False)
        if res.returncode == 0:
            row = {"t": round(t, 1), "wall": wall, **_row(json.loads(res.stdout).get("status") or {})}
            history.append(row)
            key = {k: v for k, v in row.items() if k not in ("t", "wall", "forecast")}
            if key != last:
                print(_line(t, row), flush=True)
                last = key
        if replay.poll() is not None:
            settle_until = settle_until or time.monotonic() + SETTLE_S
            if history and history[-1]["desired"] == 1 and history[-1]["ready"] == 1:
                break
            if time.monotonic() > settle_until:
                break
        time.sleep(1.0)
    return history


def gpu_seconds(lifetimes: list[dict], start: float, end: float) -> float:
    """GPU-seconds of the pods between ``start`` and ``end`` (Unix s): creation to deletion, Pending included."""
    total = 0.0
    for p in lifetimes:
        a, b = max(p["created"], start), min(p["deleted"] or end, end)
        total += max(0.0, b - a)
    return total


def plot(history: list[dict], arrivals: np.ndarray, gpus: int, path: Path) -> Path:
    t = np.array([h["t"] for h in history])
    fig, ax = plt.subplots(figsize=(10, 4.2), dpi=110)
    bin_s = 5.0
    edges = np.arange(0.0, arrivals.max() + bin_s, bin_s)
    rate = np.histogram(arrivals, bins=edges)[0] / bin_s
    ax2 = ax.twinx()
    ax2.bar(edges[:-1], rate, width=bin_s, align="edge", color="0.85", label="arrival rate")
    ax2.set_ylabel("arrival rate (requests/s, 5 s bins)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    for key, style, label in (
        ("desired", dict(color="C0", lw=2), "desired (operator)"),
        ("ready", dict(color="C2", lw=1.5), "Ready pods"),
        ("pending", dict(color="C3", lw=1.2, ls="--"), "Pending pods (no GPU left)"),
    ):
        ax.step(t, [h[key] or 0 for h in history], where="post", label=label, **style)
    ax.axhline(gpus, color="0.4", lw=0.8, ls=":", label=f"GPUs ({gpus})")
    ax.set_xlabel("seconds since the replay began")
    ax.set_ylabel("replicas")
    ax.set_ylim(0, max(max((h["desired"] or 0) for h in history), gpus) + 1)
    ax.set_title("burstpilot operator on the local cluster: replicas vs arrival rate")
    lines, labels = ax.get_legend_handles_labels()
    bars, blabels = ax2.get_legend_handles_labels()
    ax.legend(lines + bars, labels + blabels, loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def run_demo(lc: LocalCluster, out: Path, keep: bool = False) -> int:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started_here = not lc.running()
    if started_here:
        print(f"starting a local cluster in {lc.dir} (`burstpilot cluster up`)", flush=True)
        lc.up(keda=False, progress=lambda line: print(line, flush=True))
    elif not lc.state.get("sample"):
        lc.create_sample(progress=lambda what, fn: (print(f"  {what} ...", flush=True), fn())[1])
    try:
        return _run(lc, out)
    finally:
        if started_here and not keep:
            print("stopping the local cluster (`burstpilot cluster down`)", flush=True)
            lc.down(progress=lambda line: None)


def _run(lc: LocalCluster, out: Path) -> int:
    sample = lc.state["sample"]
    ns, pool, url = sample["namespace"], sample["pool"], sample["url"]
    gpus = lc.state["gpu_nodes"] * lc.state["gpus_per_node"]
    workload = out / "burst.csv"
    arrivals = phased_workload(workload, PHASES)
    phases = ", ".join(f"{r:g}/s for {s:.0f} s" for s, r in PHASES)
    print(f"replaying {len(arrivals)} requests ({phases}) against {ns}/{pool} at {url}", flush=True)
    wall0 = time.time()
    replay = subprocess.Popen(
        [
            BIN / "burstpilot", "replay", workload, "--target", url, "--out", out / "replay",
            "--slo", SLO, "--no-progress", "--timeout", "60s",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        history = watch(lc, ns, pool, replay, out / "replay" / "run.json")
    finally:
        if replay.poll() is None:
            replay.terminate()
        replay_log = replay.communicate(timeout=60)[0]
    (out / "replay.log").write_text(replay_log)
    if replay.returncode != 0:
        raise ClusterError(f"the replay failed ({replay.returncode}); its output is in {out / 'replay.log'}")
    wall1 = time.time()
    start = replay_start(out / "replay" / "run.json", wall0)
    for h in history:  # on the workload's time axis, now that the replay's start is known
        h["t"] = round(h["wall"] - start, 1)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    summary = json.loads((out / "replay" / "summary.json").read_text())
    lifetimes = lc.pod_lifetimes(ns, pool)
    events = lc.plane.get_json("events", "-n", ns, "--field-selector", f"involvedObject.name={pool}")["items"]
    png = plot(history, arrivals, gpus, out / "replicas.png")
    write_report(out, history, summary, lifetimes, events, gpus, wall0, wall1, png)
    print(f"\nreport: {out / 'README.md'}", flush=True)
    return 0


def write_report(out, history, summary, lifetimes, events, gpus, wall0, wall1, png) -> Path:
    slo = summary.get("slo") or {}
    burst_start = PHASES[0][0]
    ups = [(h["t"], p["desired"], h["desired"]) for p, h in zip(history, history[1:], strict=False)
           if (h["desired"] or 0) > (p["desired"] or 0)]  # fmt: skip
    after = [u for u in ups if u[0] >= burst_start]
    first_up = after[0][0] - burst_start if after else None
    peak = max((h["desired"] or 0) for h in history)
    pending_peak = max(h["pending"] or 0 for h in history)
    scale_events = [e for e in events if e.get("reason") in ("ScaledUp", "ScaledDown")]
    gpu_s = gpu_seconds(lifetimes, wall0, wall1)
    ttft = summary.get("ttft_s") or {}
    lines = [
        "# burstpilot on a local cluster: a burst",
        "",
        "`make demo-cluster` (`burstpilot cluster demo`): a real control plane on 127.0.0.1 with "
        f"{gpus} fake GPUs (kwok), the chart and the operator, Prometheus scraping one simulated vLLM replica "
        "per Ready pod, and the load generator replaying the burst below against the pool's Service.",
        "",
        f"- Workload: Poisson arrivals, {', '.join(f'{r:g} req/s for {s:.0f} s' for s, r in PHASES)}; "
        f"{PROMPT} prompt + {OUTPUT} output tokens per request ({summary['requests']['scheduled']} requests).",
        f"- Pool: declared capacity {SAMPLE_CAPACITY['decodeTokensPerSecond']} decode and "
        f"{SAMPLE_CAPACITY['prefillTokensPerSecond']} prefill tokens/s per replica (about 1.8 requests/s), "
        f"minReplicas 1, {SAMPLE_INTERVAL_S} s ticks, {SAMPLE_STABILIZATION_S} s scale-down stabilization; the "
        "simulated replicas (h100-llama3-8b) are "
        "faster than declared, so this shows the decisions and the scheduling, not saturation.",
        "",
        "| | |",
        "|---|---|",
        f"| first scale-up after the burst began (at {burst_start:.0f} s) | "
        f"{f'{first_up:.0f} s later' if first_up is not None else 'none'} |",
        f"| scale-ups (t: from -> to) | {', '.join(f'{t:.0f} s: {a} -> {b}' for t, a, b in ups) or 'none'} |",
        f"| peak desired replicas | {peak} (GPUs: {gpus}) |",
        f"| peak Pending pods (no GPU left) | {pending_peak} |",
        f"| scale events (ScaledUp / ScaledDown) | {sum(e['reason'] == 'ScaledUp' for e in scale_events)} / "
        f"{sum(e['reason'] == 'ScaledDown' for e in scale_events)} |",
        f"| GPU-seconds of the pods (each pod's creation to deletion, Pending pods included) | {gpu_s:.0f} |",
        f"| requests completed / failed | {summary['requests']['completed']} / {summary['requests']['failed']} |",
        f"| SLO ({SLO}) attainment | {slo.get('attainment', float('nan')):.3f} |",
        f"| TTFT p50 / p99 | {_s(ttft.get('p50'))} / {_s(ttft.get('p99'))} |",
        "",
        f"![replicas vs arrival rate]({png.name})",
        "",
        "## The operator's decisions, as they were printed live",
        "",
        "```",
        HEADER,
    ]
    last = None
    for h in history:
        key = {k: v for k, v in h.items() if k not in ("t", "wall", "forecast")}
        if key != last:
            lines.append(_line(h["t"], h))
            last = key
    lines += [
        "```",
        "",
        "Files: `burst.csv` (the workload), `replay/` (the load generator's records and summary), "
        "`history.json` (the pool's status each second).",
        "",
    ]
    path = out / "README.md"
    path.write_text("\n".join(lines))
    return path


def _s(v) -> str:
    return f"{v:.2f} s" if v is not None else "-"
