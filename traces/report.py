"""Figures (matplotlib, Agg backend) and the Markdown report of ``burstpilot trace analyze``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from burstpilot.traces import fit  # noqa: E402
from burstpilot.traces.table import Trace  # noqa: E402


def _label(g: dict) -> str:
    return " / ".join(x for x in (g.get("model"), g.get("log_type")) if x) or "all"


def _series(summary: dict) -> list[dict]:
    """Groups to draw: every (model, log type) group, or the overall when there is none."""
    return summary["groups"] or [summary["overall"] | {"model": None, "log_type": None}]


def _save(fig, path: Path) -> str:
    # fixed margins: tight_layout measures every tick label and costs seconds on log axes
    fig.subplots_adjust(left=0.09, right=0.98, bottom=0.16, top=0.85, wspace=0.35)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path.name


def make_figures(trace: Trace, summary: dict, out: Path) -> dict[str, str]:
    figs = {}
    groups = _series(summary)
    masks = {_label(g): mask for g, (_, _, mask) in zip(summary["groups"], _labelled(trace), strict=False)}
    t0, span = summary["start_s"], max(summary["duration_s"], 1.0)
    hours = span > 6 * 3600
    unit, scale = ("h", 3600.0) if hours else ("min", 60.0)

    # request rate over time
    fig, ax = plt.subplots(figsize=(10, 3.5))
    bin_s = max(60.0, span / 1500)
    nb = int(span // bin_s) + 1
    for g in groups:
        a = trace.arrival_s[masks[_label(g)]] if _label(g) in masks else trace.arrival_s
        c = np.bincount(((a - t0) // bin_s).astype(np.int64), minlength=nb)
        ax.plot(np.arange(nb) * bin_s / scale, c / bin_s, lw=0.7, label=_label(g))
    ax.set_xlabel(f"time since start ({unit})")
    ax.set_ylabel(f"requests/s ({bin_s:g}-s bins)")
    ax.set_title("Request rate")
    ax.legend(fontsize=7)
    figs["rate"] = _save(fig, out / "rate.png")

    # periodicity
    if summary["periodicity"]:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        for g in groups:
            p = g["periodicity"]
            if not p:
                continue
            a1.plot(range(24), p["hourly"], marker="o", ms=3, label=_label(g))
            wd = [np.nan if v is None else v for v in p["weekday"]]
            a2.plot(range(7), wd, marker="o", ms=3, label=_label(g))
        a1.set_xlabel("hour of day")
        a1.set_ylabel("mean requests/s")
        a2.set_xlabel(
            "day of week"
            + (" (Mon=0)" if "calendar" in summary["periodicity"]["weekday_origin"] else " (trace day 0 = 0)")
        )
        a1.legend(fontsize=7)
        a1.set_title("Hourly profile")
        a2.set_title("Weekday profile")
        figs["periodicity"] = _save(fig, out / "periodicity.png")

    # inter-arrival CCDF with the fitted models
    fig, axes = plt.subplots(1, len(groups), figsize=(3.6 * len(groups), 3.3), squeeze=False)
    res = summary["timestamp_resolution_s"]
    for ax, g in zip(axes[0], groups, strict=True):
        a = trace.arrival_s[masks[_label(g)]] if _label(g) in masks else trace.arrival_s
        gaps = np.diff(a)
        gaps = np.sort(gaps[fit.subsample(len(gaps), 400_000)])
        ia = g["interarrival"]
        if len(gaps) < 20 or ia["gamma_shape"] is None:
            ax.set_visible(False)
            continue
        x = np.unique(np.quantile(gaps, np.linspace(0, 0.9999, 400)))
        x = x[x > 0] if res == 0 else x
        emp = 1 - np.searchsorted(gaps, x, side="right") / len(gaps)
        ax.step(np.maximum(x, res or 1e-6), emp, where="post", color="k", lw=1, label="empirical")
        for name, dist, p1, p2 in (
            ("Gamma", "gamma", ia["gamma_shape"], ia["gamma_scale"]),
            ("exponential", "gamma", 1.0, ia["exponential_scale"]),
            ("Weibull", "weibull", ia["weibull_shape"], ia["weibull_scale"]),
        ):
            if res > 0:
                d = np.round(x / res)
                model = 1 - fit._discrete_cdf(dist, d, p1, p2 / res)
            else:
                model = 1 - fit._DISTS[dist][2](x, p1, p2)
            ax.plot(np.maximum(x, res or 1e-6), model, lw=1, label=name)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(0.5 / len(gaps), 1.5)
        ax.set_xlabel("inter-arrival (s)")
        ax.set_title(f"{_label(g)}\nGamma shape {ia['gamma_shape']:.2f}", fontsize=8)
        ax.legend(fontsize=6)
    axes[0][0].set_ylabel("P(gap > x)")
    figs["interarrival"] = _save(fig, out / "interarrival.png")

    # windowed Gamma shape
    fig, ax = plt.subplots(figsize=(10, 3.2))
    for g in groups:
        w = g["windows"]
        if not w:
            continue
        k = np.array([np.nan if v is None else v for v in w["gamma_shape"]])
        ax.plot((np.array(w["start_s"]) - t0) / scale, k, lw=0.7, marker=".", ms=2, label=_label(g))
    ax.set_yscale("log")
    ax.set_xlabel(f"time since start ({unit})")
    ax.set_ylabel("Gamma shape")
    ax.set_title(f"Gamma shape refitted every {summary['window_s']:g} s")
    ax.legend(fontsize=7)
    figs["window_shapes"] = _save(fig, out / "window_shapes.png")

    # token CCDFs
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for g in groups:
        m = masks.get(_label(g), np.ones(len(trace), bool))
        for ax, col in ((a1, trace.request_tokens[m]), (a2, trace.response_tokens[m & ~trace.failed])):
            col = col[col > 0]
            if len(col) == 0:
                continue
            counts = np.bincount(col)
            v = np.flatnonzero(counts)
            ccdf = 1 - (np.cumsum(counts) - counts)[v] / len(col)  # P(X >= v)
            ax.loglog(v, ccdf, lw=1, label=_label(g))
    a1.set_title("Request tokens (CCDF)")
    a2.set_title("Response tokens (CCDF, successful)")
    for ax in (a1, a2):
        ax.set_xlabel("tokens")
        ax.set_ylabel("P(X >= x)")
    a1.legend(fontsize=7)
    figs["tokens"] = _save(fig, out / "tokens.png")

    # response vs request
    fig, ax = plt.subplots(figsize=(6, 4))
    for g in groups:
        b = g["correlation"]["binned"]
        if not b:
            continue
        mid = np.sqrt(np.array(b["request_lo"]) * np.array(b["request_hi"]))
        line = ax.plot(mid, b["median"], marker="o", ms=3, label=_label(g))
        ax.fill_between(mid, b["p5"], b["p95"], alpha=0.15, color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("request tokens")
    ax.set_ylabel("response tokens (median, 90% band)")
    ax.legend(fontsize=7)
    figs["request_response"] = _save(fig, out / "request_response.png")

    # failures
    if summary["failure_rate"] > 0:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.2))
        w = summary["overall"]["windows"]
        fr = np.array([np.nan if v is None else v for v in w["failure_rate"]])
        a1.plot((np.array(w["start_s"]) - t0) / scale, 100 * fr, lw=0.8)
        a1.set_xlabel(f"time since start ({unit})")
        a1.set_ylabel("failed (%)")
        a1.set_title(f"Failure rate per {summary['window_s']:g}-s window")
        fl = summary["overall"]["failures_vs_load"]
        if fl:
            a2.plot(fl["relative_load"], 100 * np.array(fl["relative_failure_rate"]), marker="o")
            a2.set_xscale("log")
            a2.set_xlabel("10-s load / its window's mean (deciles)")
            a2.set_ylabel("failed (%)")
            a2.set_title("Failures vs relative load")
        figs["failures"] = _save(fig, out / "failures.png")

    # sessions
    if summary["sessions"]:
        s = summary["sessions"]
        fig, ax = plt.subplots(figsize=(6, 3.2))
        ax.bar(range(1, len(s["turns_histogram"]) + 1), s["turns_histogram"])
        ax.set_xlabel("turns per session (20 = 20 or more)")
        ax.set_ylabel("sessions")
        ax.set_title(f"{s['count']} sessions, {100 * s['single_turn_fraction']:.0f}% single-turn")
        figs["sessions"] = _save(fig, out / "sessions.png")
    return figs


def _labelled(trace: Trace):
    return [(m, lt, mask) for m, lt, mask in trace.groups() if m or lt]


def _f(v, fmt=".3g") -> str:
    return "–" if v is None else format(v, fmt)


def write_report(summary: dict, figs: dict[str, str], path: Path) -> None:
    s = summary
    L = [
        "# Trace characterization",
        "",
        f"- Source: `{s['source']}` (format {s['format']})",
        f"- Rows: {s['rows']:,} ({s['bad_rows']} bad rows skipped)"
        + (f"; first bad lines: {', '.join(map(str, s['bad_lines']))}" if s["bad_lines"] else ""),
        f"- Span: {s['duration_s']:.0f} s ({s['duration_s'] / 3600:.2f} h)"
        + (f" from {s['origin']}" if s["origin"] else ""),
        f"- Mean rate: {s['mean_rps']:.3f} req/s; failure rate {100 * s['failure_rate']:.2f}%",
        f"- Timestamp resolution: {str(s['timestamp_resolution_s']) + ' s' if s['timestamp_resolution_s'] else 'sub-millisecond'}; inter-arrival fits by "
        f"`{s['interarrival_method']}`"
        + (
            " (maximum likelihood on the interval probabilities of rounded gaps, "
            "P(D=d) = G(d+1) - 2G(d) + G(d-1) with G the integrated CDF)"
            if s["timestamp_resolution_s"]
            else " (continuous maximum likelihood)"
        ),
        f"- Windowed refits every {s['window_s']:g} s; bursts: {s['burst_method']}",
        "",
        "## Groups",
        "",
        "| group | rows | req/s | failed | Gamma shape | window shape (median) | CV | KS Gamma | KS exp | KS Weibull "
        "| req p50 | req p99 | resp p50 | resp p99 | Pearson | Spearman | bursts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [s["overall"] | {"model": "all", "log_type": None}] + s["groups"]
    for g in rows:
        ia, rq, rs, c = g["interarrival"], g["request_tokens"], g["response_tokens"], g["correlation"]
        L.append(
            f"| {_label(g)} | {g['rows']:,} | {g['mean_rps']:.3g} | {100 * g['failure_rate']:.2f}% "
            f"| {_f(ia['gamma_shape'])} | {_f(ia['window_gamma_shape_median'])} | {_f(ia['cv'])} "
            f"| {_f(ia['ks_gamma'])} | {_f(ia['ks_exponential'])} | {_f(ia['ks_weibull'])} "
            f"| {_f(rq['p50'])} | {_f(rq['p99'])} | {_f(rs['p50'])} | {_f(rs['p99'])} "
            f"| {_f(c['pearson'])} | {_f(c['spearman'])} | {g['burst_stats']['count']} |"
        )
    L += [
        "",
        "## Token lengths",
        "",
        "| group | column | tail exponent (Hill, top 2%) | lognormal median | lognormal sigma | KS lognormal | modes | bimodal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in rows:
        for col in ("request_tokens", "response_tokens"):
            t = g[col]
            ln, bm = t.get("lognormal"), t.get("bimodality")
            L.append(
                f"| {_label(g)} | {col.split('_')[0]} | {_f(t.get('tail_exponent'))} "
                f"| {_f(ln and ln['median'])} | {_f(ln and ln['sigma'])} | {_f(ln and ln['ks'])} "
                f"| {', '.join(_f(m) for m in bm['modes']) if bm else '–'} | {bm['bimodal'] if bm else '–'} |"
            )
    if s["periodicity"]:
        p = s["periodicity"]
        L += [
            "",
            "## Periodicity",
            "",
            f"Lag-24h autocorrelation of hourly counts: {_f(p['daily_autocorrelation'])}; "
            f"quietest hour / busiest hour: {_f(p['trough_to_peak'])}.",
        ]
        for g in s["groups"]:
            if g["periodicity"]:
                L.append(
                    f"- {_label(g)}: lag-24h autocorrelation {_f(g['periodicity']['daily_autocorrelation'])}, "
                    f"trough/peak {_f(g['periodicity']['trough_to_peak'])}"
                )
    else:
        L += ["", "## Periodicity", "", "The trace is shorter than a day: no daily or weekly profile."]
    if s["sessions"]:
        ss = s["sessions"]
        gap = ss["gap_between_turns_s"]
        L += [
            "",
            "## Sessions",
            "",
            f"{ss['count']:,} sessions; {100 * ss['single_turn_fraction']:.1f}% single-turn; median "
            f"{ss['median_turns']:g} turns (75% <= {ss['p75_turns']:g}); gap between turns median "
            f"{_f(gap and gap['p50'])} s, mean {_f(gap and gap['mean'])} s.",
        ]
    L += [
        "",
        "## Burst episodes (overall, largest peaks)",
        "",
        "| start (s) | duration (s) | peak req/s | requests |",
        "|---|---|---|---|",
    ]
    for b in s["overall"]["bursts"][:20]:
        L.append(f"| {b['start_s']:.0f} | {b['duration_s']:.0f} | {b['peak_rps']:.0f} | {b['requests']} |")
    fl = s["overall"]["failures_vs_load"]
    if fl:
        L += [
            "",
            "## Failures vs load",
            "",
            f"Rank correlation of per-minute load and failure rate: {_f(fl['spearman_load_failure'])}.",
            "",
            "| per-minute load (req/s) | failed | relative 10-s load | failed |",
            "|---|---|---|---|",
        ]
        L += [
            f"| {_f(x)} | {100 * y:.2f}% | {_f(rx)} | {100 * ry:.2f}% |"
            for x, y, rx, ry in zip(
                fl["load_rps"],
                fl["failure_rate"],
                fl["relative_load"],
                fl["relative_failure_rate"],
                strict=False,
            )
        ]
    if figs:
        L += ["", "## Figures", ""]
        L += [f"![{name}]({fname})" for name, fname in figs.items()]
    path.write_text("\n".join(L) + "\n")
