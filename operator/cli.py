"""Command line for `burstpilot operator`."""

from __future__ import annotations

import argparse
import os
import socket
import uuid
from pathlib import Path

from burstpilot.errors import BurstpilotError

SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


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
        default="127.0.0.1:8000",
        help="HOST:PORT of the operator's /metrics ('' to disable; default 127.0.0.1:8000, this host only)",
    )
    run.add_argument(
        "--health-address",
        default="127.0.0.1:8080",
        help="HOST:PORT of /healthz (liveness) and /readyz (readiness) (default 127.0.0.1:8080)",
    )
    run.add_argument(
        "--batch-linger",
        type=float,
        default=0.05,
        help="seconds to gather pools' queries into one (default 0.05)",
    )
    run.add_argument(
        "--tick-timeout",
        type=float,
        default=30.0,
        help="seconds a tick may run past its interval before it is cancelled and reported (default 30)",
    )
    run.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log lines (default text)"
    )
    run.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default=None, help="default: from -v"
    )
    le = run.add_argument_group("leader election (several replicas, one acting)")
    le.add_argument(
        "--leader-elect", action="store_true", help="act only while holding a coordination.k8s.io Lease"
    )
    le.add_argument(
        "--leader-election-namespace",
        default=None,
        help="the Lease's namespace (default: the pod's own, else default)",
    )
    le.add_argument("--leader-election-id", default="burstpilot-operator", help="the Lease's name")
    le.add_argument("--lease-duration", type=float, default=15.0, help="seconds (default 15)")
    le.add_argument("--renew-deadline", type=float, default=10.0, help="seconds (default 10)")
    le.add_argument("--retry-period", type=float, default=2.0, help="seconds (default 2)")
    run.set_defaults(handler=_run)


def _hostport(value: str, flag: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BurstpilotError(f"{flag}: expected HOST:PORT, got {value!r}")
    host = host.strip("[]")  # [fd00::1]:8080
    if not host:
        raise BurstpilotError(f"{flag}: name the address to listen on (HOST:PORT), got {value!r}")
    return host, int(port)


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


def _own_namespace() -> str:
    try:
        return SA_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from burstpilot.operator import logs, runner
    from burstpilot.operator.kube import Kube
    from burstpilot.operator.leader import LeaseConfig
    from burstpilot.operator.prom import PrometheusSource
    from burstpilot.operator.reconcile import Runtime

    health = _hostport(args.health_address, "--health-address")
    metrics = _hostport(args.metrics_address, "--metrics-address") if args.metrics_address else None
    if args.batch_linger < 0:
        raise BurstpilotError(f"--batch-linger: must be >= 0, got {args.batch_linger}")
    if args.tick_timeout <= 0:
        raise BurstpilotError(f"--tick-timeout: must be > 0, got {args.tick_timeout}")
    lease = None
    if args.leader_elect:
        identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"
        try:
            lease = LeaseConfig(
                namespace=args.leader_election_namespace or _own_namespace(),
                name=args.leader_election_id,
                identity=identity,
                lease_duration_s=args.lease_duration,
                renew_deadline_s=args.renew_deadline,
                retry_period_s=args.retry_period,
            )
        except ValueError as exc:
            raise BurstpilotError(f"--lease-duration/--renew-deadline/--retry-period: {exc}") from None
    level = args.log_level or ("debug" if args.verbose >= 2 else "info")
    logs.configure(args.log_format, level)
    _load_kube_config()
    runtime = Runtime(
        kube=Kube(), prom=PrometheusSource(linger_s=args.batch_linger), tick_timeout_s=args.tick_timeout
    )
    if metrics:
        start_http_server(metrics[1], addr=metrics[0])
    runner.run(runner.Options(namespaces=args.namespace, health=health, lease=lease), runtime)
    return 0
