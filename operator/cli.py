"""Command line for `burstpilot operator`."""

from __future__ import annotations

import argparse
import logging

from burstpilot.errors import BurstpilotError


def register(sub) -> None:
    parser = sub.add_parser("operator", help="run the ServingPool operator")
    osub = parser.add_subparsers(dest="operator_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)

    run = osub.add_parser(
        "run",
        help="watch ServingPools and scale their targets (in-cluster credentials, else the kubeconfig)",
        description="Run the kopf operator: one tick per ServingPool every spec.scaling.intervalSeconds.",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument(
        "--metrics-address",
        default="0.0.0.0:8000",
        help="HOST:PORT of the operator's /metrics ('' to disable)",
    )
    run.add_argument(
        "--health-address", default="0.0.0.0:8080", help="HOST:PORT of the liveness endpoint /healthz"
    )
    run.add_argument(
        "--batch-linger",
        type=float,
        default=0.05,
        help="seconds to gather pools' queries into one (default 0.05)",
    )
    run.set_defaults(handler=_run)


def _hostport(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BurstpilotError(f"{flag}: expected HOST:PORT, got {value!r}")
    return host or "0.0.0.0", int(port)


def _load_kube_config() -> None:
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, FileNotFoundError, TypeError) as exc:
            raise BurstpilotError(
                f"no Kubernetes credentials: not in a cluster and no usable kubeconfig (KUBECONFIG): {exc}"
            ) from None


def _run(args: argparse.Namespace) -> int:
    import kopf
    from prometheus_client import start_http_server

    from burstpilot.operator import handlers  # registers the handlers with kopf
    from burstpilot.operator.prom import PrometheusSource

    health = _hostport(args.health_address, "--health-address")
    metrics = _hostport(args.metrics_address, "--metrics-address") if args.metrics_address else None
    if args.batch_linger < 0:
        raise BurstpilotError(f"--batch-linger: must be >= 0, got {args.batch_linger}")
    _load_kube_config()
    handlers.RUNTIME["prom"] = PrometheusSource(linger_s=args.batch_linger)
    if metrics:
        start_http_server(metrics[1], addr=metrics[0])
    logging.getLogger("kopf").setLevel(logging.INFO)
    kopf.run(
        standalone=True,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=f"http://{health[0]}:{health[1]}/healthz",
    )
    return 0
