"""Kubernetes adapter: the target's scale subresource, its pods, the ServingPool's status, named Secrets, and
the ConfigMaps holding the pools' decision-core state.

Synchronous (the official client); the operator calls it through ``asyncio.to_thread``.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client

GROUP, VERSION, PLURAL = "burstpilot.io", "v1alpha1", "servingpools"
_OBJ = {"200": "object", "201": "object"}


class StateError(Exception):
    """A state ConfigMap could not be read or written (no permission, API server error)."""


class TargetError(Exception):
    """The target does not exist, has no scale subresource, or cannot be read or scaled."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Scale:
    spec_replicas: int
    status_replicas: int
    selector: str


@dataclass
class PodSummary:
    """The target's pods by state. ``cold_starts``: (ready time, seconds from creation to ready) per ready pod."""

    ready: int = 0
    starting: int = 0
    pending: int = 0
    pending_message: str = ""
    cold_starts: list[tuple[dt.datetime, float]] = field(default_factory=list)


def summarize_pods(pods: list[client.V1Pod]) -> PodSummary:
    """Ready: Ready condition True. Pending: not scheduled (PodScheduled False, e.g. no GPU left).
    Starting: scheduled, not ready yet. Terminating and finished pods are not counted."""
    out = PodSummary()
    for pod in pods:
        if pod.metadata.deletion_timestamp is not None:
            continue
        if pod.status is None or pod.status.phase in ("Succeeded", "Failed"):
            continue
        conds = {c.type: c for c in (pod.status.conditions or [])}
        ready, sched = conds.get("Ready"), conds.get("PodScheduled")
        if ready is not None and ready.status == "True":
            out.ready += 1
            created = pod.metadata.creation_timestamp
            if created is not None and ready.last_transition_time is not None:
                secs = (ready.last_transition_time - created).total_seconds()
                out.cold_starts.append((ready.last_transition_time, max(secs, 0.0)))
        elif not pod.spec.node_name and (sched is None or sched.status != "True"):
            out.pending += 1
            if sched is not None and sched.message and not out.pending_message:
                out.pending_message = sched.message
        else:
            out.starting += 1
    return out


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self.api = api_client or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self._resources: dict[tuple[str, str], str] = {}

    def _request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        resp = self.api.call_api(*params)
        resp.read()
        return self.api.response_deserialize(response_data=resp, response_types_map=_OBJ).data

    @staticmethod
    def _prefix(api_version: str) -> str:
        return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"

    def _plural(self, api_version: str, kind: str) -> str:
        key = (api_version, kind)
        if key not in self._resources:
            try:
                listing = self._request("GET", self._prefix(api_version))
            except client.ApiException as exc:
                raise TargetError(
                    "TargetKindUnknown", f"API {api_version} is not served: {exc.reason}"
                ) from None
            names = {r["name"] for r in listing.get("resources", [])}
            for r in listing.get("resources", []):
                if r.get("kind") == kind and "/" not in r["name"]:
                    if f"{r['name']}/scale" not in names:
                        raise TargetError(
                            "TargetNotScalable", f"{kind}.{api_version} has no scale subresource"
                        )
                    self._resources[key] = r["name"]
                    break
            else:
                raise TargetError("TargetKindUnknown", f"API {api_version} serves no kind {kind}")
        return self._resources[key]

    def _scale_path(self, namespace: str, target: dict[str, Any]) -> str:
        api_version = target.get("apiVersion", "apps/v1")
        kind = target.get("kind", "Deployment")
        plural = self._plural(api_version, kind)
        return f"{self._prefix(api_version)}/namespaces/{namespace}/{plural}/{target['name']}/scale"

    def get_scale(self, namespace: str, target: dict[str, Any]) -> Scale:
        path = self._scale_path(namespace, target)
        try:
            obj = self._request("GET", path)
        except client.ApiException as exc:
            kind = target.get("kind", "Deployment")
            if exc.status == 404:
                raise TargetError(
                    "TargetNotFound", f"{kind} {namespace}/{target['name']} not found"
                ) from None
            raise TargetError(
                "TargetUnreadable", f"reading the scale of {kind} {target['name']}: {exc.reason}"
            ) from None
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        return Scale(
            int(spec.get("replicas") or 0), int(status.get("replicas") or 0), status.get("selector") or ""
        )

    def set_scale(self, namespace: str, target: dict[str, Any], replicas: int) -> None:
        path = self._scale_path(namespace, target)
        try:
            self._request(
                "PATCH", path, {"spec": {"replicas": int(replicas)}}, "application/merge-patch+json"
            )
        except client.ApiException as exc:
            raise TargetError(
                "ScaleFailed", f"patching the scale of {target['name']}: {exc.reason}"
            ) from None

    def pods(self, namespace: str, selector: str) -> PodSummary:
        if not selector:
            return PodSummary()
        return summarize_pods(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        self._request("PATCH", path, {"status": status}, "application/merge-patch+json")

    def read_secret(self, namespace: str, name: str) -> dict[str, str]:
        secret = self.core.read_namespaced_secret(name, namespace)
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _configmaps(self, namespace: str) -> str:
        return f"/api/v1/namespaces/{namespace}/configmaps"

    def get_configmap(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The ConfigMap as a JSON object; None when it does not exist."""
        try:
            return self._request("GET", f"{self._configmaps(namespace)}/{name}")
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise StateError(f"reading ConfigMap {namespace}/{name}: {exc.status} {exc.reason}") from None

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create it; False when one of that name exists already."""
        try:
            self._request("POST", self._configmaps(namespace), body, "application/json")
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            name = body["metadata"]["name"]
            raise StateError(f"creating ConfigMap {namespace}/{name}: {exc.status} {exc.reason}") from None
        return True

    def patch_configmap(self, namespace: str, name: str, patch: dict[str, Any]) -> bool:
        """JSON merge patch; False when the ConfigMap does not exist."""
        try:
            self._request(
                "PATCH", f"{self._configmaps(namespace)}/{name}", patch, "application/merge-patch+json"
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise StateError(f"patching ConfigMap {namespace}/{name}: {exc.status} {exc.reason}") from None
        return True
