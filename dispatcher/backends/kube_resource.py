"""One Kubernetes API resource over the official client: create / list / delete, and the
translation of the client's errors into sweepq's typed errors (messages that say what to do;
a 403 is told apart: RBAC, an admission webhook's or policy's denial, a full ResourceQuota).

Lists and creates use ``_preload_content=False`` and parse JSON directly: no per-object model
deserialisation, and identical handling of CRDs and built-in kinds. ``kubernetes`` is imported
inside the methods, never at module import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from dispatcher.backends import kueue
from dispatcher.core.errors import PermanentError, SweepqError, TransientError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

PROPAGATION = "Foreground"


@dataclass(frozen=True)
class ResourceRef:
    """One API resource and the fix to print when the cluster does not serve it."""

    group: str
    version: str
    plural: str
    kind: str
    missing_fix: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def display(self) -> str:
        return f"{self.plural}.{self.group}/{self.version}" if self.group else f"{self.plural}/{self.version}"


PODS = ResourceRef(group="", version="v1", plural="pods", kind="Pod", missing_fix="the API server serves no pods")


def workloads_ref(version: str) -> ResourceRef:
    return ResourceRef(group=kueue.GROUP, version=version, plural=kueue.PLURAL, kind="Workload",
                       missing_fix="install Kueue, or drop kueue_queue from the sweep")


def _read_json(response: Any) -> dict[str, Any]:
    try:
        data = response.data
    finally:
        response.release_conn()
    return json.loads(data) if data else {}


class ResourceClient:
    """create / list / delete of one resource in one namespace, over the official client: lists and
    deletes through ``BatchV1Api`` for ``batch/v1`` Jobs, ``CoreV1Api`` for pods, ``CustomObjectsApi``
    otherwise; creates always send the manifest dict as is (see :meth:`create`)."""

    def __init__(self, api_client: "ApiClient", ref: ResourceRef, *, timeout: Any) -> None:
        self.ref = ref
        self._client = api_client
        self._timeout = timeout

    def create(self, namespace: str, body: Mapping[str, Any]) -> None:
        """POST the manifest verbatim. Also for batch/v1 Jobs this goes through the client's generic
        JSON endpoint (same URL and body as ``BatchV1Api``): the typed ``V1Job`` model would drop
        fields this client version does not know and reject int quantities (``nvidia.com/gpu: 8``)
        that the API server accepts — what ``--dry-run`` prints must be exactly what is sent."""
        if self.ref.group == "":
            raise PermanentError(f"kind {self.ref.kind} (core/v1) cannot be launched — wrap it in a batch/v1 Job")
        from kubernetes.client import CustomObjectsApi

        _read_json(CustomObjectsApi(self._client).create_namespaced_custom_object(
            self.ref.group, self.ref.version, namespace, self.ref.plural, dict(body),
            _preload_content=False, _request_timeout=self._timeout))

    def list(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        opts = {"label_selector": selector, "_preload_content": False, "_request_timeout": self._timeout}
        if (self.ref.group, self.ref.plural) == ("batch", "jobs"):
            from kubernetes.client import BatchV1Api

            response = BatchV1Api(self._client).list_namespaced_job(namespace, **opts)
        elif (self.ref.group, self.ref.plural) == ("", "pods"):
            from kubernetes.client import CoreV1Api

            response = CoreV1Api(self._client).list_namespaced_pod(namespace, **opts)
        else:
            from kubernetes.client import CustomObjectsApi

            response = CustomObjectsApi(self._client).list_namespaced_custom_object(
                self.ref.group, self.ref.version, namespace, self.ref.plural, **opts)
        items = _read_json(response).get("items")
        return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []

    def list_function(self) -> Any:
        """The official client's list method for this resource (what ``kubernetes.watch`` streams)."""
        from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi

        if (self.ref.group, self.ref.plural) == ("batch", "jobs"):
            return BatchV1Api(self._client).list_namespaced_job
        if (self.ref.group, self.ref.plural) == ("", "pods"):
            return CoreV1Api(self._client).list_namespaced_pod
        return CustomObjectsApi(self._client).list_namespaced_custom_object

    def list_args(self, namespace: str) -> tuple[str, ...]:
        if self.ref.group in ("batch", ""):
            return (namespace,)
        return (self.ref.group, self.ref.version, namespace, self.ref.plural)

    def delete(self, namespace: str, name: str) -> None:
        opts = {"propagation_policy": PROPAGATION, "_preload_content": False, "_request_timeout": self._timeout}
        if (self.ref.group, self.ref.plural) == ("batch", "jobs"):
            from kubernetes.client import BatchV1Api

            _read_json(BatchV1Api(self._client).delete_namespaced_job(name, namespace, **opts))
        else:
            from kubernetes.client import CustomObjectsApi

            _read_json(CustomObjectsApi(self._client).delete_namespaced_custom_object(
                self.ref.group, self.ref.version, namespace, self.ref.plural, name, **opts))


def _status_body(exc: Any) -> dict[str, Any]:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(exc: Any) -> float:
    headers = getattr(exc, "headers", None) or {}
    try:
        return float(headers.get("Retry-After", 0) or 0)
    except (TypeError, ValueError):
        return 0.0


# 403 Forbidden is not only RBAC: admission refuses with it too. controller-runtime webhooks
# (Trainer, the Training Operator, Kueue) answer a denial 403 ("admission webhook \"<name>\"
# denied the request: <why>"), a ValidatingAdmissionPolicy may ("... denied request: <why>"),
# and a ResourceQuota does ("exceeded quota: ..."). Only RBAC's own message ("cannot <verb>
# resource ...") sends the operator to the Role.
_ADMISSION_DENIAL = re.compile(r"admission webhook \"[^\"]*\" denied the request|denied request:", re.IGNORECASE)


def _forbidden(what: str, message: str, *, ref: ResourceRef, verb: str, namespace: str) -> SweepqError:
    if _ADMISSION_DENIAL.search(message):
        return PermanentError(f"{what}: refused by admission ({message}) — the cluster's admission rules refuse "
                              "this manifest: fix the launch settings or install what the message names")
    if "exceeded quota" in message:
        return TransientError(f"{what}: {message} — a ResourceQuota in namespace {namespace!r} is full; retrying "
                              "next tick (raise the quota if this persists)")
    if "being terminated" in message:
        return PermanentError(f"{what}: {message} — the namespace is being deleted; point the dispatcher at "
                              "another one")
    return PermanentError(f"{what}: forbidden ({message}) — grant the dispatcher's identity '{verb}' on "
                          f"{ref.display} in namespace {namespace!r} (Role + RoleBinding)")


def api_error(exc: BaseException, *, ref: ResourceRef, verb: str, namespace: str, name: str = "") -> SweepqError:
    """Translate a client exception into a typed sweepq error whose message says what to do."""
    status = getattr(exc, "status", None)
    what = f"{verb} {ref.kind} {name!r}" if name else f"{verb} {ref.kind}s"
    if status is None or status == 0:  # urllib3: timeouts, refused connections, TLS errors
        return TransientError(f"{what} in namespace {namespace!r}: API server unreachable ({exc}) — retrying next tick")
    body = _status_body(exc)
    message = str(body.get("message") or getattr(exc, "reason", "") or "").strip()
    if status == 429 or status >= 500 or status == 408:
        return TransientError(f"{what}: API server answered {status} {message} — retrying next tick",
                              delay=_retry_after(exc))
    if status == 401:
        return TransientError(f"{what}: 401 Unauthorized — the API token expired or is invalid; a fresh one is "
                              "used next tick; check the kubeconfig / EKS access entry if this persists")
    if status == 403:
        return _forbidden(what, message, ref=ref, verb=verb, namespace=namespace)
    if status == 404:
        found = body.get("details")
        details: dict[str, Any] = found if isinstance(found, dict) else {}
        if details.get("kind") == "namespaces":
            return PermanentError(f"{what}: namespace {namespace!r} does not exist — create it "
                                  f"(kubectl create namespace {namespace}) or point the dispatcher at another one")
        return PermanentError(f"{what}: the {ref.kind} CRD ({ref.display}) is not installed — {ref.missing_fix}")
    if status in (400, 422):
        return PermanentError(f"{what}: the API server rejected it: {message} — fix the launch settings or template")
    return PermanentError(f"{what}: API server answered {status} {message}")
