"""Figures (matplotlib, Agg backend) and the Markdown report of ``burstpilot trace analyze``."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from burstpilot.htmlreport import write_html  # noqa: E402
from burstpilot.traces import fit  # noqa: E402


def _label(g: dict) -> str:
    return " / ".join(x for x in (g.get("model"), g.get("log_type")) if x) or "all"


def _series(summary: dict) -> list[dict]:
    """Groups to draw: every (model, log type) group, or the overall when there is none."""
    return summary["groups"] or [summary["overall"] | {"model": None, "log_type": None}]


def _save(fig, path: Path, dpi: int = 100, **margins) -> str:
    # fixed margins: constrained or tight layout measures every tick label and costs seconds
    fig.subplots_adjust(
        **({"left": 0.08, "right": 0.98, "bottom": 0.15, "top": 0.88, "wspace": 0.3} | margins)
    )
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path.name


def _note(ax, text: str) -> None:
    """Say on the figure why a panel has nothing (or little) to show."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, wrap=True,
            color="0.3", bbox={"boxstyle": "round", "fc": "0.95", "ec": "0.8"})  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def _panels(n: int, width: float, height: float):
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def make_figures(summary: dict, plots: dict, out: Path) -> dict[str, str]:
    """Every figure from the summary and the accumulated plot data (never the rows, so a trace of
    any length draws the same way). Each copes with small or degenerate data and says so."""
    # titles at a fixed height (where matplotlib's automatic placement puts them when no x axis is
    # on top): the automatic placement lays out every tick label of the axes once more per draw
    with plt.rc_context({"axes.titley": 1.0}):
        return _make_figures(summary, plots, out)


def _make_figures(summary: dict, plots: dict, out: Path) -> dict[str, str]:
    figs = {}
    groups = _series(summary)
    t0, span = summary["start_s"], max(summary["duration_s"], 1e-9)
    hours = span > 6 * 3600
    unit, scale = ("h", 3600.0) if hours else ("min", 60.0) if span > 600 else ("s", 1.0)

    def pdata(g):
        return plots.get(_label(g)) if summary["groups"] else plots["all"]

    # request rate over time: 10-s or per-minute counts summed into bins; the last, partial bin is
    # divided by the time it covers (up to the last arrival), not by a full bin
    fig, ax = plt.subplots(figsize=(10, 3.6))
    base_s, key = (10.0, "ten_counts") if span <= 6 * 3600 else (60.0, "minute_counts")
    per = max(int(np.ceil(span / base_s / 600)), 1)
    bin_s = base_s * per
    if span < 2 * base_s:
        _note(ax, f"the trace spans {span:.0f} s: too short for a rate over time in {base_s:g}-s bins")
    else:
        for g in groups:
            m = pdata(g)[key]
            nb = int(np.ceil(span / bin_s))
            c = np.bincount(np.arange(len(m)) // per, m, minlength=nb)[:nb]
            starts = np.arange(nb) * bin_s
            covered = np.minimum(span - starts, bin_s)
            keep = covered >= 0.25 * bin_s  # a sliver of a bin says nothing about the rate
            x = np.append(starts[keep], starts[keep][-1] + covered[keep][-1]) / scale
            ax.stairs(c[keep] / covered[keep], x, lw=0.8, label=_label(g), baseline=None)
        ax.legend(fontsize=7, loc="upper right")
    ax.set_xlabel(f"time since start ({unit})")
    ax.set_ylabel(f"requests/s ({bin_s:g}-s bins)")
    ax.set_title("Request rate")
    figs["rate"] = _save(fig, out / "rate.png")

    # periodicity
    if summary["periodicity"]:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
        for g in groups:
            p = g["periodicity"]
            if not p:
                continue
            a1.plot(range(24), p["hourly"], marker="o", ms=3, label=_label(g))
            wd = [np.nan if v is None else v for v in p["weekday"]]
            a2.plot(range(7), wd, marker="o", ms=3, label=_label(g))
        a1.set_xlabel("hour of day")
        a1.set_ylabel("mean requests/s")
        a2.set_ylabel("mean requests/s")
        a2.set_xlabel(
            "day of week"
            + (" (Mon=0)" if "calendar" in summary["periodicity"]["weekday_origin"] else " (trace day 0 = 0)")
        )
        a1.legend(fontsize=7)
        a1.set_title("Hourly profile")
        a2.set_title("Weekday profile")
        figs["periodicity"] = _save(fig, out / "periodicity.png")

    # inter-arrival CCDF with the fitted models, one readable panel per group
    res = summary["timestamp_resolution_s"]
    fig, axes = _panels(len(groups), 4.6, 3.8)
    styles = (("Gamma", "-", "C0"), ("exponential", "--", "C1"), ("Weibull", ":", "C2"))
    for ax, g in zip(axes, groups, strict=True):
        ia = g["interarrival"]
        ax.set_xlabel("inter-arrival (s)")
        ax.set_ylabel("P(gap > x)")
        ax.set_title(_label(g), fontsize=9)
        if ia["gamma_shape"] is None:
            _note(ax, f"{ia['n']} gaps: too few to fit (at least 20 needed)")
            continue
        d = pdata(g)
        if res > 0:
            tv, tc = d["tick_gaps"]
            x = tv.astype(float) * res
            emp = 1 - np.cumsum(tc) / tc.sum()
            n = int(tc.sum())
        else:
            gs = d["gap_sample"]
            x = np.unique(np.quantile(gs, np.linspace(0, 0.9999, 400)))
            x = x[x > 0]
            emp = 1 - np.searchsorted(gs, x, side="right") / len(gs)
            n = len(gs)
        few = res > 0 and len(x) and x.max() < 20 * res  # gaps of a few grid steps: linear axis
        ok = emp > 0 if not few else np.ones(len(emp), bool)
        xs = x[ok] if few else np.maximum(x[ok], res or 1e-6)
        ax.step(xs, emp[ok], where="post", color="k", lw=2.2, alpha=0.35, label="empirical")
        if few:
            ax.plot(xs, emp[ok], "o", color="k", alpha=0.35, ms=5)
        for (name, ls, color), (dist, p1, p2) in zip(
            styles,
            (("gamma", ia["gamma_shape"], ia["gamma_scale"]), ("gamma", 1.0, ia["exponential_scale"]),
             ("weibull", ia["weibull_shape"], ia["weibull_scale"])),
            strict=True,
        ):  # fmt: skip
            if res > 0:
                model = 1 - fit._discrete_cdf(dist, np.round(xs / res), p1, p2 / res)
            else:
                model = 1 - fit._DISTS[dist][2](xs, p1, p2)
            ax.plot(xs, model, ls=ls, color=color, lw=1.3, label=name, marker="x" if few else None, ms=4)
        ax.set_yscale("log")
        if few:
            ax.set_xlabel(f"inter-arrival (s; gaps are whole {res:g}-s grid steps)")
            ax.set_ylim(max(0.5 / max(n, 1), 1e-6), 1.5)
        else:
            ax.set_xscale("log")
            ax.set_ylim(0.5 / max(n, 1), 1.5)
        flag = "" if ia.get("identifiable", True) else ", not identifiable"
        ax.set_title(f"{_label(g)}\nGamma shape {ia['gamma_shape']:.2f}{flag}", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Inter-arrival gaps and fits ({'interval-censored at the ' + format(res, 'g') + '-s grid' if res else 'continuous'})",
        fontsize=10,
    )
    rows = (len(groups) + 2) // 3
    figs["interarrival"] = _save(
        fig, out / "interarrival.png", left=0.1 if len(groups) > 1 else 0.17, bottom=0.14 / rows,
        top=1 - 0.2 / rows, hspace=0.55, wspace=0.35,
    )  # fmt: skip

    # windowed Gamma shape with its 95% interval
    fig, ax = plt.subplots(figsize=(10, 3.6))
    lo_all, hi_all, drawn = [], [], 0
    for g in groups:
        w = g["windows"]
        if not w:
            continue
        k = np.array([np.nan if v is None else v for v in w["gamma_shape"]])
        if not np.isfinite(k).any():
            continue
        lo = np.array([np.nan if v is None else v for v in w.get("gamma_shape_lo", w["gamma_shape"])])
        hi = np.array([np.nan if v is None else v for v in w.get("gamma_shape_hi", w["gamma_shape"])])
        starts = np.array(w["start_s"]) - t0
        x = (
            np.minimum(starts + w["window_s"] / 2, (starts + np.minimum(starts + w["window_s"], span)) / 2)
            / scale
        )
        if len(k) <= 30:  # few windows: each an estimate with its interval
            ax.errorbar(x, k, yerr=[k - lo, hi - k], fmt="o", ms=4, capsize=3, label=_label(g))
        else:
            line = ax.plot(x, k, lw=0.8, marker=".", ms=3, label=_label(g))
            ax.fill_between(x, lo, hi, color=line[0].get_color(), alpha=0.15, lw=0)
        lo_all.append(np.nanmin(k))
        hi_all.append(np.nanmax(k))
        drawn += 1
    if drawn:
        if max(hi_all) / max(min(lo_all), 1e-9) > 4:  # log only where the shapes span a wide range
            ax.set_yscale("log")
        ax.legend(fontsize=7, loc="upper right")
    else:
        _note(ax, f"no {summary['window_s']:g}-s window has the 20 gaps a refit needs")
    ax.set_xlabel(f"window centre, time since start ({unit})")
    ax.set_ylabel("Gamma shape (95% interval)")
    ax.set_title(
        f"Gamma shape refitted every {summary['window_s']:g} s"
        + (" (the trace is shorter than one window)" if span < summary["window_s"] else "")
    )
    figs["window_shapes"] = _save(fig, out / "window_shapes.png")

    # token CCDFs
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, key, what in ((a1, "request_hist", "Request"), (a2, "response_hist", "Response")):
        drawn = 0
        for g in groups:
            v, c = pdata(g)[key]
            pos = v > 0
            v, c = v[pos], c[pos]
            if len(v) < 2:
                continue
            ccdf = 1 - (np.cumsum(c) - c) / c.sum()  # P(X >= v)
            ax.loglog(v, ccdf, lw=1, label=_label(g))
            drawn += 1
        if not drawn:
            _note(ax, "fewer than two distinct lengths: no distribution to draw")
        ax.set_xlabel("tokens")
        ax.set_ylabel("P(length >= x)")
        ax.set_title(f"{what} tokens (CCDF{', successful requests' if what == 'Response' else ''})")
    if a1.get_legend_handles_labels()[0]:
        a1.legend(fontsize=7)
    figs["tokens"] = _save(fig, out / "tokens.png")

    # response vs request
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    drawn = 0
    for g in groups:
        b = g["correlation"]["binned"]
        if not b or not b["median"]:
            continue
        mid = np.sqrt(np.array(b["request_lo"]) * np.array(b["request_hi"]))
        line = ax.plot(mid, b["median"], marker="o", ms=3, label=_label(g))
        ax.fill_between(mid, b["p5"], b["p95"], alpha=0.15, color=line[0].get_color())
        drawn += 1
    if drawn:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    else:
        _note(ax, "too few successful requests for binned medians (20 per bin needed)")
    ax.set_xlabel("request tokens")
    ax.set_ylabel("response tokens (median, 5-95% band)")
    ax.set_title("Response length vs request length")
    figs["request_response"] = _save(fig, out / "request_response.png", left=0.13, bottom=0.13, top=0.92)

    # failures
    if summary["failure_rate"] > 0:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.4))
        w = summary["overall"]["windows"]
        fr = np.array([np.nan if v is None else v for v in w["failure_rate"]])
        a1.plot((np.array(w["start_s"]) - t0) / scale, 100 * fr, lw=0.8, marker="." if len(fr) < 50 else None)
        a1.set_xlabel(f"time since start ({unit})")
        a1.set_ylabel("failed (%)")
        a1.set_title(f"Failure rate per {summary['window_s']:g}-s window")
        fl = summary["overall"]["failures_vs_load"]
        if fl:
            a2.plot(fl["relative_load"], 100 * np.array(fl["relative_failure_rate"]), marker="o")
            a2.set_xscale("log")
        else:
            _note(a2, "too few requests (100 needed) to relate failures to load")
        a2.set_xlabel("10-s load / its window's mean (deciles)")
        a2.set_ylabel("failed (%)")
        a2.set_title("Failures vs relative load")
        figs["failures"] = _save(fig, out / "failures.png")

    # sessions
    if summary["sessions"]:
        s = summary["sessions"]
        fig, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.bar(range(1, len(s["turns_histogram"]) + 1), s["turns_histogram"])
        ax.set_xlabel("turns per session (20 = 20 or more)")
        ax.set_ylabel("sessions")
        ax.set_title(f"{s['count']} sessions, {100 * s['single_turn_fraction']:.0f}% single-turn")
        figs["sessions"] = _save(fig, out / "sessions.png", left=0.14, bottom=0.15)
    return figs


def _f(v, fmt=".3g") -> str:
    return "–" if v is None else format(v, fmt)


def _res_text(s: dict) -> str:
    r = s["timestamp_resolution_s"]
    how = s.get("resolution_found_by") or ""
    return (f"{r:g} s" if r else "continuous (sub-millisecond)") + (f" ({how})" if how else "")


def _shape(ia: dict) -> str:
    if ia["gamma_shape"] is None:
        return "–"
    if not ia.get("identifiable", True):
        return f"({_f(ia['gamma_shape'])}, not identifiable)"
    ci = ia.get("gamma_shape_ci95")
    return _f(ia["gamma_shape"]) + (f" [{_f(ci[0])}, {_f(ci[1])}]" if ci else "")


def _identifiability(s: dict, rows: list[dict]) -> list[str]:
    """A section for groups whose shape the timestamp grid does not identify."""
    bad = [
        g
        for g in rows
        if g["interarrival"]["gamma_shape"] is not None and not g["interarrival"].get("identifiable", True)
    ]
    if not bad:
        return []
    r = s["timestamp_resolution_s"]
    L = [
        "",
        f"**The Gamma shape is not identifiable at this trace's {r:g}-s timestamp grid** for "
        + ", ".join(_label(g) for g in bad)
        + ": the mean gap is a small fraction of a grid step (or the 95% interval spans more than a factor 2), "
        "so the order and spacing of arrivals inside a step are lost and the rounded gaps cannot tell "
        "bursty from regular traffic. The shapes below are shown in parentheses and should not be used. "
        "What the data still tell: the arrivals per grid step and their dispersion (an index of dispersion "
        "above 1 means counts vary more than Poisson; its inverse bounds the shape from below when the rate "
        "is steady), the rate over time, and the burst episodes.",
        "",
        "| group | grid step (s) | mean gap (steps) | occupied steps | arrivals per occupied step (mean / p50 / p99 / max) | dispersion index | 1 / dispersion |",
        "|---|---|---|---|---|---|---|",
    ]
    for g in bad:
        ia = g["interarrival"]
        gr = ia.get("grid") or {}
        a = gr.get("arrivals_per_occupied_step") or {}
        L.append(
            f"| {_label(g)} | {r:g} | {_f(ia.get('mean_ticks'))} | {100 * gr.get('occupied_fraction', 0):.0f}% "
            f"| {_f(a.get('mean'))} / {_f(a.get('p50'))} / {_f(a.get('p99'))} / {_f(a.get('max'))} "
            f"| {_f(gr.get('dispersion_index'))} | {_f(gr.get('shape_from_dispersion'))} |"
        )
    return L


def verdict(summary: dict) -> str:
    """One sentence a reader takes away: size, rate, burstiness (or why it cannot be told), failures."""
    s = summary
    ia = s["overall"]["interarrival"]
    res = s["timestamp_resolution_s"]
    if ia["gamma_shape"] is None:
        shape = "too few gaps to fit a Gamma shape"
    elif not ia.get("identifiable", True):
        shape = (
            f"Gamma shape not identifiable at the {res:g}-s timestamp grid "
            f"({ia['mean_ticks']:.2f} grid steps per gap; see the dispersion of counts per step below)"
        )
    else:
        lo, hi = ia["gamma_shape_ci95"]
        kind = (
            "burstier than Poisson" if hi < 1 else ("calmer than Poisson" if lo > 1 else "close to Poisson")
        )
        shape = (
            f"Gamma shape {ia['gamma_shape']:.3f} [{lo:.3f}, {hi:.3f}] ({kind}; {s['interarrival_method']})"
        )
    return (
        f"{s['rows']:,} rows over {s['duration_s'] / 3600:.2f} h, {s['mean_rps']:.3f} req/s, {shape}, "
        f"failures {100 * s['failure_rate']:.2f}%, {s['bad_rows']} bad rows"
    )


def write_report(summary: dict, figs: dict[str, str], path: Path) -> None:
    """``report.md`` (the verdict first, then the tables and figures) and its self-contained ``report.html``."""
    s = summary
    L = [
        "# Trace characterization",
        "",
        f"**{verdict(s)}.**",
        "",
        f"- Source: `{s['source']}` (format {s['format']})",
        f"- Rows: {s['rows']:,} ({s['bad_rows']} bad rows skipped)"
        + (f"; first bad lines: {', '.join(map(str, s['bad_lines']))}" if s["bad_lines"] else ""),
        f"- Span: {s['duration_s']:.0f} s ({s['duration_s'] / 3600:.2f} h)"
        + (f" from {s['origin']}" if s["origin"] else ""),
        f"- Mean rate: {s['mean_rps']:.3f} req/s; failure rate {100 * s['failure_rate']:.2f}%",
        f"- Timestamp grid: {_res_text(s)}; inter-arrival fits by `{s['interarrival_method']}`"
        + (
            " (maximum likelihood on the interval probabilities of gaps rounded to the grid, "
            "P(D=d) = G(d+1) - 2G(d) + G(d-1) with G the integrated CDF)"
            if s["timestamp_resolution_s"]
            else " (continuous maximum likelihood)"
        ),
        f"- Windowed refits every {s['window_s']:g} s; bursts: {s['burst_method']}",
        "",
        "## Groups",
    ]
    rows = [s["overall"] | {"model": "all", "log_type": None}] + s["groups"]
    L += _identifiability(s, rows)
    L += [
        "",
        "| group | rows | req/s | failed | Gamma shape | window shape (median) | CV | KS Gamma | KS exp | KS Weibull "
        "| req p50 | req p99 | resp p50 | resp p99 | Pearson | Spearman | bursts |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in rows:
        ia, rq, rs, c = g["interarrival"], g["request_tokens"], g["response_tokens"], g["correlation"]
        L.append(
            f"| {_label(g)} | {g['rows']:,} | {g['mean_rps']:.3g} | {100 * g['failure_rate']:.2f}% "
            f"| {_shape(ia)} | {_f(ia['window_gamma_shape_median'])} | {_f(ia['cv'])} "
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
    bursts = s["overall"]["bursts"]
    L += ["", "## Burst episodes (overall, largest peaks)", ""]
    if bursts:
        bs = s["overall"]["burst_stats"]
        L += [
            f"{bs['count']} episodes hold {100 * bs['fraction_of_requests']:.1f}% of requests"
            + (f"; the {min(len(bursts), 20)} largest peaks:" if bs["count"] > 1 else ":"),
            "",
            "| start (s) | duration (s) | peak req/s | requests |",
            "|---|---|---|---|",
        ]
        for b in bursts[:20]:
            L.append(
                f"| {b['start_s']:.0f} | {b['duration_s']:.0f} | {b['peak_rps']:.0f} | {b['requests']} |"
            )
    else:
        L.append(
            "No burst episode was found: no second reached the threshold above its window's baseline "
            f"({s['burst_method']})."
        )
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
    write_html(path, f"Trace characterization: {Path(str(s['source'])).name}", verdict=verdict(s))
