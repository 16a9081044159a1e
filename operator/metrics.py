"""The operator's own Prometheus metrics (prometheus-client), served on --metrics-address."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

DECISIONS = Counter(
    "burstpilot_operator_decisions_total",
    "Scaling decisions made, by pool and the bound that set the number",
    ["namespace", "pool", "bound"],
)
SCALES = Counter(
    "burstpilot_operator_scale_operations_total",
    "Scale subresource patches, by pool and direction",
    ["namespace", "pool", "direction"],
)
DESIRED = Gauge(
    "burstpilot_operator_desired_replicas", "Replicas of the last decision", ["namespace", "pool"]
)
FORECAST = Gauge(
    "burstpilot_operator_forecast_rate",
    "Forecast request rate (per second) at the pool's quantile over the cold-start horizon",
    ["namespace", "pool"],
)
ERRORS = Counter(
    "burstpilot_operator_errors_total",
    "Ticks that met an error, by kind (target, metrics, spec, kubernetes, state)",
    ["namespace", "pool", "kind"],
)
TICK_SECONDS = Histogram(
    "burstpilot_operator_tick_seconds",
    "Time of one pool's tick: queries, decision, scale and status",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
PROM_QUERIES = Counter(
    "burstpilot_operator_prometheus_queries_total", "HTTP queries sent to Prometheus (batched across pools)"
)


def forget(namespace: str, pool: str) -> None:
    """Drop a deleted pool's gauges so they stop being exported."""
    for gauge in (DESIRED, FORECAST):
        try:
            gauge.remove(namespace, pool)
        except KeyError:
            pass
