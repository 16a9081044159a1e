"""What a replay came to, for a reader: the verdict, the warnings, and the report (markdown and HTML).

``verdict`` is the one sentence the command prints last and the report puts first ("attainment 99.3 % against
the goal 99 %, 0 errors"); ``warnings`` says when the run looks wrong (failures, attainment under the goal, a
load generator that fell behind), each with what it usually means. ``write_report`` writes ``report.md`` and the
self-contained ``report.html`` beside it (``burstpilot.htmlreport``: figures embedded, the verdict first).
"""

from __future__ import annotations

from pathlib import Path

from burstpilot.htmlreport import write_html

REPORT_MD = "report.md"
LAG_WARN_S = 0.05  # a dispatch lag p99 above this means the client, not the server, set part of the latency

# error kind -> what it usually means
HINTS = {
    "http_5xx": "the target answered 5xx: overloaded, or not ready yet (is --wait-ready off?)",
    "http_4xx": "the target refused requests: check --model, --api, --api-key, --extra-body, and requests longer "
    "than the model's context",
    "connect": "the target refused connections or could not be reached",
    "connect_timeout": "no TCP connection in time: the target or the network is saturated",
    "first_token_timeout": "no first token within --first-token-timeout: the target queues too long",
    "total_timeout": "streams did not end within --timeout",
    "reset": "the target closed or reset connections before answering",
    "truncated": "streams ended before [DONE]: the target or a proxy cut them",
    "malformed_sse": "the answers are not server-sent events: is the URL an OpenAI-compatible server?",
    "malformed_response": "the answers are not OpenAI-shaped (choices, usage): see error_detail in the records",
    "empty_response": "answers carried no text",
    "cancelled": "requests were still in flight when the interrupted run's grace period ended",
    "client": "a client-side failure: see error_detail in the records",
}


def _pct(x: float) -> str:
    return f"{x * 100:.1f} %" if x < 0.9995 or x == 1 else f"{x * 100:.2f} %"


def _errors_text(req: dict) -> str:
    n = req["failed"]
    if not n:
        return "0 errors"
    kinds = ", ".join(f"{k} {v:,}" for k, v in sorted(req["errors"].items(), key=lambda kv: -kv[1]))
    return f"{n:,} error{'s' if n != 1 else ''} ({kinds})"


def verdict(summary: dict) -> str:
    """One sentence: attainment against its goal and the errors, or what completed without an SLO."""
    req = summary["requests"]
    slo = summary.get("slo")
    if slo and slo.get("attainment") is not None:
        att, goal = slo["attainment"], slo["attainment_goal"]
        text = (
            f"attainment {_pct(att)} against the goal {goal * 100:g} %, {_errors_text(req)}"
            f" — {'met' if att >= goal else 'missed'}"
        )
    else:
        text = f"{req['completed']:,} of {req['recorded']:,} requests completed, {_errors_text(req)}"
    if summary.get("interrupted"):
        text = f"interrupted after {req['recorded']:,} of {req['scheduled']:,} requests: " + text
    return text


def warnings(summary: dict) -> list[str]:
    """What looks wrong in a run, most severe first, each with its usual cause."""
    req = summary["requests"]
    out = []
    if req["recorded"] and not req["completed"]:
        out.append("no request succeeded")
    if req["failed"]:
        share = req["failed"] / max(req["recorded"], 1)
        top = max(req["errors"].items(), key=lambda kv: kv[1])[0] if req["errors"] else ""
        example = (summary.get("error_examples") or {}).get(top)
        out.append(
            f"{req['failed']:,} of {req['recorded']:,} requests failed ({share:.1%}); most are {top}: "
            + HINTS.get(top, "see error_detail in the records")
            + (f" (e.g. {example[:140]})" if example else "")
        )
    slo = summary.get("slo")
    if slo and slo.get("attainment") is not None and slo["attainment"] < slo["attainment_goal"]:
        out.append(
            f"SLO attainment {slo['attainment']:.3f} is under the goal {slo['attainment_goal']:g}"
            f" ({slo['met']:,} of {req['recorded']:,} requests met {', '.join(slo['objectives_s'])})"
        )
    lag = summary.get("dispatch_lag_s", {}).get("p99")
    if lag is not None and lag > LAG_WARN_S:
        out.append(
            f"the load generator sent late (dispatch lag p99 {lag * 1000:.0f} ms): the latencies include client "
            "delay; use --workers, or a machine with spare cores"
        )
    return out


def _ms(v) -> str:
    return "–" if v is None else f"{v * 1000:,.1f}"


def _markdown(summary: dict, meta: dict, files: list[str], plot: str | None, title: str) -> str:
    req = summary["requests"]
    lines = [f"# {title}", ""]
    warn = warnings(summary)
    if warn:
        lines += ["## Warnings", "", *(f"- {w}" for w in warn), ""]
    targets = ", ".join(f"`{t}`" for t in meta.get("targets", []))
    sched = meta.get("schedule", {})
    lines += [
        "## Run",
        "",
        "| what | value |",
        "|---|---|",
        f"| targets | {targets} |",
        f"| model | `{meta.get('model', '')}` |",
        f"| schedule | {sched.get('description', '')} |",
        f"| shard | {summary.get('shard', '0/1')} |",
        f"| requests | {req['scheduled']:,} scheduled, {req['recorded']:,} sent, {req['completed']:,} completed |",
        f"| duration | {summary['duration_s']:,.1f} s |",
        f"| request rate | {summary['request_rate']:,.2f} req/s completed"
        + (f", {summary['send_rate']:,.2f} req/s sent |" if summary.get("send_rate") else " |"),
        f"| output tokens | {summary['output_tokens']:,} ({summary['output_token_throughput']:,.0f} tok/s) |",
    ]
    if "slo" in summary:
        s = summary["slo"]
        obj = ", ".join(f"{k.upper()} ≤ {v * 1000:g} ms" for k, v in s["objectives_s"].items())
        att = "–" if s["attainment"] is None else f"{s['attainment']:.4f}"
        lines += [
            f"| SLO | {obj}, for {s['attainment_goal']:g} of requests |",
            f"| attainment | {att} ({s['met']:,} requests met it) |",
            f"| goodput | {s['goodput']:,.2f} req/s |",
        ]
    lines += [
        "",
        "## Latency (ms)",
        "",
        "| metric | count | mean | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {
        "ttft_s": "TTFT",
        "tpot_s": "TPOT",
        "itl_s": "ITL",
        "e2e_s": "E2E",
        "dispatch_lag_s": "dispatch lag",
    }
    for key, name in names.items():
        st = summary[key]
        lines.append(
            f"| {name} | {st['count']:,} | "
            + " | ".join(_ms(st[q]) for q in ("mean", "p50", "p90", "p99", "max"))
            + " |"
        )
    lines += ["", "TTFT, TPOT, ITL and E2E are over the successful requests (ITL over every gap); dispatch lag"
              " (send time minus scheduled time) over every sent request.", ""]  # fmt: skip
    if req["errors"]:
        lines += ["## Errors", "", "| kind | requests | usual cause | first detail |", "|---|---|---|---|"]
        examples = summary.get("error_examples") or {}
        for k, v in sorted(req["errors"].items(), key=lambda kv: -kv[1]):
            detail = examples.get(k, "").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| `{k}` | {v:,} | {HINTS.get(k, '')} | {detail} |")
        lines.append("")
    sm = summary.get("server_metrics")
    if sm:
        lines += ["## The target's /metrics during the run", ""]
        if sm["series"]:
            lines += ["| series | mean | p50 | p99 | max |", "|---|---|---|---|---|"]
            for name, st in sm["series"].items():
                scale = 100 if name.endswith("usage_perc") else 1
                cells = " | ".join(f"{st[q] * scale:,.1f}" for q in ("mean", "p50", "p99", "max"))
                unit = " (%)" if scale == 100 else ""
                lines.append(f"| {st['what']}{unit}, `{name}` ({st['combined']} over URLs) | {cells} |")
            lines.append("")
        lines.append(f"{sm['rounds']:,} scrapes of {len(sm['urls'])} URL(s).")
        for url, why in sm.get("not_captured", {}).items():
            lines.append(f"Not captured: `{url}` ({why}).")
        lines.append("")
    if plot:
        lines += ["## Latency over time", "", f"![latency over time]({plot})", ""]
    lines += ["## Files", "", *(f"- `{f}`" for f in files), ""]
    return "\n".join(lines)


def _title(meta: dict, out_dir: Path) -> str:
    return f"burstpilot replay: {meta.get('workload') or Path(out_dir).resolve().name}"


def write_report(out_dir: Path, summary: dict, meta: dict, files: list[str], plot: str | None) -> Path:
    """Writes report.md and report.html into ``out_dir``; returns the HTML's path."""
    md = Path(out_dir) / REPORT_MD
    md.write_text(_markdown(summary, meta, files, plot, _title(meta, out_dir)), encoding="utf-8")
    return write_html(md, title=_title(meta, out_dir), verdict=verdict(summary))
