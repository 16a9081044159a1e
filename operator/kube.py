"""Kubernetes adapter: the target's scale subresource, its pods, the ServingPool's status, named Secrets, the
ConfigMaps holding the pools' decision-core state (and their replica profiles), and the other autoscalers
(HorizontalPodAutoscalers, KEDA ScaledObjects) that may scale the same target.

Synchronous (the official client); the operator calls it through ``asyncio.to_thread``. Every call goes
through urllib3's retry: connection errors, and 409, 429 and 5xx answers to reads and patches, are retried up
to ``API_RETRIES`` times with jittered exponential backoff, honouring a ``Retry-After`` of up to 5 s; what still
fails surfaces to the tick as a condition and an Event, and the next tick tries again.
"""

from __future__ import annotations

import base64
import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from urllib3.util.retry import Retry

GROUP, VERSION, PLURAL = "burstpilot.io", "v1alpha1", "servingpools"
KEDA_API = "/apis/keda.sh/v1alpha1"
_OBJ = {"200": "object", "201": "object"}
API_RETRIES = 3
REQUEST_TIMEOUT_S = 10.0  # one API call (each attempt): a tick never waits longer on a silent API server
RETRYABLE = (409, 429, 500, 502, 503, 504)


def api_retry() -> Retry:
    """Retries for reads and patches (both idempotent here: every patch sets absolute values). Creates are not
    retried on a status: 409 to a create means the object exists, which the callers handle."""
    return Retry(
        total=API_RETRIES,
        connect=API_RETRIES,
        read=1,
        status=API_RETRIES,
        other=0,
        backoff_factor=0.25,
        backoff_max=2.0,
        backoff_jitter=0.1,
        status_forcelist=RETRYABLE,
        allowed_methods=frozenset({"GET", "PATCH"}),
        respect_retry_after_header=True,
        retry_after_max=5,
        raise_on_status=False,
    )


def describe(exc: Exception) -> str:
    """An API failure in a few words: ``429 Too Many Requests`` or the connection error's type (never a body)."""
    if isinstance(exc, client.ApiException):
        return f"{exc.status} {exc.reason}" if exc.status else str(exc.reason)
    return type(exc).__name__


class StateError(Exception):
    """A state ConfigMap could not be read or written (no permission, API server error)."""


class StatusError(Exception):
    """The ServingPool's status could not be written (the pool is gone: ``gone``)."""

    def __init__(self, message: str, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone


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


@dataclass(frozen=True)
class Autoscaler:
    """Another controller scaling a target: ``kind`` (HorizontalPodAutoscaler or ScaledObject), its name, and
    the target it scales (kind, name)."""

    kind: str
    name: str
    target_kind: str
    target_name: str
    managed_by_keda: str = ""  # an HPA that KEDA made: the ScaledObject's name


def _errors_as_target(what: str, reason: str = "TargetUnreadable"):
    def wrap(exc: Exception) -> TargetError:
        return TargetError(reason, f"{what}: {describe(exc)}")

    return wrap


class Kube:
    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        if api_client is None:
            cfg = client.Configuration.get_default_copy()
            cfg.retries = api_retry()
            cfg.connection_pool_maxsize = 64  # one kept-alive connection per I/O thread (runner.THREADS)
            api_client = client.ApiClient(cfg)
        self.api = api_client
        self.core = client.CoreV1Api(self.api)
        self.autoscaling = client.AutoscalingV2Api(self.api)
        self._resources: dict[tuple[str, str], str] = {}
        self._keda_checked = -1e18  # monotonic time KEDA's API was last found missing
        self.requests = 0  # API calls made (for the operator's metrics)

    def _request(self, method: str, path: str, body: Any = None, content_type: str | None = None) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        params = self.api.param_serialize(
            method=method, resource_path=path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        self.requests += 1
        resp = self.api.call_api(*params, _request_timeout=REQUEST_TIMEOUT_S)
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
                if exc.status == 404:
                    raise TargetError("TargetKindUnknown", f"API {api_version} is not served") from None
                raise TargetError("TargetUnreadable", f"API {api_version}: {describe(exc)}") from None
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
        kind = target.get("kind", "Deployment")
        try:
            path = self._scale_path(namespace, target)
            obj = self._request("GET", path)
        except TargetError:
            raise
        except client.ApiException as exc:
            if exc.status == 404:
                raise TargetError(
                    "TargetNotFound", f"{kind} {namespace}/{target['name']} not found"
                ) from None
            raise TargetError(
                "TargetUnreadable", f"reading the scale of {kind} {target['name']}: {describe(exc)}"
            ) from None
        except Exception as exc:  # the API server does not answer (urllib3's errors after its retries)
            raise TargetError(
                "TargetUnreadable", f"reading the scale of {kind} {target['name']}: {describe(exc)}"
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
        except Exception as exc:  # ApiException after the retries, or no answer at all
            raise TargetError(
                "ScaleFailed",
                f"patching the scale of {target['name']}: {describe(exc)} (after {API_RETRIES} retries)",
            ) from None

    def pods(self, namespace: str, selector: str) -> PodSummary:
        if not selector:
            return PodSummary()
        try:
            self.requests += 1
            items = self.core.list_namespaced_pod(
                namespace, label_selector=selector, _request_timeout=REQUEST_TIMEOUT_S
            ).items
        except Exception as exc:
            raise _errors_as_target(f"listing the target's pods ({selector})")(exc) from None
        return summarize_pods(items)

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge patch of the ServingPool's status. Raises StatusError (``gone`` when the pool was deleted)."""
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}/{name}/status"
        try:
            self._request("PATCH", path, {"status": status}, "application/merge-patch+json")
        except client.ApiException as exc:
            raise StatusError(f"patching the status: {describe(exc)}", gone=exc.status == 404) from None
        except Exception as exc:
            raise StatusError(f"patching the status: {describe(exc)}") from None

    def autoscalers(self, namespace: str) -> list[Autoscaler]:
        """The HorizontalPodAutoscalers and (where KEDA's API is served) ScaledObjects of a namespace.
        Raises TargetError when they cannot be listed."""
        try:
            self.requests += 1
            hpas = self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                namespace, _request_timeout=REQUEST_TIMEOUT_S
            ).items
        except Exception as exc:
            raise _errors_as_target("listing HorizontalPodAutoscalers", "ConflictUnknown")(exc) from None
        out = []
        for h in hpas:
            ref = h.spec.scale_target_ref
            keda = (h.metadata.labels or {}).get(
                "scaledobject.keda.sh/name", ""
            )  # KEDA labels the HPAs it makes
            out.append(Autoscaler("HorizontalPodAutoscaler", h.metadata.name, ref.kind, ref.name, keda))
        out.extend(self._scaled_objects(namespace))
        return out

    def _scaled_objects(self, namespace: str) -> list[Autoscaler]:
        """KEDA's ScaledObjects; none while KEDA's API is not served (looked for again every 5 minutes)."""
        if time.monotonic() - self._keda_checked < 300:
            return []
        try:
            listing = self._request("GET", f"{KEDA_API}/namespaces/{namespace}/scaledobjects")
        except client.ApiException as exc:
            if exc.status == 404:
                self._keda_checked = time.monotonic()
                return []
            raise _errors_as_target("listing KEDA ScaledObjects", "ConflictUnknown")(exc) from None
        except Exception as exc:
            raise _errors_as_target("listing KEDA ScaledObjects", "ConflictUnknown")(exc) from None
        out = []
        for item in listing.get("items") or []:
            ref = (item.get("spec") or {}).get("scaleTargetRef") or {}
            out.append(
                Autoscaler(
                    "ScaledObject",
                    (item.get("metadata") or {}).get("name", ""),
                    ref.get("kind") or "Deployment",
                    ref.get("name") or "",
                )
            )
        return out

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
            raise StateError(f"reading ConfigMap {namespace}/{name}: {describe(exc)}") from None
        except Exception as exc:
            raise StateError(f"reading ConfigMap {namespace}/{name}: {describe(exc)}") from None

    def create_configmap(self, namespace: str, body: dict[str, Any]) -> bool:
        """Create it; False when one of that name exists already."""
        try:
            self._request("POST", self._configmaps(namespace), body, "application/json")
        except client.ApiException as exc:
            if exc.status == 409:
                return False
            name = body["metadata"]["name"]
            raise StateError(f"creating ConfigMap {namespace}/{name}: {describe(exc)}") from None
        except Exception as exc:
            raise StateError(
                f"creating ConfigMap {namespace}/{body['metadata']['name']}: {describe(exc)}"
            ) from None
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
            raise StateError(f"patching ConfigMap {namespace}/{name}: {describe(exc)}") from None
        except Exception as exc:
            raise StateError(f"patching ConfigMap {namespace}/{name}: {describe(exc)}") from None
        return True
