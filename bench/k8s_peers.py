"""burstpilot side by side with the real KEDA and the real HPA, on the local cluster (issue 13, item 2).

One controller at a time on the same pool and the same workloads: kwok GPU nodes, a Deployment whose pods are
Ready only once their simulated replica has loaded its model (about a minute), one `burstpilot sim serve` per
Running pod behind a Service front, the real Prometheus scraping them every second, the load generator
replaying. Each arm runs both workloads at once on two pools (two namespaces, each on its own GPU nodes):

- burstgpt: about 13 minutes, BurstGPT-shaped (the preset's Gamma inter-arrivals and lengths under a designed
  rate: two bursts shorter than the cold start, a slow rise and fall);
- azure: a slice of the Azure LLM inference trace 2023 (conversation; CC-BY 4.0, Patel et al., "Splitwise",
  ISCA 2024), replay-scaled to the same span and a rate the pool serves.

Arms: burstpilot's operator with a ServingPool; KEDA with a Prometheus trigger on the request rate per replica;
the HPA (through KEDA) on concurrency (running + waiting per replica) with the HPA's default behaviour;
burstpilot in Advisory mode feeding KEDA. Each arm's pools are made fresh (new namespaces, one Ready replica)
and removed after it. Writes bench/results/k8s_peers.json (the table, the configuration, load averages),
bench/results/k8s_peers.png (replicas over time against the arrival rate) and
bench/results/k8s_peers_series.json (beside --out; the scraped metrics, pod counts and HPA status of the KEDA and HPA arms,
which bench/k8s_peers_check.py replays through the simulator's baselines). Raw records go to
reports/k8s-peers/.

    .venv/bin/python bench/k8s_peers.py [--minutes 13] [--arms burstpilot,keda,hpa,advisory] [--keep]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from prometheus_api_client import PrometheusConnect

from burstpilot.errors import BurstpilotError
from burstpilot.loadtest.records import read_records
from burstpilot.operator.cluster import peers
from burstpilot.operator.cluster.local import LocalCluster
from burstpilot.operator.cluster.procs import wait_for
from burstpilot.operator.cluster.toolchain import cache_dir
from burstpilot.traces import write_burstgpt_csv

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
BIN = Path(sys.executable).parent
AZURE = Path(os.environ.get("BURSTPILOT_SHARED", REPO.parent / "shared")) / "data" / "azure-llm-2023"
AZURE_CSV = AZURE / "AzureLLMInferenceTrace_conv.csv"
POOL = "llm"  # the Deployment, ServingPool and ScaledObject of every arm
NODES_PER_TRACE, GPUS_PER_NODE = 5, 2  # 10 GPUs per workload: maxReplicas 8, never short of GPUs
POLL_S = 1.0
SERIES_ARMS = ("keda", "hpa")
# A request that has not finished after this long cannot have met the SLO (3 s to the first token, then at most
# 1023 more tokens at 100 ms): the replay gives up on it, which bounds how long an arm's last requests take.
REQUEST_TIMEOUT_S = 106.0

# The workloads, in requests/s. burstgpt: baseline 2/s (2 replicas at the threshold), bursts at 8/s (7
# replicas), a rise to 7/s; azure: 3.5/s on average (3 replicas), its own ups and downs.
BURSTGPT = {"base": 2.0, "burst": 8.0, "peak": 7.0, "seed": 1}
AZURE_RPS, AZURE_OFFSET_S = 3.5, 1980.0  # from 33 min into the hour: a high stretch and its drop at 37 min


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Poller(threading.Thread):
    """Reads, every POLL_S, each pool's Deployment (spec.replicas, Ready), its pods' states (from the replica
    keeper's lifetimes), the HPA's status and the ServingPool's status. Rows carry Unix time ``wall``."""

    def __init__(self, lc: LocalCluster, namespaces: list[str]) -> None:
        super().__init__(daemon=True)
        api = k8s_config.new_client_from_config(config_file=str(lc.plane.kubeconfig))
        self.apps, self.hpa = k8s.AppsV1Api(api), k8s.AutoscalingV2Api(api)
        self.custom = k8s.CustomObjectsApi(api)
        self.lc, self.namespaces = lc, namespaces
        self.rows: dict[str, list[dict]] = {ns: [] for ns in namespaces}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t = time.time()
            for ns in self.namespaces:
                try:
                    self.rows[ns].append(self.poll(ns, t))
                except Exception as exc:  # an API hiccup: skip the row, keep polling
                    log(f"  poll {ns}: {type(exc).__name__}: {exc}")
            self.stop.wait(max(0.05, POLL_S - (time.time() - t)))

    def poll(self, ns: str, wall: float) -> dict:
        d = self.apps.read_namespaced_deployment(POOL, ns)
        row = {
            "wall": round(wall, 3),
            "spec": d.spec.replicas,
            "pods": d.status.replicas
            or 0,  # the scale subresource's status.replicas (what the HPA divides by)
            "ready": d.status.ready_replicas or 0,
        }
        pods = self.lc.pod_lifetimes(ns, POOL)
        alive = [p for p in pods if not p.get("deleted")]
        row["starting"] = sum(1 for p in alive if p.get("node") and not p.get("ready"))
        row["pending"] = sum(1 for p in alive if not p.get("node"))
        try:
            h = self.hpa.read_namespaced_horizontal_pod_autoscaler(f"keda-hpa-{POOL}", ns).status
            metric = None
            for m in h.current_metrics or []:
                if m.external is not None and m.external.current is not None:
                    metric = _quantity(m.external.current.average_value)
            row["hpa"] = {
                "desired": h.desired_replicas,
                "current": h.current_replicas,
                "metric": metric,
                "last_scale": h.last_scale_time.timestamp() if h.last_scale_time else None,
            }
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
        try:
            sp = self.custom.get_namespaced_custom_object(
                "burstpilot.io", "v1alpha1", ns, "servingpools", POOL
            )
            st = sp.get("status") or {}
            row["pool"] = {
                "desired": st.get("desiredReplicas"),
                "forecast": (st.get("forecast") or {}).get("rate"),
                "reason": (st.get("lastDecision") or {}).get("reason"),
            }
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
        return row


def _quantity(q: str | None) -> float | None:
    """A Kubernetes quantity as the HPA reports a metric ("1500m", "2", "1.2k")."""
    if q is None:
        return None
    q = str(q)
    for suffix, f in (("m", 1e-3), ("k", 1e3), ("M", 1e6)):
        if q.endswith(suffix):
            return float(q[: -len(suffix)]) * f
    return float(q)


# --------------------------------------------------------------------------- one arm


class Workload:
    def __init__(
        self, key: str, trace, csv: Path, sizing: peers.Sizing, duration_s: float, phases=None
    ) -> None:
        self.key, self.trace, self.csv, self.sizing, self.phases = key, trace, csv, sizing, phases
        self.duration_s = duration_s
        # sized for the opening baseline: a short run (--minutes under 8) starts its first burst within a minute
        self.initial = peers.initial_replicas(trace, sizing, min(60.0, phases[0].seconds) if phases else 60.0)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/v1/models", timeout=3) as resp:
            return resp.status == 200
    except OSError:
        return False


class ArmRun:
    """One arm on fresh pools: one namespace per workload (``ARM-WORKLOAD``), on node set ``nodes`` (arms
    alternate between two, so the next arm's pools can start while this one's last requests finish)."""

    def __init__(
        self, lc: LocalCluster, arm: str, workloads: list[Workload], profile: Path, out: Path, nodes: int
    ):
        self.lc, self.arm, self.workloads, self.profile, self.out, self.nodes = (
            lc,
            arm,
            workloads,
            profile,
            out,
            nodes,
        )
        self.ns = {w.key: f"{arm}-{w.key}" for w in workloads}
        self.urls: dict[str, str] = {}
        self.load: list[float] = []

    def prepare(self) -> None:
        """Namespaces, Deployments at their initial size, replicas: no controller yet."""
        plane = self.lc.plane
        for w in self.workloads:
            ns = self.ns[w.key]
            plane.namespace(ns)
            deploy = plane.deployment(
                ns, POOL, replicas=w.initial, node_selector={"burstpilot.io/bench-pool": f"{w.key}-{self.nodes}"},
                cold_start_s=peers.COLD_START_S,
            )  # fmt: skip
            plane.apply(deploy)
            self.urls[ns] = self.lc.serve_pool(
                ns, f"app={POOL}", POOL, profile=str(self.profile), cold_start_s=peers.MODEL_LOAD_S,
                wait_replicas=False,
            )  # fmt: skip

    def wait_ready(self) -> None:
        apps = self.lc.plane
        for w in self.workloads:
            ns = self.ns[w.key]

            def ready(ns=ns, n=w.initial):
                st = apps.get_json("deployment", POOL, "-n", ns).get("status") or {}
                return (st.get("readyReplicas") or 0) >= n and _answers(self.urls[ns])

            wait_for(f"{ns}: {w.initial} Ready replicas", ready, timeout=300, interval=2)

    def attach(self) -> None:
        for w in self.workloads:
            ns = self.ns[w.key]
            for obj in peers.arm_objects(
                self.arm, ns, POOL, self.profile, self.lc.state["prometheus_url"], w.sizing
            ):
                self.lc.plane.apply(obj)
        for ns in self.ns.values():
            wait_for(
                f"{ns}: {self.arm} in control", lambda ns=ns: self._in_control(ns), timeout=180, interval=2
            )

    def _in_control(self, ns: str) -> bool:
        plane = self.lc.plane
        if self.arm in ("burstpilot", "advisory"):
            st = plane.get_json("servingpool", POOL, "-n", ns).get("status") or {}
            if not st.get("lastDecision"):
                return False
        if self.arm in ("keda", "hpa", "advisory"):
            res = plane.kubectl("get", "hpa", f"keda-hpa-{POOL}", "-n", ns, "-o", "json", check=False)
            if res.returncode != 0 or not (json.loads(res.stdout).get("status") or {}).get("currentMetrics"):
                return False
        return True

    def start(self) -> None:
        self.poller = Poller(self.lc, list(self.ns.values()))
        self.poller.start()
        self.load = [os.getloadavg()[0]]
        self.procs = {}
        self.t_start = time.time()
        for w in self.workloads:
            ns = self.ns[w.key]
            argv = [
                BIN / "burstpilot", "replay", w.csv, "--target", self.urls[ns], "--out", self.out / ns / "replay",
                "--slo", peers.SLO_SPEC, "--no-progress", "--no-plot", "--timeout", f"{REQUEST_TIMEOUT_S:g}s",
            ]  # fmt: skip
            self.procs[ns] = (
                w,
                subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
            )

    def running(self) -> bool:
        return any(p.poll() is None for _, p in self.procs.values())

    def wait(self, until: float | None = None) -> None:
        """Until the replays end (or the Unix time ``until``), a progress line a minute."""
        last = time.monotonic()
        while self.running() and (until is None or time.time() < until):
            time.sleep(2)
            if time.monotonic() - last >= 60:
                last = time.monotonic()
                self.load.append(os.getloadavg()[0])
                parts = []
                for ns, rows in self.poller.rows.items():
                    if rows:
                        parts.append(f"{ns} {rows[-1]['spec']} asked/{rows[-1]['ready']} Ready")
                t = time.time() - self.t_start
                log(f"arm {self.arm} t={t:.0f}s: " + "; ".join(parts) + f"; load {self.load[-1]:.1f}")

    def collect(self) -> tuple[list[dict], dict]:
        time.sleep(3)
        self.poller.stop.set()
        self.poller.join(10)
        prom = PrometheusConnect(url=self.lc.state["prometheus_url"], disable_ssl=True)
        rows, kept = [], {}
        for ns, (w, proc) in self.procs.items():
            text = proc.communicate()[0]
            (self.out / ns / "replay.log").write_text(text)
            if proc.returncode != 0:
                raise BurstpilotError(
                    f"{ns}: the replay failed ({proc.returncode}); see {self.out / ns / 'replay.log'}"
                )
            rdir = self.out / ns / "replay"
            t0 = float(json.loads((rdir / "run.json").read_text())["started_at"])
            summary = json.loads((rdir / "summary.json").read_text())
            lifetimes = self.lc.pod_lifetimes(ns, POOL)
            hist = self.poller.rows[ns]
            for h in hist:
                h["t"] = round(h["wall"] - t0, 3)
            row = peers.summarize_arm(self.arm, w.key, summary, lifetimes, hist, t0, w.duration_s, self.load)
            rows.append(row.row() | {"sim_step_lateness_s": lateness(prom, ns, time.time() - t0)})
            events = self.lc.plane.get_json("events", "-n", ns)["items"]
            (self.out / ns / "history.json").write_text(json.dumps(hist))
            (self.out / ns / "lifetimes.json").write_text(json.dumps(lifetimes, indent=1))
            (self.out / ns / "events.json").write_text(json.dumps(events))
            kept[ns] = {"arm": self.arm, "workload": w.key, "t0": t0, "history": hist}
            if self.arm in SERIES_ARMS:
                recs = read_records(rdir)
                kept[ns]["series"] = series(prom, ns, recs, t0, t0 + w.duration_s + 60)
            log(
                f"arm {self.arm} {w.key}: attainment {row.slo_attainment:.3f} ({row.slo_violations} violations), "
                f"{row.gpu_hours:.3f} GPU-h, {row.scale_events} scale events"
            )
        return rows, kept

    def teardown(self) -> None:
        plane = self.lc.plane
        for ns in self.ns.values():
            plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)
        for ns in self.ns.values():
            self.lc.stop_pool(ns, POOL)

    def wait_gone(self) -> None:
        plane = self.lc.plane

        def gone():
            return all(
                plane.kubectl("get", "namespace", ns, check=False).returncode != 0 for ns in self.ns.values()
            )

        wait_for(f"arm {self.arm}: its namespaces gone", gone, timeout=180, interval=2)


def lateness(prom: PrometheusConnect, ns: str, seconds: float) -> dict:
    """How late the pool's simulated replicas delivered their step ends against the step clock (p50, p99 over the
    arm): the share of this machine's CPU contention in the measured latencies."""
    out = {}
    for q in (0.5, 0.99):
        query = (
            f"histogram_quantile({q}, sum by (le) (increase(burstpilot_sim_step_lateness_seconds_bucket"
            f"{{{peers.pool_selector(ns)}}}[{int(seconds) + 1}s])))"
        )
        res = prom.custom_query(query)
        out[f"p{round(q * 100)}"] = round(float(res[0]["value"][1]), 4) if res else None
    return out


def series(prom: PrometheusConnect, ns: str, records: list[dict], t0: float, t1: float) -> list[dict]:
    """The pool's scraped series at 1 s (burstpilot.evaluation.scrape.MetricsSeries.to_dict's samples), time on
    the workload's axis: counters summed over every pod seen (a deleted pod keeps its last value), gauges over
    the pods scraped at that second; ``arrived`` from the load generator's send times."""
    g0, g1 = float(np.floor(t0 - 5)), float(np.ceil(t1))
    start, end = dt.datetime.fromtimestamp(g0), dt.datetime.fromtimestamp(g1)
    grid = np.arange(g0, g1 + 1)
    sel = peers.pool_selector(ns)

    def per_pod(metric: str) -> dict[str, dict[float, float]]:
        out: dict[str, dict[float, float]] = {}
        for s in prom.custom_query_range(f"{metric}{{{sel}}}", start_time=start, end_time=end, step="1s"):
            out[s["metric"].get("pod", "?")] = {float(t): float(v) for t, v in s["values"]}
        return out

    counters = {
        "finished": "vllm:request_success_total",
        "prompt_tokens": "vllm:prompt_tokens_total",
        "generation_tokens": "vllm:generation_tokens_total",
        "preemptions": "vllm:num_preemptions_total",
    }
    gauges = {"running": "vllm:num_requests_running", "waiting": "vllm:num_requests_waiting"}
    cum = {k: per_pod(m) for k, m in counters.items()}
    now = {k: per_pod(m) for k, m in gauges.items()}
    kv = per_pod("vllm:kv_cache_usage_perc")
    sent = np.sort([r["sent_s"] for r in records if r.get("sent_s") is not None])
    rows = []
    last: dict[str, dict[str, float]] = {k: {} for k in counters}
    for t in grid:
        row = {
            "time_s": round(float(t - t0), 3),
            "arrived": float(np.searchsorted(sent, t - t0, side="right")),
        }
        for k, pods in cum.items():
            for pod, vals in pods.items():
                if t in vals:
                    last[k][pod] = vals[t]
            row[k] = round(sum(last[k].values()), 3)
        for k, pods in now.items():
            row[k] = round(sum(v[t] for v in pods.values() if t in v), 3)
        kvs = [v[t] for v in kv.values() if t in v]
        row["kv_usage"] = round(float(np.mean(kvs)), 4) if kvs else None
        row["ttft_s"] = []
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- the run


def build_workloads(out: Path, profile: Path, minutes: float) -> list[Workload]:
    duration = minutes * 60.0
    bg, phases = peers.burstgpt_shaped(duration, cold_start_s=peers.COLD_START_S, **BURSTGPT)
    az = peers.real_slice(AZURE_CSV, AZURE_RPS, duration, AZURE_OFFSET_S)
    out_w = []
    for key, tr, ph in (("burstgpt", bg, phases), ("azure", az, None)):
        csv = out / f"{key}.csv"
        write_burstgpt_csv(tr, csv)
        sizing = peers.Sizing.from_profile(profile, tr.request_tokens.mean(), tr.response_tokens.mean())
        out_w.append(Workload(key, tr, csv, sizing, duration, ph))
    return out_w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=12.0, help="length of each workload (default 12)")
    ap.add_argument(
        "--arms", default=",".join(peers.ARMS), help="comma-separated arms (default all, in order)"
    )
    ap.add_argument("--state-dir", type=Path, default=cache_dir() / "k8s-peers", help="the cluster's state")
    ap.add_argument(
        "--keep", action="store_true", help="leave the cluster running afterwards (and reuse one)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS / "k8s_peers.json")
    ap.add_argument("--raw", type=Path, default=REPO / "reports" / "k8s-peers")
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    for a in arms:
        if a not in peers.ARMS:
            ap.error(f"unknown arm {a!r} (known: {', '.join(peers.ARMS)})")
    t_start = time.monotonic()
    raw = args.raw.resolve()  # the replicas read the profile from their own working directory
    raw.mkdir(parents=True, exist_ok=True)
    profile = peers.write_profile(raw / f"{peers.PROFILE_NAME}.json")
    workloads = build_workloads(raw, profile, args.minutes)
    lc = LocalCluster(args.state_dir)
    started = not lc.running()
    if started:
        log(f"starting a local cluster in {lc.dir}")
        lc.up(gpu_nodes=1, gpus_per_node=0, keda=True, sample=False, progress=log)  # a node for the chart
        lc = LocalCluster(args.state_dir)
    for key in (f"{w.key}-{k}" for w in workloads for k in (0, 1)):  # idempotent: a reused cluster has them
        lc.plane.add_gpu_nodes(
            NODES_PER_TRACE, GPUS_PER_NODE, prefix=f"gpu-{key}", labels={"burstpilot.io/bench-pool": key}
        )
    load = {"start": list(os.getloadavg())}
    rows, kept = [], {}
    try:
        runs = [ArmRun(lc, arm, workloads, profile, raw, nodes=i % 2) for i, arm in enumerate(arms)]
        log(f"arm {runs[0].arm}: preparing its pools")
        runs[0].prepare()
        runs[0].wait_ready()
        for i, run in enumerate(runs):
            nxt = runs[i + 1] if i + 1 < len(runs) else None
            run.attach()
            log(f"arm {run.arm}: in control of {', '.join(run.ns.values())}; replaying")
            run.start()
            run.wait(until=run.t_start + args.minutes * 60.0)  # the workloads' arrivals
            if nxt is not None:
                log(f"arm {nxt.arm}: preparing its pools while arm {run.arm}'s last requests finish")
                nxt.prepare()
            run.wait()
            r, k = run.collect()
            rows += r
            kept.update(k)
            load[run.arm] = list(os.getloadavg())
            # the figures so far, so that a later arm's failure loses nothing already measured
            write_results(args.out, workloads, rows, kept, load, time.monotonic() - t_start)
            run.teardown()
            if nxt is not None:
                nxt.wait_ready()
            run.wait_gone()
    finally:
        if started and not args.keep:
            log("stopping the local cluster")
            lc.down(progress=lambda line: None)
    wall = time.monotonic() - t_start
    write_results(args.out, workloads, rows, kept, load, wall)
    log(f"done in {wall / 60:.1f} min: {args.out}")
    return 0


def write_results(out: Path, workloads: list[Workload], rows, kept, load, wall_s: float) -> None:
    panels = []
    for w in workloads:
        arms = {k["arm"]: k["history"] for k in kept.values() if k["workload"] == w.key}
        title = f"{w.key}: {w.trace.source} ({len(w.trace)} requests)"
        panels.append(
            {"title": title, "arrivals": w.trace.arrival_s.tolist(), "duration_s": w.duration_s, "arms": arms}
        )
    png = peers.plot_replicas(panels, out.with_suffix(".png"))
    doc = {
        "benchmark": "bench/k8s_peers.py",
        "command": " ".join([Path(sys.executable).name, "bench/k8s_peers.py", *sys.argv[1:]]),
        "wall_s": round(wall_s, 1),
        "cpu_cores": os.cpu_count(),
        "load_average_1_5_15": load,
        "replica": {
            "profile": peers.PROFILE_NAME,
            "derived_from": peers.BASE_PROFILE,
            "step_time_factor": peers.SLOWDOWN,
            "model_load_s": peers.MODEL_LOAD_S,
            "slo": peers.SLO_SPEC,
            "min_max_replicas": [peers.MIN_REPLICAS, peers.MAX_REPLICAS],
        },
        "workloads": {
            w.key: {
                "source": w.trace.source,
                "requests": len(w.trace),
                "duration_s": w.duration_s,
                "mean_rps": round(len(w.trace) / w.duration_s, 3),
                "phases": [p.__dict__ for p in w.phases] if w.phases else None,
                "sizing": w.sizing.__dict__,
            }
            for w in workloads
        },
        "controllers": {
            a: {
                w.key: peers.arm_objects(
                    a, f"{a}-{w.key}", POOL, Path(f"{peers.PROFILE_NAME}.json"), "PROMETHEUS_URL", w.sizing
                )
                for w in workloads
            }
            for a in peers.ARMS
        },
        "rows": rows,
        "figure": png.name,
    }
    out.write_text(json.dumps(doc, indent=1))
    series = {
        ns: {k: v for k, v in kk.items() if k != "lifetimes"}
        | {"sizing": next(w.sizing.__dict__ for w in workloads if w.key == kk["workload"])}
        for ns, kk in kept.items()
        if "series" in kk
    }
    if series:
        out.with_name(f"{out.stem}_series.json").write_text(json.dumps(series, separators=(",", ":")))


if __name__ == "__main__":
    sys.exit(main())
