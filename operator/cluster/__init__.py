"""The local cluster: a real Kubernetes control plane on 127.0.0.1 with fake GPU nodes, Prometheus, the chart and
the operator, KEDA, and simulated replicas, as ``burstpilot cluster up`` runs it and the e2e tier's fixtures use it.

Parts (one module each): ``procs`` (processes recorded by PID), ``toolchain`` (the binaries ``make toolchain``
builds), ``pki`` (certificates), ``controlplane``, ``prometheus``, ``controllers`` (the chart and burstpilot's
operator), ``keda``, ``replicas`` (one ``burstpilot sim serve`` per Ready pod, and the Service front), ``local``
(the state directory and ``LocalCluster``), ``demo`` (``make demo-cluster``).

The package imports none of them itself, so ``burstpilot --help`` stays quick: import the module you need.
"""
