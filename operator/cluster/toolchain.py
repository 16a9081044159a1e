"""The binaries ``scripts/build-toolchain.sh`` (``make toolchain``) builds and lists in ``toolchain.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from burstpilot.operator.cluster.procs import ClusterError

# Every entry a complete toolchain lists, besides the *_version ones; the KEDA ones are a directory (config/)
# and three binaries.
BINARIES = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "etcd",
    "kwok",
    "kwok-stages",
    "helm",
    "prometheus",
)
KEDA = ("keda-operator", "keda-adapter", "keda-admission-webhooks")
KEDA_CONFIG = "keda-config"


def cache_dir() -> Path:
    return Path(os.environ.get("BURSTPILOT_CACHE") or Path.home() / ".cache" / "burstpilot")


def load_toolchain(keda: bool = True, cache: Path | None = None) -> dict:
    """The manifest's paths, checked: every binary exists (and KEDA's, when ``keda``). The error names what is
    missing and says to run ``make toolchain``."""
    manifest = (cache or cache_dir()) / "toolchain.json"
    hint = "run `make toolchain` (scripts/build-toolchain.sh; 18 to 51 minutes cold on two cores, by what else runs, then cached by version)"
    if not manifest.exists():
        raise ClusterError(f"{manifest} is missing: the toolchain is not built; {hint}")
    try:
        tools = json.loads(manifest.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ClusterError(f"{manifest}: unreadable ({exc}); {hint}") from None
    wanted = BINARIES + (KEDA if keda else ())
    missing = [k for k in wanted if not tools.get(k) or not Path(tools[k]).is_file()]
    if keda and (not tools.get(KEDA_CONFIG) or not Path(tools[KEDA_CONFIG]).is_dir()):
        missing.append(KEDA_CONFIG)
    if missing:
        raise ClusterError(f"{manifest}: missing {', '.join(missing)}; {hint}")
    return tools
