"""The decision core's state between ticks and across restarts: one ConfigMap per ServingPool.

The state (``burstpilot.policy`` state, the forecaster's calibration ring inside) is about 50 to 100 KiB, too
large to rewrite into the ServingPool every tick: every write of the ServingPool goes to etcd and, as a watch
event, to every client watching ServingPools. It lives instead in the ConfigMap ``<pool>-burstpilot-state``
of the pool's namespace, data key ``policyState``, owned by the ServingPool (the garbage collector deletes it
with the pool). Only the operator reads it, at its first tick after a start; it writes it after every tick
whose state changed, so a restarted operator resumes exactly where the last tick left off.
"""

from __future__ import annotations

import hashlib
import logging

from burstpilot.operator.kube import GROUP, VERSION, Kube

log = logging.getLogger(__name__)

STATE_KEY = "policyState"
SUFFIX = "-burstpilot-state"
POOL_LABEL = "burstpilot.io/servingpool"
LABELS = {"app.kubernetes.io/managed-by": "burstpilot", "app.kubernetes.io/component": "policy-state"}
MAX_NAME = 253  # a ConfigMap's name is a DNS subdomain
MAX_LABEL_VALUE = 63


def configmap_name(pool: str) -> str:
    """``<pool>-burstpilot-state``; a pool name too long for that is cut and told apart by a hash."""
    name = pool + SUFFIX
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(pool.encode()).hexdigest()[:10]
    head = pool[: MAX_NAME - len(SUFFIX) - len(digest) - 1].rstrip(".-")
    return f"{head}-{digest}{SUFFIX}"


def labels(pool: str) -> dict[str, str]:
    """The fixed labels, and the pool's name where it fits a label value (it always is in the annotation)."""
    out = dict(LABELS)
    if len(pool) <= MAX_LABEL_VALUE:
        out[POOL_LABEL] = pool
    return out


class StateStore:
    """Reads and writes one pool's state ConfigMap; remembers what it wrote, to skip unchanged writes."""

    def __init__(self, kube: Kube, namespace: str, pool: str) -> None:
        self.kube, self.namespace, self.pool = kube, namespace, pool
        self.name = configmap_name(pool)
        self.saved: str | None = None  # the document in the ConfigMap, as far as this store knows
        self.exists = False

    def load(self, owner_uid: str) -> str | None:
        """The saved document, or None when there is none for this pool. A ConfigMap owned by another
        ServingPool of the same name (deleted, not yet collected) does not count. Raises StateError."""
        cm = self.kube.get_configmap(self.namespace, self.name)
        if cm is None:
            return None
        self.exists = True
        owners = (cm.get("metadata") or {}).get("ownerReferences") or []
        if not any(o.get("uid") == owner_uid for o in owners):
            log.warning(
                "%s/%s: ConfigMap %s belongs to an earlier ServingPool of that name; starting afresh",
                self.namespace,
                self.pool,
                self.name,
            )
            return None
        raw = (cm.get("data") or {}).get(STATE_KEY)
        self.saved = raw
        return raw

    def save(self, document: str, owner_uid: str) -> bool:
        """Write ``document`` unless it is what the ConfigMap holds already. Returns whether it wrote.
        Raises StateError."""
        if document == self.saved:
            return False
        metadata = {
            "name": self.name,
            "labels": labels(self.pool),
            "annotations": {POOL_LABEL: self.pool},
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "ServingPool",
                    "name": self.pool,
                    "uid": owner_uid,
                    "controller": True,
                }
            ],
        }
        body = {"metadata": metadata, "data": {STATE_KEY: document}}
        if self.exists:
            written = self.kube.patch_configmap(
                self.namespace, self.name, body
            ) or self.kube.create_configmap(self.namespace, {"apiVersion": "v1", "kind": "ConfigMap", **body})
        else:
            written = self.kube.create_configmap(
                self.namespace, {"apiVersion": "v1", "kind": "ConfigMap", **body}
            ) or self.kube.patch_configmap(self.namespace, self.name, body)
        if written:
            self.exists = True
            self.saved = document
        return written
