"""A replica profile measured against a real endpoint: `burstpilot profile measure`.

The way users of real vLLM obtain one. One replica is swept with the open-loop load generator
(``burstpilot.loadtest.replay``) at rising rates: each level is Poisson arrivals at that rate, for
``duration_s``, with request and response lengths drawn from the workload's own (prompt, output) pairs. A
level meets the SLO when at least ``goal`` of its requests meet every objective (the load generator's
rule: failed requests count as misses); the **measured capacity** is the highest rate that does, refined by
bisection between the last level that met the SLO and the first that did not.

The step-time model is then fitted to what the endpoint showed: three factors on a base profile's terms
(``--base-profile``: the GPU and model closest to the target; its memory figures and scheduler limits are
kept) -- one on the weight stream (``w_ms``), one on the dense work per token and prefill (``f_ms``, ``p1``,
``p2``), one on the KV-cache reads (``k_ms``, ``kl_ms``) -- chosen so that the discrete-event simulator, fed
with each level's requests at the times they were sent, reproduces the level's measured median TTFT and median
and 90th-percentile TPOT as closely as possible (least squares on log ratios, Nelder-Mead).
The fitted profile's own capacity, found by the simulator on the same levels, is recorded beside the measured one.

The output is a profile JSON that ``load_profile(path)`` reads (and so ``sim``, ``evaluate``, the policy and
the ServingPool CRD); its ``calibration`` records where and how it was measured (docs/sim.md, "Measured
profiles").
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize

from burstpilot.errors import BurstpilotError
from burstpilot.loadtest.records import read_records
from burstpilot.loadtest.runner import ReplayOptions, replay
from burstpilot.sim.des import simulate
from burstpilot.sim.profile import Profile, profile_from_dict
from burstpilot.sim.workload import Workload
from burstpilot.slo import SLO

SLO_KEYS_MEASURED = ("ttft", "tpot", "e2e")
STATS = ("ttft_p50", "ttft_p90", "tpot_p50", "tpot_p90")
# what the fit matches: the tail of TTFT is left out, it carries the client's and the server's scheduling
# delays on a busy machine more than the replica's step times
FIT_STATS = ("ttft_p50", "tpot_p50", "tpot_p90")
# factor name -> the step-model terms it scales
GROUPS = {"weights": ("w_ms",), "compute": ("f_ms", "p1", "p2"), "kv": ("k_ms", "kl_ms")}


@dataclass
class SweepWorkload:
    """Arrival times and lengths of one level, with the ``failed`` column the load generator reads."""

    arrival_s: np.ndarray
    request_tokens: np.ndarray
    response_tokens: np.ndarray

    @property
    def failed(self) -> np.ndarray:
        return np.zeros(len(self.arrival_s), dtype=bool)

    def __len__(self) -> int:
        return len(self.arrival_s)


def length_mix(trace) -> tuple[np.ndarray, np.ndarray]:
    """The (prompt, output) token pairs of a workload's successful requests."""
    req = np.asarray(trace.request_tokens, dtype=np.int64)
    resp = np.asarray(trace.response_tokens, dtype=np.int64)
    failed = np.asarray(getattr(trace, "failed", np.zeros(len(req), dtype=bool)), dtype=bool)
    keep = ~failed & (resp > 0) & (req > 0)
    if not keep.any():
        raise BurstpilotError("--workload: no successful request with prompt and output tokens to draw from")
    return req[keep], resp[keep]


def level_workload(mix, rate: float, duration_s: float, seed: int) -> SweepWorkload:
    """Poisson arrivals at ``rate`` for ``duration_s``, lengths drawn from ``mix`` (pairs kept together).

    The draw depends on (seed, rate) alone, so a rate gets the same requests whoever asks for it.
    """
    rng = np.random.default_rng([seed, int(round(rate * 1e6))])
    n = max(1, int(rng.poisson(rate * duration_s)))
    t = np.sort(rng.uniform(0.0, duration_s, n))
    pick = rng.integers(0, len(mix[0]), n)
    return SweepWorkload(t, mix[0][pick].copy(), mix[1][pick].copy())


def _stats(ttft, tpot, ok) -> dict[str, float]:
    t, p = ttft[ok], tpot[ok & ~np.isnan(tpot)]
    return {
        "ttft_p50": float(np.median(t)) if len(t) else math.nan,
        "ttft_p90": float(np.quantile(t, 0.9)) if len(t) else math.nan,
        "tpot_p50": float(np.median(p)) if len(p) else math.nan,
        "tpot_p90": float(np.quantile(p, 0.9)) if len(p) else math.nan,
    }


def simulate_level(profile: Profile, arrival, prompt, output, slo) -> dict[str, Any]:
    """The simulator's answer for one level on one ready replica: attainment and latency statistics."""
    res = simulate(Workload(np.asarray(arrival), np.asarray(prompt), np.asarray(output)), profile, replicas=1)
    ok = ~res.rejected & ~np.isnan(res.e2e_s)
    good = slo.met(res.ttft_s, res.tpot_s, res.e2e_s, failed=~ok)
    return {"attainment": float(good.mean()) if len(good) else 1.0} | _stats(res.ttft_s, res.tpot_s, ok)


def capacity(attainment_at: Callable[[float], float], rates: list[float], goal: float, bisect: int = 4):
    """The highest rate meeting ``goal``: the first failing rate of ``rates`` (ascending), then bisection.

    Returns (capacity or None when even the lowest rate fails, [(rate, attainment), ...] in the order tried).
    """
    tried: list[tuple[float, float]] = []
    lo = hi = None
    for r in rates:
        a = attainment_at(r)
        tried.append((r, a))
        if a >= goal:
            lo = r
        else:
            hi = r
            break
    if lo is None:
        return None, tried
    if hi is None:
        return lo, tried
    for _ in range(bisect):
        mid = (lo + hi) / 2
        a = attainment_at(mid)
        tried.append((mid, a))
        lo, hi = (mid, hi) if a >= goal else (lo, mid)
    return lo, tried


def scaled_profile(base: dict, factors: dict[str, float], name: str) -> Profile:
    d = json.loads(json.dumps(base))
    for group, terms in GROUPS.items():
        for term in terms:
            d["step_model"][term] = base["step_model"][term] * factors[group]
    d["name"] = name
    return profile_from_dict(d, f"profile {name}")


def fit_factors(base: dict, levels: list[dict], slo: SLO) -> tuple[dict[str, float], float]:
    """The three factors whose simulated levels match the measured latency statistics best."""
    names = list(GROUPS)

    def loss(x) -> float:
        prof = scaled_profile(base, dict(zip(names, np.exp(x), strict=True)), "fit")
        total = 0.0
        for lv in levels:
            sim = simulate_level(prof, lv["sent_s"], lv["prompt"], lv["output"], slo)
            for key in FIT_STATS:
                m, s = lv["stats"][key], sim[key]
                if m > 0 and s > 0 and math.isfinite(m) and math.isfinite(s):
                    total += math.log(s / m) ** 2
        return total

    x0 = np.zeros(len(names))
    simplex = np.vstack([x0] + [x0 + 0.3 * np.eye(len(names))[i] for i in range(len(names))])
    res = minimize(loss, x0, method="Nelder-Mead",
                   options={"xatol": 0.005, "fatol": 1e-6, "maxfev": 200, "initial_simplex": simplex})  # fmt: skip
    return dict(zip(names, (float(v) for v in np.exp(res.x)), strict=True)), float(res.fun)


async def _replay_level(target: str, wl: SweepWorkload, out_dir: Path, slo, api: str) -> dict:
    options = ReplayOptions(api=api, slo=slo, plot=False, progress=False, grace_s=5.0)
    await replay(wl, [target], out_dir, options)
    recs = read_records(out_dir)
    order = np.argsort([r["index"] for r in recs])
    recs = [recs[i] for i in order]

    def col(name):
        return np.array([np.nan if r.get(name) is None else r[name] for r in recs], dtype=np.float64)

    ok = np.array([not r.get("error") for r in recs])
    sent = col("sent_s")
    return {
        "sent_s": np.where(np.isnan(sent), col("scheduled_s"), sent),
        "prompt": np.array([r.get("expected_prompt_tokens") or 1 for r in recs], dtype=np.int64),
        "output": np.array([r.get("expected_output_tokens") or 1 for r in recs], dtype=np.int64),
        "ttft": col("ttft_s"),
        "tpot": col("tpot_s"),
        "e2e": col("e2e_s"),
        "ok": ok,
    }


def measure_profile(
    target: str,
    workload,
    slo: SLO,
    base: dict,
    work_dir: Path,
    goal: float = 0.99,
    rates: list[float] | None = None,
    duration_s: float = 60.0,
    seed: int = 0,
    name: str = "measured",
    api: str = "completions",
    bisect: int = 4,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> dict:
    """Sweep ``target``, fit the step model, return the profile JSON (a dict)."""
    bad = set(slo.objectives()) - set(SLO_KEYS_MEASURED)
    if bad:
        raise BurstpilotError(f"--slo: {', '.join(sorted(bad))} not supported here (use ttft, tpot, e2e)")
    if not 0 < goal <= 1:
        raise BurstpilotError(f"--attainment: {goal} is not in (0, 1]")
    base_profile = profile_from_dict(base, "--base-profile")
    mix = length_mix(workload)
    if rates is None:
        rates = default_rates(base_profile, mix)
    if not rates or any(r <= 0 for r in rates) or sorted(rates) != list(rates):
        raise BurstpilotError("--rates: give ascending positive request rates")
    work_dir.mkdir(parents=True, exist_ok=True)
    levels: list[dict] = []
    t_start = time.time()

    def measured_attainment(rate: float) -> float:
        i = len(levels)
        wl = level_workload(mix, rate, duration_s, seed)
        log(f"profile measure: level {i + 1}: {rate:.3g} req/s for {duration_s:g} s ({len(wl)} requests)...")
        lv = asyncio.run(_replay_level(target, wl, work_dir / f"level-{i:02d}", slo, api))
        good = slo.met(lv["ttft"], lv["tpot"], lv["e2e"], failed=~lv["ok"])
        lv |= {
            "rate": rate,
            "attainment": float(good.mean()),
            "stats": _stats(lv["ttft"], lv["tpot"], lv["ok"]),
        }
        levels.append(lv)
        st = lv["stats"]
        log(f"  attainment {lv['attainment']:.3f}; TTFT p50 {st['ttft_p50']:.3f} s p90 {st['ttft_p90']:.3f} s; "
            f"TPOT p50 {1e3 * st['tpot_p50']:.1f} ms p90 {1e3 * st['tpot_p90']:.1f} ms")  # fmt: skip
        return lv["attainment"]

    measured_cap, _ = capacity(measured_attainment, rates, goal, bisect)
    log("profile measure: fitting the step-time model to the measured levels...")
    factors, loss = fit_factors(base, levels, slo)
    fitted = scaled_profile(base, factors, name)

    def model_attainment(rate: float) -> float:
        wl = level_workload(mix, rate, duration_s, seed)
        return simulate_level(fitted, wl.arrival_s, wl.request_tokens, wl.response_tokens, slo)["attainment"]

    model_cap, _ = capacity(model_attainment, rates, goal, bisect)
    out = json.loads(json.dumps(base))
    out["step_model"] = {k: round(float(getattr(fitted.step, k)), 12) for k in fitted.step.FIELDS}
    out["name"] = name
    out["description"] = (
        f"measured against {target} with `burstpilot profile measure` ({len(levels)} levels); "
        f"memory and scheduler limits from {base_profile.name}"
    )
    sims = [simulate_level(fitted, lv["sent_s"], lv["prompt"], lv["output"], slo) for lv in levels]
    out["calibration"] = {
        "source": f"measured: endpoint sweep ({len(levels)} levels); memory from {base_profile.name}",
        "method": "burstpilot profile measure",
        "target": target,
        "host": socket.gethostname(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t_start)),
        "workload": str(getattr(workload, "source", "") or "given"),
        "slo_s": slo.objectives(),
        "attainment_goal": goal,
        "level_duration_s": duration_s,
        "bisection_steps": bisect,
        "seed": seed,
        "base_profile": base_profile.name,
        "capacity_rps": measured_cap,
        "model_capacity_rps": model_cap,
        "factors": {k: round(v, 4) for k, v in factors.items()},
        "fit_loss": round(loss, 6),
        "levels": [
            {
                "rate_rps": lv["rate"],
                "requests": int(len(lv["ok"])),
                "failed": int((~lv["ok"]).sum()),
                "attainment": round(lv["attainment"], 4),
                "measured": {k: round(v, 5) for k, v in lv["stats"].items()},
                "model": {k: round(v, 5) for k, v in s.items() if k in STATS},
            }
            for lv, s in zip(levels, sims, strict=True)
        ],
    }
    return out


def default_rates(base: Profile, mix) -> list[float]:
    """Rising rates around the base profile's rough throughput bound for this length mix."""
    p, o = float(np.mean(mix[0])), float(np.mean(mix[1]))
    # a replica's decode throughput at full batch, and the prefill time per request
    batch = base.max_num_seqs
    step_s = base.decode_ms(batch, batch * (p + o / 2)) / 1e3
    per_req_s = o / (batch / step_s) + base.prefill_ms(p) / 1e3
    bound = 1.0 / per_req_s
    return [round(bound * f, 3) for f in (0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0, 1.25)]
