"""burstpilot beside the real KEDA and the real HPA on the local cluster (``bench/k8s_peers.py``): the pieces.

The experiment: one pool (a Deployment of GPU pods whose readiness waits for the simulated replica's model
load, one ``burstpilot sim serve`` per Running pod, Prometheus scraping them), one replayed workload, one
controller at a time. This module holds what does not need a cluster, so it is unit-tested on its own:

- the replica (``bench_profile``): the h100-llama3-8b step model slowed down ``SLOWDOWN`` times, so that a
  laptop's load generator saturates a few replicas;
- the workloads: ``burstgpt_shaped`` (the BurstGPT preset's texture, Gamma inter-arrivals and token lengths,
  under a designed rate: two bursts shorter than the cold start and a slow rise) and ``real_slice`` (a slice of a
  real trace, replay-scaled to a rate the pool serves);
- the controllers' configuration, all from the replica profile at the workload's mean lengths (``Sizing``):
  the ServingPool, the ScaledObjects (request rate; concurrency; burstpilot's advisory gauge);
- the measurements: GPU-hours from pod lifetimes, scale events from the Deployment's replica history, the
  summary row of one arm, and the figure.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from burstpilot.errors import BurstpilotError  # noqa: E402
from burstpilot.operator.cluster.prometheus import SCRAPE_INTERVAL_S  # noqa: E402
from burstpilot.policy.baselines import HPA_SYNC_S  # noqa: E402
from burstpilot.policy.capacity import CapacityModel, concurrency_at, replica_rate  # noqa: E402
from burstpilot.policy.spec import SLO, PoolSpec  # noqa: E402
from burstpilot.sim import load_profile  # noqa: E402
from burstpilot.sim.profile import profile_from_dict  # noqa: E402
from burstpilot.traces import Trace, make_trace, read_trace  # noqa: E402
from burstpilot.traces.analyze import summarize  # noqa: E402
from burstpilot.traces.generate import generate_modeled, generate_preset, scale_replay  # noqa: E402

BASE_PROFILE = "h100-llama3-8b"
SLOWDOWN = 8.0  # every step-time coefficient of the base profile, times this
PROFILE_NAME = "slow8x-llama3-8b"
# A pod is Ready COLD_START_S after its creation (the replica keeper marks it, once its simulated replica
# answers /health: the replica process itself is up in MODEL_LOAD_S plus its start-up, 5 to 20 s here). The
# ServingPool is told the same cold start, as the pool's owner knows it.
COLD_START_S = 60.0
MODEL_LOAD_S = 5.0
SLO_TTFT_S, SLO_TPOT_S, SLO_ATTAINMENT = 3.0, 0.1, 0.99
SLO_SPEC = f"ttft={SLO_TTFT_S:g}s,tpot={SLO_TPOT_S * 1000:g}ms"
TARGET_UTILIZATION = 0.85  # burstpilot's default; the thresholds of the others use the same
MIN_REPLICAS, MAX_REPLICAS = 1, 8
PROMPT_CAP, OUTPUT_CAP = 8192, 1024  # one prefill fits one step (max_num_batched_tokens); replies end in time
_STEP_TIMES = ("t0", "w_ms", "f_ms", "k_ms", "kl_ms", "p1", "p2")

ARMS = ("burstpilot", "keda", "hpa", "advisory")
ARM_TITLES = {
    "burstpilot": "burstpilot operator (ServingPool)",
    "keda": "KEDA, Prometheus trigger on the request rate",
    "hpa": "HPA (through KEDA) on concurrency, default behaviour",
    "advisory": "burstpilot Advisory -> KEDA",
}


# --------------------------------------------------------------------------- the replica


def bench_profile(slowdown: float = SLOWDOWN, cold_start_s: float = COLD_START_S) -> dict:
    """The benchmark's replica profile (JSON-ready): ``BASE_PROFILE`` with every step-time coefficient times
    ``slowdown`` (a GPU that many times slower: the same batching, KV cache and scheduler limits) and a fixed
    cold start."""
    base = json.loads((resources.files("burstpilot.sim") / "profiles" / f"{BASE_PROFILE}.json").read_text())
    prof = copy.deepcopy(base)
    for key in _STEP_TIMES:
        prof["step_model"][key] = base["step_model"][key] * slowdown
    prof["name"] = PROFILE_NAME
    prof["description"] = (
        f"{BASE_PROFILE} with every step time x{slowdown:g} (bench/k8s_peers.py: a replica a laptop can "
        f"saturate); cold start {cold_start_s:g} s"
    )
    prof["cold_start"] = {
        "median_s": cold_start_s,
        "min_s": cold_start_s,
        "max_s": cold_start_s,
        "sigma": 0.0,
    }
    prof["calibration"] = {"derived_from": BASE_PROFILE, "step_time_factor": slowdown}
    profile_from_dict(prof, PROFILE_NAME)  # the simulator accepts it
    return prof


def write_profile(path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bench_profile(**kw), indent=1))
    return path


# --------------------------------------------------------------------------- the workloads


@dataclass(frozen=True)
class Phase:
    """A piece of the designed rate: from ``start_s`` for ``seconds``, the rate goes linearly from ``rate`` to
    ``rate_end`` (equal: constant)."""

    kind: str  # "base", "burst", "rise", "plateau", "fall"
    start_s: float
    seconds: float
    rate: float
    rate_end: float


def designed_phases(
    duration_s: float, base: float, burst: float, peak: float, cold_start_s: float
) -> list[Phase]:
    """The designed rate of ``burstgpt_shaped`` over ``duration_s`` (scaled from a 780 s layout): a baseline;
    a burst of 0.5 cold starts; baseline; a slow rise over 240 s to ``peak``, 60 s there, a 60 s fall; baseline;
    a second burst of 0.67 cold starts; baseline to the end."""
    k = duration_s / 780.0
    b1, b2 = 0.5 * cold_start_s, 0.67 * cold_start_s
    layout = [
        ("base", 100 * k, base, base),
        ("burst", b1, burst, burst),
        ("base", 150 * k - b1, base, base),
        ("rise", 240 * k, base, peak),
        ("plateau", 60 * k, peak, peak),
        ("fall", 60 * k, peak, base),
        ("base", 80 * k, base, base),
        ("burst", b2, burst, burst),
    ]
    used = sum(x[1] for x in layout)
    if used >= duration_s:
        raise BurstpilotError(
            f"a {duration_s:g} s workload is too short for bursts of {b1:.0f} and {b2:.0f} s"
        )
    layout.append(("base", duration_s - used, base, base))
    starts = np.round(np.concatenate([[0.0], np.cumsum([x[1] for x in layout])[:-1]]), 1)
    ends = np.append(starts[1:], duration_s)
    return [
        Phase(kind, float(a), round(float(b - a), 1), r0, r1)
        for (kind, _, r0, r1), a, b in zip(layout, starts, ends, strict=True)
    ]


def phase_rate(phases: list[Phase], t: np.ndarray) -> np.ndarray:
    """The designed rate at times ``t``."""
    t = np.asarray(t, dtype=float)
    out = np.zeros_like(t)
    for p in phases:
        sel = (t >= p.start_s) & (t < p.start_s + p.seconds)
        out[sel] = p.rate + (p.rate_end - p.rate) * (t[sel] - p.start_s) / p.seconds
    return out


def _cap(trace: Trace, source: str) -> Trace:
    req = np.minimum(trace.request_tokens, PROMPT_CAP)
    resp = np.clip(trace.response_tokens, 1, OUTPUT_CAP)
    n = len(trace)
    model = (trace.model_codes, trace.models) if len(trace.models) else ["ChatGPT"] * n
    log = (trace.log_type_codes, trace.log_types) if len(trace.log_types) else ["Conversation log"] * n
    return make_trace(trace.arrival_s, req, resp, model=model, log_type=log, source=source)


def burstgpt_shaped(
    duration_s: float, base: float, burst: float, peak: float, cold_start_s: float, seed: int = 1
) -> tuple[Trace, list[Phase]]:
    """A BurstGPT-shaped workload under the designed rate (``designed_phases``).

    The texture is the BurstGPT preset's (``burstpilot.traces.generate``): an hour of it is summarized per
    (model, log type) group, and ``generate_modeled`` samples each group with its own Gamma inter-arrival shape
    (about 0.9 for conversations, 0.3 for API traffic) and token-length model, its share of the requests, and the
    designed rate in 5 s windows. Failed rows are dropped; prompts are capped at ``PROMPT_CAP`` and replies at
    ``OUTPUT_CAP`` tokens."""
    phases = designed_phases(duration_s, base, burst, peak, cold_start_s)
    preset = generate_preset(duration_s=3600.0, rps=4.0, seed=seed, start_s=10 * 3600.0)
    summary = summarize(preset, window_s=600.0)
    win = 5.0
    starts = np.arange(0.0, duration_s, win)
    rate = phase_rate(phases, starts + win / 2)
    total = sum(g["rows"] for g in summary["groups"])
    for g in summary["groups"]:
        share = g["rows"] / total
        shape = g["interarrival"]["gamma_shape"]
        g["windows"] = {
            "window_s": win,
            "start_s": starts.tolist(),
            "rate": (rate * share).tolist(),
            "gamma_shape": [shape] * len(starts),
            "failure_rate": [0.0] * len(starts),
        }
        g["failure_rate"] = 0.0
    summary["start_s"] = 0.0
    mean = float(np.mean(rate))
    tr = generate_modeled(summary, rps=mean, duration_s=duration_s, start_s=0.0, seed=seed, source="burstgpt")
    ok = ~tr.failed
    tr = tr.subset(ok)
    src = f"burstgpt-shaped(duration_s={duration_s:g}, base={base:g}, burst={burst:g}, peak={peak:g}, seed={seed})"
    return _cap(tr, src), phases


def real_slice(path: Path, rps: float, duration_s: float, start_offset_s: float) -> Trace:
    """The requests of a real trace from ``start_offset_s`` after its first request, replay-scaled
    (``scale_replay``: time stretched or compressed, inter-arrival shape and lengths kept) to a mean of ``rps``
    over ``duration_s``; prompts and replies capped as ``burstgpt_shaped``'s."""
    tr = read_trace(path)
    t0 = float(tr.arrival_s[0]) + start_offset_s
    after = tr.arrival_s >= t0
    n = int(round(rps * duration_s))
    idx = np.flatnonzero(after)[:n]
    if len(idx) < n:
        raise BurstpilotError(f"{path}: fewer than {n} requests after {start_offset_s:g} s")
    span = float(tr.arrival_s[idx[-1]] - t0) * n / (n - 1)
    scaled = scale_replay(tr.subset(idx), speedup=span / duration_s, start_s=t0)
    return _cap(scaled, f"replay:{Path(path).name}[{start_offset_s:g}s+{span:.0f}s] x{span / duration_s:.3f}")


def initial_replicas(trace: Trace, sizing: Sizing, seconds: float = 60.0) -> int:
    """The replicas a pool serving the workload's first minute would already run when the experiment begins:
    its rate then over the rate threshold (at least MIN_REPLICAS)."""
    rate = float(np.sum(trace.arrival_s < seconds)) / seconds
    return int(min(MAX_REPLICAS, max(MIN_REPLICAS, math.ceil(rate / sizing.rate_threshold - 1e-9))))


def rate_series(
    arrivals: np.ndarray, duration_s: float, bin_s: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    edges = np.arange(0.0, duration_s + bin_s, bin_s)
    counts = np.histogram(arrivals, bins=edges)[0]
    return edges[:-1], counts / bin_s


# --------------------------------------------------------------------------- sizing from the profile


@dataclass(frozen=True)
class Sizing:
    """What the owner of the pool reads off the replica profile for a workload's mean lengths, and the numbers
    each controller is configured with (none of them from the oracle, none re-read during the run)."""

    prompt_tokens: float
    output_tokens: float
    replica_rate: float  # requests/s one replica sustains at the SLO (the profile's capacity model)
    concurrency_at_target: float  # requests in flight on one replica at replica_rate x TARGET_UTILIZATION
    rate_threshold: float  # KEDA's threshold: requests/s per replica
    concurrency_threshold: float  # the concurrency arm's: running + waiting per replica

    @classmethod
    def from_profile(cls, profile_path: Path, prompt_tokens: float, output_tokens: float) -> Sizing:
        spec = pool_spec(profile_path)
        rr = replica_rate(spec, prompt_tokens, output_tokens)
        conc = concurrency_at(spec, prompt_tokens, output_tokens, rr.rate * TARGET_UTILIZATION)
        return cls(
            prompt_tokens=round(float(prompt_tokens), 1),
            output_tokens=round(float(output_tokens), 1),
            replica_rate=round(rr.rate, 4),
            concurrency_at_target=round(conc, 2),
            rate_threshold=round(rr.rate * TARGET_UTILIZATION, 3),
            concurrency_threshold=round(conc, 1),
        )


def pool_spec(profile_path: Path) -> PoolSpec:
    return PoolSpec(
        name="bench",
        min_replicas=MIN_REPLICAS,
        max_replicas=MAX_REPLICAS,
        profile=str(profile_path),
        model=CapacityModel.from_profile(load_profile(str(profile_path))),
        slo=SLO(ttft_s=SLO_TTFT_S, tpot_s=SLO_TPOT_S, attainment=SLO_ATTAINMENT),
        cold_start_s=COLD_START_S,
        target_utilization=TARGET_UTILIZATION,
    )


# --------------------------------------------------------------------------- the controllers' objects


def pool_selector(namespace: str) -> str:
    return f'namespace="{namespace}"'


def rate_query(namespace: str) -> str:
    """The request rate as vLLM users write it: the success counter, per second over a minute."""
    return f"sum(rate(vllm:request_success_total{{{pool_selector(namespace)}}}[1m]))"


def concurrency_query(namespace: str) -> str:
    sel = pool_selector(namespace)
    return f"sum(vllm:num_requests_running{{{sel}}}) + sum(vllm:num_requests_waiting{{{sel}}})"


def advisory_query(namespace: str, pool: str) -> str:
    return f'max(burstpilot_operator_desired_replicas{{namespace="{namespace}",pool="{pool}"}})'


def serving_pool(
    name: str, namespace: str, target: str, profile_path: Path, prometheus_url: str, advisory: bool = False
) -> dict:
    """The ServingPool: the profile and the SLO; every scaling and forecasting knob at its default."""
    spec = {
        "targetRef": {"kind": "Deployment", "name": target},
        "minReplicas": MIN_REPLICAS,
        "maxReplicas": MAX_REPLICAS,
        "gpusPerReplica": 1,
        "profile": {"name": str(profile_path)},
        "slo": {"ttftSeconds": SLO_TTFT_S, "tpotSeconds": SLO_TPOT_S, "attainment": SLO_ATTAINMENT},
        "coldStartSeconds": COLD_START_S,
        "metrics": {
            "prometheusUrl": prometheus_url,
            "selector": {"namespace": namespace},
            "scrapeIntervalSeconds": SCRAPE_INTERVAL_S,  # the test Prometheus's (a user states their own)
        },
    }
    if advisory:
        spec["mode"] = "Advisory"
    return {
        "apiVersion": "burstpilot.io/v1alpha1",
        "kind": "ServingPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def scaled_object(
    name: str,
    namespace: str,
    target: str,
    prometheus_url: str,
    query: str,
    threshold: float,
    behavior: dict | None = None,
) -> dict:
    """A ScaledObject as KEDA's docs write one: a Prometheus trigger, AverageValue (KEDA's default metric type),
    pollingInterval and cooldownPeriod at their defaults, the HPA's default behaviour unless ``behavior``."""
    spec: dict = {
        "scaleTargetRef": {"name": target},
        "minReplicaCount": MIN_REPLICAS,
        "maxReplicaCount": MAX_REPLICAS,
        "triggers": [
            {
                "type": "prometheus",
                "metricType": "AverageValue",
                "metadata": {"serverAddress": prometheus_url, "query": query, "threshold": f"{threshold:g}"},
            }
        ],
    }
    if behavior is not None:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


# Advisory -> KEDA: burstpilot's desired count already holds its own stabilization window (180 s), so the HPA
# that KEDA makes follows it down at once instead of adding its 300 s window on top.
ADVISORY_BEHAVIOR = {"scaleDown": {"stabilizationWindowSeconds": 0}}


def arm_objects(
    arm: str, namespace: str, target: str, profile_path: Path, prometheus_url: str, sizing: Sizing
) -> list[dict]:
    """The objects that put ``arm``'s controller on the Deployment ``target``."""
    if arm == "burstpilot":
        return [serving_pool(target, namespace, target, profile_path, prometheus_url)]
    if arm == "keda":
        return [
            scaled_object(
                target, namespace, target, prometheus_url, rate_query(namespace), sizing.rate_threshold
            )
        ]
    if arm == "hpa":
        q = concurrency_query(namespace)
        return [scaled_object(target, namespace, target, prometheus_url, q, sizing.concurrency_threshold)]
    if arm == "advisory":
        return [
            serving_pool(target, namespace, target, profile_path, prometheus_url, advisory=True),
            scaled_object(
                target,
                namespace,
                target,
                prometheus_url,
                advisory_query(namespace, target),
                1.0,
                ADVISORY_BEHAVIOR,
            ),
        ]
    raise BurstpilotError(f"unknown arm {arm!r} (known: {', '.join(ARMS)})")


# --------------------------------------------------------------------------- measurements


def gpu_hours(lifetimes: list[dict], start: float, end: float, gpus_per_pod: int = 1) -> float:
    """GPU-hours of the pods in [start, end] (Unix s): each pod from its creation to its deletion (Pending and
    cold start included; a pod still there at ``end`` counts to ``end``)."""
    total = 0.0
    for p in lifetimes:
        a = max(float(p["created"]), start)
        b = min(float(p["deleted"]) if p.get("deleted") else end, end)
        total += max(0.0, b - a)
    return total * gpus_per_pod / 3600.0


def cold_starts(lifetimes: list[dict]) -> list[float]:
    """Creation to Ready of every pod that became Ready (seconds)."""
    return sorted(round(p["ready"] - p["created"], 1) for p in lifetimes if p.get("ready"))


def scale_events(history: list[dict], key: str = "spec") -> list[tuple[float, int, int]]:
    """Changes of the Deployment's spec.replicas over the polled history: (t, from, to)."""
    out = []
    for prev, cur in zip(history, history[1:], strict=False):
        if cur[key] is not None and prev[key] is not None and cur[key] != prev[key]:
            out.append((cur["t"], int(prev[key]), int(cur[key])))
    return out


@dataclass
class ArmResult:
    arm: str
    trace: str
    requests: int
    completed: int
    failed: int
    slo_attainment: float
    slo_violations: int
    goodput_rps: float
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    tpot_p99_s: float | None
    gpu_hours: float
    scale_events: int
    scale_ups: int
    scale_downs: int
    peak_replicas: int
    mean_replicas: float
    cold_start_s: list[float]
    load_average: list[float]

    def row(self) -> dict:
        return asdict(self)


def summarize_arm(
    arm: str,
    trace: str,
    summary: dict,
    lifetimes: list[dict],
    history: list[dict],
    start: float,
    duration_s: float,
    load_average: list[float],
) -> ArmResult:
    """One arm's row: SLO attainment, violations and goodput (requests that met the SLO per second of the
    workload) from the load generator's summary (every scheduled request counts: a failed one violates),
    GPU-hours over the workload's span [start, start + duration_s] from the pods' lifetimes, scale events from
    the replica history."""
    end = start + duration_s
    req = summary["requests"]
    slo = summary.get("slo") or {}
    scheduled = int(req["scheduled"])
    met = int(slo.get("met") or 0)
    attainment = met / scheduled if scheduled else float("nan")
    ev = scale_events(history)
    spec_values = [h["spec"] for h in history if h["spec"] is not None]
    window = [h for h in history if start <= h["wall"] <= end and h["spec"] is not None]
    ttft = summary.get("ttft_s") or {}
    tpot = summary.get("tpot_s") or {}
    return ArmResult(
        arm=arm,
        trace=trace,
        requests=scheduled,
        completed=int(req["completed"]),
        failed=int(req["failed"]),
        slo_attainment=round(attainment, 4),
        slo_violations=scheduled - met,
        goodput_rps=round(met / duration_s, 3),
        ttft_p50_s=_r(ttft.get("p50")),
        ttft_p99_s=_r(ttft.get("p99")),
        tpot_p99_s=_r(tpot.get("p99")),
        gpu_hours=round(gpu_hours(lifetimes, start, end), 4),
        scale_events=len(ev),
        scale_ups=sum(1 for _, a, b in ev if b > a),
        scale_downs=sum(1 for _, a, b in ev if b < a),
        peak_replicas=max(spec_values) if spec_values else 0,
        mean_replicas=round(float(np.mean([h["spec"] for h in window])), 2) if window else 0.0,
        cold_start_s=cold_starts(lifetimes),
        load_average=[round(x, 2) for x in load_average],
    )


def _r(x) -> float | None:
    return None if x is None else round(float(x), 3)


# --------------------------------------------------------------------------- the real HPA, for the baseline check

# The local cluster's kube-controller-manager runs the HPA at its default sync period (baselines.HPA_SYNC_S).


def hpa_sync_ticks(history: list[dict], end_s: float) -> list[float]:
    """The real HPA's sync times on the workload's axis: every change of its status (metric or desired count)
    shows a sync between the poll before and the poll of the change; their phase modulo the 15 s period is
    their circular mean, and the ticks run at that phase through ``end_s``."""
    changes, prev = [], None
    for a, b in zip(history, history[1:], strict=False):
        h = b.get("hpa")
        if not h:
            continue
        key = (h.get("metric"), h.get("desired"))
        if prev is not None and key != prev:
            changes.append((a["t"] + b["t"]) / 2)
        prev = key
    if not changes:
        return []
    ang = np.asarray(changes) % HPA_SYNC_S / HPA_SYNC_S * 2 * np.pi
    phase = (math.atan2(np.sin(ang).mean(), np.cos(ang).mean()) / (2 * np.pi) % 1.0) * HPA_SYNC_S
    first = phase + HPA_SYNC_S * round((changes[0] - phase) / HPA_SYNC_S)
    return [float(t) for t in np.arange(first, end_s, HPA_SYNC_S)]


# --------------------------------------------------------------------------- the figure

ARM_STYLE = {
    "burstpilot": dict(color="C0", lw=2.0),
    "keda": dict(color="C3", lw=3.5, alpha=0.5),  # wide: it may lie under the hpa line
    "hpa": dict(color="C2", lw=1.5),
    "advisory": dict(color="C4", lw=1.5, ls="--"),
}


def plot_replicas(panels: list[dict], path: Path) -> Path:
    """One panel per workload: every arm's Ready pods (solid) and spec.replicas (thin) over time, against the
    arrival rate (bars, right axis). ``panels``: ``{"title", "arrivals", "duration_s", "arms": {arm: history}}``
    with each history row's ``t`` on the workload's time axis."""
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 3.6 * len(panels)), dpi=100, squeeze=False)
    for ax, panel in zip(axes[:, 0], panels, strict=True):
        t_bins, rate = rate_series(np.asarray(panel["arrivals"]), panel["duration_s"])
        ax2 = ax.twinx()
        ax2.bar(t_bins, rate, width=10.0, align="edge", color="0.87", label="arrival rate (10 s bins)")
        ax2.set_ylabel("requests/s")
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        top = 1
        for arm, hist in panel["arms"].items():
            hist = [h for h in hist if -30 <= h["t"] <= panel["duration_s"] + 30]
            if not hist:
                continue
            t = [h["t"] for h in hist]
            ready = [h["ready"] for h in hist]
            style = ARM_STYLE.get(arm, {})
            ax.step(t, ready, where="post", label=f"{arm}: Ready", **style)
            ax.step(t, [h["spec"] for h in hist], where="post", color=style.get("color"), lw=0.6, alpha=0.6)
            top = max(top, max(h["spec"] or 0 for h in hist))
        ax.set_xlim(0, panel["duration_s"])
        ax.set_ylim(0, top + 1)
        ax.set_ylabel("replicas (thin: asked for)")
        ax.set_title(panel["title"], fontsize=10)
        lines, labels = ax.get_legend_handles_labels()
        bars, blabels = ax2.get_legend_handles_labels()
        ax.legend(lines + bars, labels + blabels, loc="upper left", fontsize=7, ncol=3)
    axes[-1, 0].set_xlabel("seconds since the replay began")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
