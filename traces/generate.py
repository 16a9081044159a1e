"""Burst-preserving workload generation: replay scaling, modeled scaling, the ``burstgpt`` preset.

Conventions (the study's generator confused them; here they are explicit):
- Gamma inter-arrivals use numpy's (shape, scale) with scale = 1 / (shape * rate), so the mean
  gap is 1 / rate and the coefficient of variation is 1 / sqrt(shape).
- Scaling a workload to a target rate keeps its clock (``scale_rate``): replay scaling thins it
  (rate down) or lays the trace's own other days over it (rate up), modeled scaling samples the
  fitted per-window Gamma process at a multiplied rate. Time compression (``scale_replay``,
  ``--speedup``) is only ever explicit: it shortens every burst and the day with it.
- Arrival times are on the trace's own time axis (for the preset: seconds from Monday 0:00 of day 0).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from burstpilot.errors import BurstpilotError
from burstpilot.traces.analyze import summarize
from burstpilot.traces.table import NO_SESSION, Trace, concat_traces, make_trace

PRESETS = ("burstgpt",)
DAY_S = 86400.0
WINDOW_S = 1200.0

# The study's published shape (see docs/traces.md): conversation traffic follows working hours
# (near zero 02:00-08:00, peaks 10-11h and 15-16h, a dip at 12h), weekends lower; API traffic is
# aperiodic and burstier. Hourly weights are relative rates at the middle of each hour.
CONVERSATION_HOURLY = np.array(
    [0.25, 0.12, 0.05, 0.03, 0.03, 0.03, 0.05, 0.12, 0.45, 0.8, 1.0, 1.0, 0.7, 0.8, 0.95, 1.0, 1.0, 0.85]
    + [0.65, 0.55, 0.5, 0.48, 0.42, 0.33]
)
WEEKDAY = np.array([1.0, 1.02, 1.0, 0.98, 0.92, 0.55, 0.5])  # Monday first


def _gamma_renewal(rng, edges, rates, shapes) -> np.ndarray:
    """Arrivals of a Gamma renewal process with a piecewise-constant rate and shape.

    ``edges`` are window boundaries (len W+1); in window w gaps are Gamma(shape_w, 1/(shape_w rate_w)).
    The process runs in operational time (expected count), where every gap has mean 1: a gap takes
    the shape of the window its earlier arrival lies in, and the gap that crosses a boundary is
    kept (redrawing it would shorten long gaps and add arrivals).
    """
    widths = np.diff(edges)
    op_edges = np.concatenate([[0.0], np.cumsum(rates * widths)])
    total = op_edges[-1]
    out = []
    u = 0.0  # operational time of the last arrival
    w = 0
    while w < len(rates) and u < total:
        end = op_edges[w + 1]
        if u >= end:
            w += 1
            continue
        k = shapes[w]
        m = int((end - u) * 1.3 + 6 * np.sqrt(end - u) + 16)
        pts = u + np.cumsum(rng.gamma(k, 1.0 / k, m))
        n_in = int(np.searchsorted(pts, end))
        if n_in < m:
            out.append(pts[: n_in + 1])  # the crossing arrival belongs to a later window
            w += 1
        else:
            out.append(pts)
        u = out[-1][-1]
    if not out:
        return np.zeros(0)
    op = np.concatenate(out)
    op = op[op < total]
    return np.interp(op, op_edges, edges)


def _spliced_lengths(rng, n, median, sigma, tail_p, alpha, cap) -> np.ndarray:
    """Token lengths: a lognormal body with a Pareto tail above the body's (1 - tail_p) quantile."""
    from scipy.stats import norm

    x_t = median * np.exp(sigma * norm.ppf(1 - tail_p))
    u = rng.random(n)
    body = median * np.exp(sigma * norm.ppf(np.minimum(u / (1 - tail_p), 1 - 1e-12) * (1 - tail_p)))
    v = rng.random(n)
    tail = x_t * (1 - v) ** (-1.0 / alpha)
    x = np.where(u < 1 - tail_p, body, tail)
    return np.clip(np.round(x), 1, cap).astype(np.int64)


def _responses(rng, req, model, log_type) -> np.ndarray:
    n = len(req)
    conv = log_type == "Conversation log"
    if model == "ChatGPT":
        # bimodal: a short mode and a long mode whose median grows with the request
        # (conversation: about 100 -> 450 tokens as requests grow 100 -> 2,000)
        long_med = 100 * (req / 100.0) ** 0.5 if conv else 260 * (req / 500.0) ** 0.12
        long_med = np.clip(long_med, 60, 1200)
        long = long_med * np.exp(0.45 * rng.standard_normal(n))
        short = 22 * np.exp(0.5 * rng.standard_normal(n))
        x = np.where(rng.random(n) < 0.3, short, long)
    else:
        med = np.clip(120 * (req / 100.0) ** 0.4, 40, 1500) if conv else 220 * (req / 500.0) ** 0.1
        x = med * np.exp(0.6 * rng.standard_normal(n))
    return np.clip(np.round(x), 1, 4096).astype(np.int64)


_PRESET_GROUPS = (
    # model, log type, share of requests, Gamma shape, periodic, request median, sigma, tail alpha
    ("ChatGPT", "Conversation log", 0.50, 0.7, True, 450, 1.0, 1.7),
    ("GPT-4", "Conversation log", 0.12, 0.7, True, 500, 1.0, 1.6),
    ("ChatGPT", "API log", 0.30, 0.3, False, 800, 1.2, 1.4),
    ("GPT-4", "API log", 0.08, 0.3, False, 900, 1.2, 1.4),
)
SESSION_SINGLE_TURN = 0.36  # geometric turns: P(1) = 0.36, median 2, 83% <= 4
SESSION_GAP_MEDIAN_S = 120.0


BURST_SHARE = 0.06  # of API requests that arrive in burst episodes
BURST_MEDIAN_S = 8.0
BURST_MULTIPLIER = 15.0  # median episode rate, relative to the group's mean rate


def _burst_episodes(rng, start: float, end: float, mean_rate: float) -> np.ndarray:
    """Arrivals in burst episodes (tens of times the mean rate for seconds to a minute) that
    carry BURST_SHARE of the group's requests on average: episodes start uniformly in the span,
    last lognormal(median 8 s) and run at a lognormal(median 15x) multiple of the mean rate."""
    budget = BURST_SHARE * mean_rate * (end - start)
    out = []
    expected = 0.0
    while True:
        dur = float(np.clip(BURST_MEDIAN_S * np.exp(0.8 * rng.standard_normal()), 2.0, 120.0))
        lam = mean_rate * BURST_MULTIPLIER * np.exp(0.5 * rng.standard_normal())
        expected += lam * dur
        if expected > budget and rng.random() > budget / expected:
            break
        t0 = rng.uniform(start, end)
        out.append(np.minimum(t0 + rng.uniform(0, dur, rng.poisson(lam * dur)), np.nextafter(end, start)))
    return np.concatenate(out) if out else np.zeros(0)


def _rate_profile(rng, edges, periodic: bool) -> np.ndarray:
    mid = (edges[:-1] + edges[1:]) / 2
    if periodic:
        hour = (mid % DAY_S) / 3600.0
        hours = np.arange(25) + 0.5
        prof = np.interp(
            hour, np.concatenate([[-0.5], hours[:-1]]), np.r_[CONVERSATION_HOURLY[-1], CONVERSATION_HOURLY]
        )
        day = (mid // DAY_S).astype(int) % 7
        return prof * WEEKDAY[day] * np.exp(0.15 * rng.standard_normal(len(mid)))
    # aperiodic: an AR(1) log-rate per window
    z = np.zeros(len(mid))
    e = rng.standard_normal(len(mid))
    z[0] = e[0] * 0.6
    for i in range(1, len(z)):
        z[i] = 0.9 * z[i - 1] + 0.6 * np.sqrt(1 - 0.81) * e[i]
    return np.exp(z)


def generate_preset(
    name: str = "burstgpt",
    duration_s: float = 3600.0,
    rps: float = 5.0,
    seed: int = 0,
    start_s: float = 0.0,
    failure_rate: float = 0.02,
    round_timestamps: bool = False,
) -> Trace:
    """A synthetic workload with the BurstGPT study's published shape.

    ``start_s`` places the workload on a week that starts Monday 0:00 (10 * 3600 starts at a
    morning peak); the mean rate over [start_s, start_s + duration_s) is ``rps``. Conversation
    rows carry session ids (geometric turns, 2-minute median gaps); failures (``failure_rate`` on
    average, response tokens 0) are more likely when the local load is above its window mean.
    """
    if name not in PRESETS:
        raise BurstpilotError(f"unknown preset {name!r} (available: {', '.join(PRESETS)})")
    if duration_s <= 0 or rps <= 0:
        raise BurstpilotError("preset needs duration_s > 0 and rps > 0")
    if not 0 <= failure_rate < 0.5:
        raise BurstpilotError("failure_rate must be in [0, 0.5)")
    rng = np.random.default_rng(seed)
    end = start_s + duration_s
    edges = np.arange(start_s, end, WINDOW_S)
    edges = np.append(edges, end)
    parts = []
    for gi, (model, log_type, share, shape, periodic, med, sigma, alpha) in enumerate(_PRESET_GROUPS):
        prof = _rate_profile(rng, edges, periodic)
        prof = prof / np.average(prof, weights=np.diff(edges))
        rate = rps * share * prof
        conv = log_type == "Conversation log"
        if conv:
            mean_turns = 1 / SESSION_SINGLE_TURN
            # sessions also begin in the half hour before the span, so that its first minutes
            # get the later turns of earlier sessions (as many turns leave past the end)
            lead = np.concatenate([[start_s - 1800.0], edges])
            starts = _gamma_renewal(
                rng, lead, np.r_[rate[0], rate] / mean_turns, np.full(len(rate) + 1, shape)
            )
            turns = rng.geometric(SESSION_SINGLE_TURN, len(starts))
            sess = np.repeat(np.arange(len(starts)), turns)
            gaps = SESSION_GAP_MEDIAN_S * np.exp(1.0 * rng.standard_normal(len(sess)))
            first = np.concatenate([[0], np.cumsum(turns)[:-1]])
            gaps[first] = 0.0
            cum = np.cumsum(gaps)
            offs = cum - np.repeat(cum[first], turns)
            t = np.repeat(starts, turns) + offs
            keep = (t >= start_s) & (t < end)
            t, sess = t[keep], sess[keep] + gi * 10_000_000
        else:
            base = _gamma_renewal(rng, edges, rate * (1 - BURST_SHARE), np.full(len(rate), shape))
            t = np.sort(np.concatenate([base, _burst_episodes(rng, start_s, end, rps * share)]))
            sess = np.full(len(t), NO_SESSION, np.int64)
        req = _spliced_lengths(rng, len(t), med, sigma, 0.08, alpha, 32000)
        resp = _responses(rng, req, model, log_type)
        parts.append((t, req, resp, sess, np.full(len(t), gi)))
    t = np.concatenate([p[0] for p in parts])
    order = np.argsort(t, kind="stable")
    t = t[order]
    req, resp, sess, gid = (np.concatenate([p[i] for p in parts])[order] for i in range(1, 5))
    if round_timestamps:
        t = np.floor(t)
    failed = _failures(rng, t, failure_rate)
    resp = np.where(failed, 0, resp)
    per_token = np.where(np.isin(gid, (1, 3)), 0.04, 0.015)
    elapsed = np.where(
        failed,
        np.round(rng.uniform(0.2, 3.0, len(t)), 3),
        np.round((0.3 + resp * per_token) * np.exp(0.3 * rng.standard_normal(len(t))), 3),
    )
    models = np.array(["ChatGPT", "GPT-4"], dtype=object)
    logs = np.array(["API log", "Conversation log"], dtype=object)
    mcodes = np.array([0, 1, 0, 1], np.int32)[gid]
    lcodes = np.array([1, 1, 0, 0], np.int32)[gid]
    return make_trace(
        t,
        req,
        resp,
        failed=failed,
        model=(mcodes, models),
        log_type=(lcodes, logs),
        session_id=sess,
        elapsed_s=elapsed,
        source=f"preset:{name}(duration_s={duration_s:g}, rps={rps:g}, seed={seed}, start_s={start_s:g})",
        format="preset",
        clock_offset_s=0.0,
    )


def _failures(rng, t: np.ndarray, rate: float, bin_s: float = 10.0) -> np.ndarray:
    """Failure flags with mean ``rate`` whose probability grows with the local load: the
    request count in its 10-second bin relative to the mean of its 20-minute window."""
    if len(t) == 0 or rate == 0:
        return np.zeros(len(t), bool)
    b = np.floor((t - t[0]) / bin_s).astype(np.int64)
    counts = np.bincount(b)
    per_window = int(WINDOW_S / bin_s)
    w = np.arange(len(counts)) // per_window
    wmean = np.bincount(w, counts) / np.bincount(w)
    load = counts[b] / np.maximum(wmean[w[b]], 1e-9)
    weight = np.sqrt(load)
    p = np.clip(rate * weight / weight.mean(), 0, 0.6)
    for _ in range(5):  # renormalize after clipping
        p = np.clip(p * rate / p.mean(), 0, 0.6)
    return rng.random(len(t)) < p


def scale_replay(
    trace: Trace,
    rps: float | None = None,
    speedup: float | None = None,
    start_s: float | None = None,
    duration_s: float | None = None,
) -> Trace:
    """Replay scaling: take [start_s, start_s + duration_s) of ``trace`` and compress time by a
    factor so its mean rate becomes ``rps`` (or by ``speedup``). Inter-arrival shape (CV, Gamma
    shape) and token lengths are unchanged; the result starts at 0."""
    if (rps is None) == (speedup is None):
        raise BurstpilotError("replay scaling needs exactly one of --rps or --speedup")
    t0 = trace.arrival_s[0] if start_s is None and len(trace) else (start_s or 0.0)
    mask = trace.arrival_s >= t0
    if duration_s is not None:
        mask &= trace.arrival_s < t0 + duration_s
    sel = trace.subset(mask)
    if len(sel) < 2:
        raise BurstpilotError(f"{trace.source}: fewer than 2 requests in the selected span")
    span = duration_s if duration_s is not None else sel.arrival_s[-1] - t0
    if span <= 0:
        raise BurstpilotError(f"{trace.source}: the selected span has zero length")
    if speedup is None:
        if rps <= 0:
            raise BurstpilotError("--rps must be positive")
        speedup = rps / (len(sel) / span)
    if speedup <= 0:
        raise BurstpilotError("--speedup must be positive")
    return replace(
        sel,
        arrival_s=(sel.arrival_s - t0) / speedup,
        elapsed_s=sel.elapsed_s,
        origin=None,
        clock_offset_s=None,
        # a speedup of 1 only moves the time axis, so the source is kept (evaluate rebases every workload that
        # way, and the demo's replay report was titled "replay:replay:preset:… x1 x1")
        source=trace.source if speedup == 1 else f"replay:{trace.source} x{speedup:.6g}",
        format="replay",
    )


SCALE_METHODS = ("replay", "modeled")


def scale_rate(
    trace: Trace,
    rps: float,
    method: str = "replay",
    start_s: float | None = None,
    duration_s: float | None = None,
    seed: int = 0,
    summary: dict | None = None,
    window_s: float = WINDOW_S,
) -> Trace:
    """``trace`` at mean rate ``rps`` on its own time axis: the span [start_s, start_s +
    duration_s) (the whole trace by default) keeps its times, its diurnal profile and its bursts.

    ``method="replay"`` uses the trace's own requests: for a lower rate each request is kept with
    probability rps / rate (independent thinning, seeded); for a higher rate the trace's other
    days are laid over the span at the same clock time (copy j is the trace shifted by j days,
    wrapping around the trace's whole days; a trace shorter than a day is shifted by a fraction of
    its span instead), the last copy thinned to hit the rate. Thinning and superposition both move
    the inter-arrival shape towards Poisson (1); modeled scaling does not.
    ``method="modeled"`` samples the per-window Gamma fit of ``summary`` (analyzed from ``trace``
    when not given) at every window's rate times one factor, keeping the windows' shapes
    (``generate_modeled``). The result keeps the source's time axis and clock offset."""
    if method not in SCALE_METHODS:
        raise BurstpilotError(f"unknown scaling method {method!r} (choose from {', '.join(SCALE_METHODS)})")
    if rps is None or rps <= 0:
        raise BurstpilotError("--rps must be positive")
    if len(trace) < 2:
        raise BurstpilotError(f"{trace.source}: fewer than 2 requests to scale")
    t_first, t_last = float(trace.arrival_s[0]), float(trace.arrival_s[-1])
    start = t_first if start_s is None else float(start_s)
    end = float(np.nextafter(t_last, np.inf)) if duration_s is None else start + float(duration_s)
    if duration_s is None and start_s is not None and start >= t_last:
        raise BurstpilotError(f"{trace.source}: --start {start:g} is past the last request ({t_last:g})")
    if end <= start:
        raise BurstpilotError(f"{trace.source}: the selected span has zero length")
    if method == "modeled":
        if summary is None:
            summary = summarize(trace, window_s)
        out = generate_modeled(summary, rps, end - start, start_s=start, seed=seed, source=trace.source)
        return replace(out, source=f"modeled:{trace.source}(rps={rps:g}, seed={seed})")
    rng = np.random.default_rng(seed)
    period, src_start, src_span = _replay_period(trace)
    base = (
        trace.subset((trace.arrival_s >= start) & (trace.arrival_s < end)) if end <= t_last + 1e-9 else None
    )
    rate_here = (len(base) / (end - start)) if base is not None else len(trace) / max(src_span, 1e-9)
    if rate_here <= 0:
        raise BurstpilotError(f"{trace.source}: no requests in [{start:g}, {end:g}) to scale")
    factor = rps / rate_here
    layers = []
    copies = int(np.ceil(factor - 1e-9))
    for j in range(copies):
        layer = _layer(trace, j, period, src_start, src_span, start, end)
        keep_p = min(factor - j, 1.0)
        if keep_p < 1.0:
            layer = layer.subset(rng.random(len(layer)) < keep_p)
        layers.append(layer)
    out = concat_traces(layers) if len(layers) > 1 else layers[0]
    if len(layers) > 1 and out.has_sessions:  # sessions of different copies are different sessions
        offs = np.concatenate([np.full(len(x), j, np.int64) for j, x in enumerate(layers)])
        sess = np.where(out.session_id >= 0, out.session_id * copies + offs, NO_SESSION)
        out = replace(out, session_id=sess, session_labels=None)
    out = out._take(np.argsort(out.arrival_s, kind="stable"))
    return replace(out, source=f"replay:{trace.source} rate x{factor:.6g} (clock kept)", format="replay")


def _replay_period(trace: Trace) -> tuple[float, float, float]:
    """The shift between copies: a day when the trace has whole days, else a fraction of its span."""
    t0, t1 = float(trace.arrival_s[0]), float(trace.arrival_s[-1])
    clock = trace.clock_offset_s or 0.0
    span = t1 - t0
    days = int(np.floor(span / DAY_S))
    if days >= 1:
        day0 = np.floor((t0 + clock) / DAY_S) * DAY_S - clock  # midnight of the first day
        whole = np.ceil((t1 - day0) / DAY_S) * DAY_S
        return DAY_S, day0, whole
    return span / 2.0**0.5, t0, span  # an irrational fraction of the span: copies do not align


def _layer(trace: Trace, j: int, period: float, src_start: float, src_span: float, start: float, end: float):
    """Copy j of the trace on the span: times shifted by j periods, wrapped within the trace's
    own extent (whole days when it has them), then cut to [start, end)."""
    if j == 0 and start >= float(trace.arrival_s[0]) and end <= float(trace.arrival_s[-1]) + 1e-9:
        return trace.subset((trace.arrival_s >= start) & (trace.arrival_s < end))
    rel = np.mod(trace.arrival_s - src_start + j * period, src_span)
    t = src_start + rel
    # spans beyond the trace's extent are tiled with the trace itself
    reps = int(np.ceil((end - src_start) / src_span)) if end > src_start + src_span else 1
    parts = []
    for r in range(reps):
        tt = t + r * src_span
        m = (tt >= start) & (tt < end)
        if m.any():
            idx = np.flatnonzero(m)
            idx = idx[np.argsort(tt[idx], kind="stable")]
            parts.append(replace(trace._take(idx), arrival_s=tt[idx]))
    if not parts:
        return trace.subset(np.zeros(len(trace), bool))
    return concat_traces(parts)


def _sample_tokens(rng, tm: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Request tokens by inverse CDF; response tokens from the quantiles of the request's bin."""
    req = np.interp(rng.random(n), tm["request_probs"], tm["request_quantiles"])
    edges = np.asarray(tm["request_bin_edges"])
    rq = np.asarray(tm["response_quantiles"])
    b = np.clip(np.searchsorted(edges, req, side="right") - 1, 0, len(rq) - 1)
    u = rng.random(n)
    probs = np.asarray(tm["response_probs"])
    resp = np.empty(n)
    for i in range(len(rq)):
        sel = b == i
        resp[sel] = np.interp(u[sel], probs, rq[i])
    return np.maximum(np.round(req), 1).astype(np.int64), np.maximum(np.round(resp), 1).astype(np.int64)


def generate_modeled(
    summary: dict,
    rps: float,
    duration_s: float,
    start_s: float | None = None,
    seed: int = 0,
    source: str = "summary",
    round_timestamps: bool = False,
) -> Trace:
    """Modeled scaling: sample each (model, log type) group from its per-window fitted rate and
    Gamma shape and its token distributions, on the trace's own time axis from ``start_s`` (the
    trace start by default; spans past the end wrap around). Every window's rate is multiplied
    by one factor so that the mean over the span is ``rps``: the burst shape (Gamma shape per
    window) and the relative rate profile are kept."""
    if rps <= 0 or duration_s <= 0:
        raise BurstpilotError("modeled scaling needs --rps > 0 and --duration > 0")
    try:
        groups = summary["groups"] or [summary["overall"] | {"model": None, "log_type": None}]
        t_first = float(summary["start_s"])
    except (KeyError, TypeError) as exc:
        raise BurstpilotError(f"{source}: not a burstpilot trace summary (missing {exc})") from exc
    start = t_first if start_s is None else float(start_s)
    end = start + duration_s
    rng = np.random.default_rng(seed)
    plans = []
    for g in groups:
        w = g.get("windows")
        tm = g.get("token_model")
        if not w or not tm:
            raise BurstpilotError(
                f"{source}: group {g.get('model')}/{g.get('log_type')} has no windows or token model"
            )
        ws = float(w["window_s"])
        w0 = float(w["start_s"][0])
        nwin = len(w["start_s"])
        j0 = int(np.floor((start - w0) / ws))
        j1 = int(np.ceil((end - w0) / ws))
        js = np.arange(j0, j1)
        edges = np.clip(w0 + ws * np.append(js, j1), start, end)
        wi = js % nwin
        ia = g["interarrival"]
        overall_k = ia.get("gamma_shape") or 1.0
        rates = np.array([w["rate"][i] for i in wi], dtype=float)
        shapes = np.array([w["gamma_shape"][i] or overall_k for i in wi], dtype=float)
        if ia.get("identifiable", True) is False:
            # the timestamp grid hides the shape: what counts per grid step imply, else Poisson
            shapes = np.full(len(wi), min((ia.get("grid") or {}).get("shape_from_dispersion") or 1.0, 1000.0))
        frs = np.array(
            [g["failure_rate"] if w["failure_rate"][i] is None else w["failure_rate"][i] for i in wi],
            dtype=float,
        )
        plans.append((g, edges, rates, shapes, frs, tm))
    expected = sum(float(np.sum(p[2] * np.diff(p[1]))) for p in plans)
    if expected <= 0:
        raise BurstpilotError(f"{source}: the fitted rate is zero over [{start:g}, {end:g})")
    factor = rps * duration_s / expected
    parts = []
    models, logs = [], []
    for g, edges, rates, shapes, frs, tm in plans:
        t = _gamma_renewal(rng, edges, rates * factor, shapes)
        req, resp = _sample_tokens(rng, tm, len(t))
        wi = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(frs) - 1)
        failed = rng.random(len(t)) < frs[wi]
        resp = np.where(failed, 0, resp)
        mname, lname = g.get("model") or "", g.get("log_type") or ""
        models.append(mname)
        logs.append(lname)
        parts.append((t, req, resp, failed, np.full(len(t), len(parts))))
    t = np.concatenate([p[0] for p in parts])
    order = np.argsort(t, kind="stable")
    t = t[order]
    req, resp, failed, gid = (np.concatenate([p[i] for p in parts])[order] for i in range(1, 5))
    if round_timestamps:
        t = np.floor(t)
    mcats, mcodes = np.unique(np.array(models), return_inverse=True)
    lcats, lcodes = np.unique(np.array(logs), return_inverse=True)
    mc = np.where(mcats[mcodes] == "", -1, mcodes)[gid]
    lc = np.where(lcats[lcodes] == "", -1, lcodes)[gid]
    return make_trace(
        t,
        req,
        resp,
        failed=failed,
        model=(_compact(mc, mcats)),
        log_type=(_compact(lc, lcats)),
        source=f"modeled:{source}(rps={rps:g}, duration_s={duration_s:g}, seed={seed})",
        format="modeled",
        clock_offset_s=summary.get("clock_offset_s"),
    )


def _compact(codes: np.ndarray, cats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop the empty category (unknown) so codes index real names only, -1 for unknown."""
    keep = np.flatnonzero(cats != "")
    remap = np.full(len(cats), -1, np.int32)
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    return np.where(codes >= 0, remap[np.maximum(codes, 0)], -1).astype(np.int32), cats[keep].astype(object)
