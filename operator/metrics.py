"""The operator's own Prometheus metrics (prometheus-client), served on --metrics-address.

The per-pool gauges have stable names and labels (``namespace``, ``pool``): dashboards, alerts and a KEDA
ScaledObject in front of an Advisory pool read them (docs/operator.md). Only the acting replica (the leader)
exports pool gauges; a standby exports none.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POOL = ["namespace", "pool"]

DECISIONS = Counter(
    "burstpilot_operator_decisions_total",
    "Scaling decisions made, by pool and the bound that set the number",
    [*POOL, "bound"],
)
SCALES = Counter(
    "burstpilot_operator_scale_operations_total",
    "Scale subresource patches, by pool and direction",
    [*POOL, "direction"],
)
DESIRED = Gauge(
    "burstpilot_operator_desired_replicas",
    "Replicas of the last decision (after a shared budget); in Advisory mode what burstpilot would set",
    POOL,
)
CURRENT = Gauge("burstpilot_operator_current_replicas", "The target's spec.replicas after the tick", POOL)
PODS = Gauge(
    "burstpilot_operator_pods", "The target's pods by state (ready, starting, pending)", [*POOL, "state"]
)
GPUS = Gauge("burstpilot_operator_gpus", "GPUs the target's current replicas ask for", POOL)
FORECAST = Gauge(
    "burstpilot_operator_forecast_rate",
    "Forecast request rate (per second) at the pool's quantile over the cold-start horizon",
    POOL,
)
FORECAST_MEAN = Gauge(
    "burstpilot_operator_forecast_mean_rate", "Forecast mean request rate (per second) over the horizon", POOL
)
OBSERVED = Gauge(
    "burstpilot_operator_observed_rate", "Requests per second observed in the last interval", POOL
)
LATENCY = Gauge(
    "burstpilot_operator_latency_p99_seconds",
    "p99 latency observed in the last interval (ttft: time to first token, tpot: time per output token)",
    [*POOL, "kind"],
)
SLO = Gauge("burstpilot_operator_slo_seconds", "The pool's latency targets (ttft, tpot)", [*POOL, "kind"])
BOUND = Gauge(
    "burstpilot_operator_decision_bound",
    "1 for the bound that set the last decision's count (min, throughput, kv, backlog, ...), else absent",
    [*POOL, "bound"],
)
CONFLICT = Gauge(
    "burstpilot_operator_conflict",
    "1 while another controller (an HPA or a KEDA ScaledObject) scales the pool's target",
    [*POOL, "controller"],
)
ERRORS = Counter(
    "burstpilot_operator_errors_total",
    "Ticks that met an error, by kind (target, metrics, spec, kubernetes, state, status, timeout, internal)",
    [*POOL, "kind"],
)
TICKS = Counter("burstpilot_operator_ticks_total", "Ticks run, by pool (whatever their outcome)", POOL)
TICK_SECONDS = Histogram(
    "burstpilot_operator_tick_seconds",
    "Time of one pool's tick: queries, decision, scale and status",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PROM_QUERIES = Counter(
    "burstpilot_operator_prometheus_queries_total", "HTTP queries sent to Prometheus (batched across pools)"
)
WRITTEN_BYTES = Counter(
    "burstpilot_operator_written_bytes_total",
    "Request bodies written to the API server by the reconcilers (status and state patches)",
    ["kind"],
)
LEADER = Gauge("burstpilot_operator_leader", "1 while this replica holds the leader Lease (or runs alone)")

_POOL_GAUGES = (DESIRED, CURRENT, GPUS, FORECAST, FORECAST_MEAN, OBSERVED, TICKS)
_LABELLED = (PODS, LATENCY, SLO, BOUND, CONFLICT)


# The extra label values each pool has set on the labelled gauges, to remove exactly those.
_SEEN: dict[tuple[int, str, str], set[str]] = {}


def labelled(metric: Gauge, namespace: str, pool: str, value: str) -> Gauge:
    """``metric.labels(namespace, pool, value)``, remembered so ``forget`` can remove it."""
    _SEEN.setdefault((id(metric), namespace, pool), set()).add(value)
    return metric.labels(namespace, pool, value)


def set_only(metric: Gauge, namespace: str, pool: str, value: str | None) -> None:
    """The pool's series of ``metric`` is 1 for ``value`` alone (none when ``value`` is None)."""
    _forget_labelled(metric, namespace, pool)
    if value:
        labelled(metric, namespace, pool, value).set(1)


def _forget_labelled(metric: Gauge, namespace: str, pool: str) -> None:
    for value in _SEEN.pop((id(metric), namespace, pool), set()):
        try:
            metric.remove(namespace, pool, value)
        except KeyError:
            pass


def forget(namespace: str, pool: str) -> None:
    """Drop a pool's gauges so they stop being exported (the pool was deleted, or this replica stopped leading)."""
    for gauge in _POOL_GAUGES:
        try:
            gauge.remove(namespace, pool)
        except KeyError:
            pass
    for metric in _LABELLED:
        _forget_labelled(metric, namespace, pool)
