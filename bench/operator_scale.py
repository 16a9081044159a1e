"""The operator at 500 ServingPools: CPU, memory, tick latency, API requests and bytes written per tick.

    .venv/bin/python bench/operator_scale.py [--pools 500] [--interval 15] [--measure 120]

On the end-to-end environment (the toolchain of scripts/build-toolchain.sh): a real control plane with a kwok
node holding the pools' targets (one Deployment of one replica per pool), the chart installed (CRD, RBAC), the
real Prometheus scraping one exporter of vLLM metrics for every pool (each pool at its own request rate, which
moves every minute), and one operator replica as the chart's ServiceAccount through a logging proxy in front of
the API server. After every pool has ticked once (its state ConfigMap created), the operator is measured over
``--measure`` seconds: CPU (process time / wall time, in cores), peak RSS, p99 tick latency (from its
``burstpilot_operator_tick_seconds`` histogram), API requests per second, and request bytes written per tick
(status patches, state ConfigMap deltas, events). Targets (issue 14): within one core, p99 tick <= 200 ms, state
written <= 4 KiB per pool per tick on average. Figures go to bench/results/operator.json with the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import pytest  # noqa: E402  (the harness reports failures through pytest.fail)
from drills import ApiProxy, DrillOperator, VllmExporter, metric_value  # noqa: E402
from e2e_harness import RELEASE, RELEASE_NS, Prometheus, wait_for  # noqa: E402

from burstpilot.operator.cluster.controlplane import ControlPlane  # noqa: E402
from burstpilot.operator.cluster.procs import Procs  # noqa: E402
from burstpilot.operator.cluster.prometheus import SCRAPE_INTERVAL_S  # noqa: E402
from burstpilot.operator.cluster.toolchain import load_toolchain  # noqa: E402

OUT = REPO / "bench" / "results" / "operator.json"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def histogram(text: str, name: str) -> list[tuple[float, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            le = line.split('le="')[1].split('"')[0]
            out.append((math.inf if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
    return sorted(out)


def quantile(before: list, after: list, q: float) -> float:
    """histogram_quantile over the window's bucket increments (linear within a bucket)."""
    counts = [(le, a - b) for (le, a), (_, b) in zip(after, before, strict=True)]
    total = counts[-1][1]
    if total <= 0:
        return math.nan
    rank, prev_le, prev_n = q * total, 0.0, 0.0
    for le, n in counts:
        if n >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)
        prev_le, prev_n = le, n
    return counts[-1][0]


def objects(n: int, prom_url: str, interval: float) -> list[dict]:
    items = []
    for i in range(n):
        name, ns = f"pool-{i:03d}", "bench"
        labels = {"app": name}
        items.append(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "containers": [
                                {"name": "vllm", "image": "vllm", "resources": {"requests": {"cpu": "10m"}}}
                            ],
                            "nodeSelector": {"bench": "yes"},
                            "terminationGracePeriodSeconds": 0,
                        },
                    },
                },
            }
        )
        items.append(
            {
                "apiVersion": "burstpilot.io/v1alpha1",
                "kind": "ServingPool",
                "metadata": {"name": name, "namespace": ns},
                "spec": {
                    "targetRef": {"kind": "Deployment", "name": name},
                    "minReplicas": 1,
                    "maxReplicas": 8,
                    "profile": {"name": "h100-llama3-8b"},
                    "coldStartSeconds": 120,
                    "metrics": {
                        "prometheusUrl": prom_url,
                        "selector": {"servingpool": name, "namespace": ns},
                        "scrapeIntervalSeconds": SCRAPE_INTERVAL_S,
                    },
                    "forecasting": {"model": "burst", "stepSeconds": interval, "quantile": 0.95},
                    "scaling": {"intervalSeconds": interval, "scaleDownStabilizationSeconds": 300},
                },
            }
        )
    return items


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the control plane on the way out
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pools", type=int, default=500)
    ap.add_argument("--interval", type=float, default=15.0)
    ap.add_argument("--measure", type=float, default=120.0, help="seconds measured after the warm-up")
    args = ap.parse_args()
    tools = load_toolchain(keda=False)
    work = Path(tempfile.mkdtemp(prefix="burstpilot-operator-scale-"))
    (work / "logs").mkdir()
    procs = Procs(work / "logs")
    t_start = time.monotonic()

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.0f}s] {msg}", flush=True)

    try:
        cluster = ControlPlane(tools, work, procs)
        cluster.start()
        say("control plane up")
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": "bench-node",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {"type": "kwok", "bench": "yes"},
            },
            "status": {
                "capacity": {"cpu": "1000", "memory": "4Ti", "pods": "2000"},
                "allocatable": {"cpu": "1000", "memory": "4Ti", "pods": "2000"},
            },
        }
        cluster.apply(node)
        cluster.helm(
            "install",
            RELEASE,
            str(REPO / "charts" / "burstpilot"),
            "--namespace",
            RELEASE_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "180s",
        )
        prom = Prometheus(tools["prometheus"], work, procs)
        cluster.namespace("bench")
        exporter = VllmExporter(prom)
        rng = random.Random(0)
        base = {f"pool-{i:03d}": rng.uniform(0.5, 40.0) for i in range(args.pools)}
        for name, rate in base.items():
            exporter.set_rate("bench", name, rate)
        with exporter, ApiProxy(cluster) as proxy:
            stop = threading.Event()

            def wander() -> None:  # each pool's rate moves every minute, so decisions change
                while not stop.wait(60):
                    for name, rate in base.items():
                        exporter.set_rate("bench", name, rate * rng.uniform(0.5, 1.8))

            threading.Thread(target=wander, daemon=True).start()
            items = objects(args.pools, prom.url, args.interval)
            for k in range(0, len(items), 200):
                cluster.kubectl(
                    "apply",
                    "-f",
                    "-",
                    input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items[k : k + 200]}),
                )
            say(f"{args.pools} Deployments and ServingPools created")
            op = DrillOperator(cluster, procs, work, "operator", proxy, "--all-namespaces")
            op.start()

            def ticked() -> int:
                return sum(
                    1
                    for c in proxy.calls
                    if c.method == "POST" and "/configmaps" in c.path and c.status == 201
                )

            wait_for("every pool's first tick", lambda: ticked() >= args.pools, timeout=600, interval=2)
            say("every pool has ticked once; measuring")
            time.sleep(args.interval)  # past the first ticks' full writes
            m0, cpu0, t0 = op.metrics(), cpu_seconds(op.proc.pid), time.monotonic()
            calls0 = len(proxy.calls)
            peak = 0.0
            while time.monotonic() - t0 < args.measure:
                time.sleep(2)
                peak = max(peak, rss_mib(op.proc.pid))
            m1, cpu1, t1 = op.metrics(), cpu_seconds(op.proc.pid), time.monotonic()
            window = proxy.calls[calls0:]
            stop.set()
            wall = t1 - t0
            ticks = sum(
                (
                    metric_value(
                        m1, "burstpilot_operator_ticks_total", namespace="bench", pool=f"pool-{i:03d}"
                    )
                    or 0
                )
                - (
                    metric_value(
                        m0, "burstpilot_operator_ticks_total", namespace="bench", pool=f"pool-{i:03d}"
                    )
                    or 0
                )
                for i in range(args.pools)
            )

            def bytes_of(pattern: str) -> int:
                return sum(
                    c.sent_bytes for c in window if c.method in ("PATCH", "POST", "PUT") and pattern in c.path
                )

            written = sum(c.sent_bytes for c in window if c.method in ("PATCH", "POST", "PUT"))
            tick_q = quantile(
                histogram(m0, "burstpilot_operator_tick_seconds"),
                histogram(m1, "burstpilot_operator_tick_seconds"),
                0.99,
            )
            result = {
                "pools": args.pools,
                "interval_s": args.interval,
                "measured_s": round(wall, 1),
                "ticks": int(ticks),
                "cpu_cores": round((cpu1 - cpu0) / wall, 3),
                "rss_peak_mib": round(peak, 1),
                "tick_p99_ms": round(1000 * tick_q, 1),
                "api_requests_per_s": round(len(window) / wall, 2),
                "api_requests_by_verb": {
                    v: sum(1 for c in window if c.method == v) for v in ("GET", "POST", "PATCH", "PUT")
                },
                "bytes_written_per_tick": round(written / max(ticks, 1), 1),
                "state_bytes_per_pool_tick": round(bytes_of("/configmaps") / max(ticks, 1), 1),
                "status_bytes_per_pool_tick": round(bytes_of("/status") / max(ticks, 1), 1),
                "event_bytes_per_pool_tick": round(bytes_of("/events") / max(ticks, 1), 1),
                "prometheus_queries_per_s": round(
                    (
                        (metric_value(m1, "burstpilot_operator_prometheus_queries_total") or 0)
                        - (metric_value(m0, "burstpilot_operator_prometheus_queries_total") or 0)
                    )
                    / wall,
                    2,
                ),
                "targets": {"cpu_cores": 1.0, "tick_p99_ms": 200, "state_bytes_per_pool_tick": 4096},
                "loadavg": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
                "note": "the control plane, Prometheus, the exporter and the proxy share the machine with the operator",
            }
        OUT.parent.mkdir(exist_ok=True)
        previous = json.loads(OUT.read_text()) if OUT.exists() else {}
        previous["operator_scale"] = result
        OUT.write_text(json.dumps(previous, indent=2) + "\n")
        print(json.dumps(result, indent=2))
        ok = (
            result["cpu_cores"] <= 1.0
            and result["tick_p99_ms"] <= 200
            and result["state_bytes_per_pool_tick"] <= 4096
        )
        say(f"targets {'met' if ok else 'NOT met'}; figures in {OUT}")
        return 0
    except pytest.fail.Exception as exc:
        print(f"operator_scale: {exc}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
