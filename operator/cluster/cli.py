"""Command line for ``burstpilot cluster``: a local Kubernetes cluster with fake GPU nodes, for trying the
operator (and KEDA beside it) without a real cluster."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from burstpilot.errors import BurstpilotError
from burstpilot.operator.cluster.toolchain import cache_dir

# The handlers import the cluster's modules (the Kubernetes client, aiohttp, matplotlib) when they run, so that
# `burstpilot --help` and the other commands do not pay for them.


def register(sub) -> None:
    parser = sub.add_parser(
        "cluster",
        help="a local Kubernetes cluster with fake GPU nodes, Prometheus, the operator and KEDA",
        description="A real control plane on 127.0.0.1 (built by `make toolchain`), kwok GPU nodes, Prometheus, "
        "the chart and the operator, KEDA, and a sample simulated pool.",
    )
    csub = parser.add_subparsers(dest="cluster_command", metavar="SUBCOMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)

    def state_dir(p):
        p.add_argument(
            "--state-dir",
            type=Path,
            default=None,
            help=f"where the cluster keeps its state, logs and PIDs (default {cache_dir() / 'cluster'})",
        )

    up = csub.add_parser(
        "up",
        help="start the cluster and a sample pool; print the kubeconfig and what to run next",
        description="Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok with fake GPU "
        "nodes, Prometheus, `helm install` of charts/burstpilot, the operator as the chart's ServiceAccount, "
        "KEDA's operator and metrics API server, and a sample Deployment and ServingPool with one simulated "
        "replica per Ready pod. The processes keep running after the command returns.",
    )
    state_dir(up)
    up.add_argument("--gpu-nodes", type=int, default=2, help="fake GPU nodes (default 2)")
    up.add_argument("--gpus-per-node", type=int, default=2, help="nvidia.com/gpu per node (default 2)")
    up.add_argument("--no-keda", action="store_true", help="leave KEDA out")
    up.add_argument("--no-sample", action="store_true", help="no sample Deployment and ServingPool")
    up.add_argument(
        "--hpa-sync-period",
        default=None,
        help="kube-controller-manager's HPA sync period (default its own, 15s)",
    )
    up.set_defaults(handler=_up)

    down = csub.add_parser("down", help="stop every process `up` started and remove its state directory")
    state_dir(down)
    down.set_defaults(handler=_down)

    status = csub.add_parser("status", help="what runs, and the kubeconfig")
    state_dir(status)
    status.add_argument("--json", action="store_true", help="the state as JSON")
    status.set_defaults(handler=_status)

    srv = csub.add_parser(
        "serve",
        help="(used by up) one simulated replica per Ready pod of a Deployment, behind a Service front",
        description="What a kubelet would run under kwok: one `burstpilot sim serve` per Running and Ready pod "
        "matching --selector, the Prometheus targets that follow them, and a front on --port that spreads "
        "requests over them. Runs until SIGTERM.",
    )
    state_dir(srv)
    srv.add_argument("--namespace", required=True)
    srv.add_argument("--selector", required=True, help="label selector of the pods, e.g. app=llm")
    srv.add_argument("--pool", required=True, help="the servingpool label of the replicas' metrics")
    srv.add_argument("--profile", required=True, help="the replicas' `burstpilot sim` profile")
    srv.add_argument("--cold-start", type=float, default=2.0, help="each replica's model-load seconds")
    srv.add_argument("--port", type=int, required=True, help="the front's port on 127.0.0.1")
    srv.set_defaults(handler=_serve)

    demo = csub.add_parser(
        "demo",
        help="replay a burst through a local cluster, show the operator's decisions live, write a report",
        description="Start a local cluster (unless one runs), replay a burst against the sample pool while "
        "printing each change of the ServingPool's status, then write README.md and replicas.png to --out.",
    )
    state_dir(demo)
    demo.add_argument("--out", type=Path, required=True, help="report directory")
    demo.add_argument("--keep", action="store_true", help="leave the cluster running afterwards")
    demo.set_defaults(handler=_demo)


def _cluster(args):
    from burstpilot.operator.cluster.local import LocalCluster

    return LocalCluster(args.state_dir)


def _up(args: argparse.Namespace) -> int:
    if args.gpu_nodes < 1 or args.gpus_per_node < 1:
        raise BurstpilotError("--gpu-nodes and --gpus-per-node: must be >= 1")
    lc = _cluster(args)
    print(f"burstpilot cluster up: {lc.dir}", flush=True)
    lc.up(
        gpu_nodes=args.gpu_nodes,
        gpus_per_node=args.gpus_per_node,
        keda=not args.no_keda,
        sample=not args.no_sample,
        hpa_sync_period=args.hpa_sync_period,
        progress=lambda line: print(line, flush=True),
    )
    print()
    print(lc.summary())
    return 0


def _down(args: argparse.Namespace) -> int:
    lc = _cluster(args)
    if lc.down(progress=lambda line: print(line, flush=True)):
        print(f"removed {lc.dir}")
    else:
        print(f"nothing to stop: {lc.dir} does not exist")
    return 0


def _status(args: argparse.Namespace) -> int:
    from burstpilot.operator.cluster.procs import pid_alive, read_records

    lc = _cluster(args)
    if not lc.state:
        print(f"no local cluster in {lc.dir}")
        return 1
    procs = [
        {"name": e["name"], "pid": e["pid"], "running": pid_alive(e["pid"], e.get("start_ticks"))}
        for e in read_records(lc.record)
    ]
    if args.json:
        print(json.dumps({**lc.state, "processes": procs}, indent=1))
        return 0
    if lc.state.get("api_port"):
        print(lc.summary())
    print()
    width = max((len(p["name"]) for p in procs), default=4)
    for p in procs:
        print(f"  {p['name']:<{width}}  pid {p['pid']:<8} {'running' if p['running'] else 'exited'}")
    return 0 if all(p["running"] for p in procs) else 1


def _serve(args: argparse.Namespace) -> int:
    from burstpilot.operator.cluster.local import serve

    serve(
        args.state_dir or cache_dir() / "cluster",
        args.namespace,
        args.selector,
        args.pool,
        args.profile,
        args.cold_start,
        args.port,
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    from burstpilot.operator.cluster.demo import run_demo

    return run_demo(_cluster(args), args.out, keep=args.keep)
