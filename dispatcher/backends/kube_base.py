"""The shared Kubernetes backend: submit / observe / cancel over the official ``kubernetes`` client.

A kind subclasses :class:`KubeBackend` and supplies ``kind``, ``resource`` (group/version/plural
and what to do when the cluster lacks it), ``build(request) -> manifest`` (a pure module-level
function of the kind) and ``progress(obj, context) -> Progress`` (its commented phase table).

Contract details (see ``dispatcher.core.jobs``):

* ``submit``: HTTP 409 on create means "already launched" — success, returns the name.
* ``observe``: one list call per resource per tick, selector ``app.kubernetes.io/managed-by=sweepq``,
  re-checked client-side (some servers and emulators ignore selectors).
* ``cancel``: delete with ``propagationPolicy=Foreground`` — the job stays listed (holding its GPUs in
  the cap accounting) until its pods are gone; 404 is fine.
* API errors become typed errors: 409 (create) ok; 429/5xx/timeouts/401 → ``TransientError``;
  403/404-resource/400/422 → ``PermanentError`` whose message says what to do.

Lists and creates use ``_preload_content=False`` and parse JSON directly: no per-object model
deserialisation, and identical handling of CRDs and built-in kinds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from dispatcher.backends.kube_common import ANNOTATION_GPUS, Progress, as_int, parse_time, render_yaml
from dispatcher.core.errors import PermanentError, SweepqError, TransientError
from dispatcher.core.jobs import (
    LABEL_ATTEMPT,
    LABEL_MANAGED_BY,
    LABEL_SWEEP_ID,
    LABEL_TRIAL_INDEX,
    MANAGED_BY,
    SELECTOR,
    DryRun,
    JobStatus,
    LaunchRequest,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds per API call
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
        return PermanentError(f"{what}: forbidden ({message}) — grant the dispatcher's identity '{verb}' on "
                              f"{ref.display} in namespace {namespace!r} (Role + RoleBinding)")
    if status == 404:
        details = body.get("details") if isinstance(body.get("details"), dict) else {}
        if details.get("kind") == "namespaces":
            return PermanentError(f"{what}: namespace {namespace!r} does not exist — create it "
                                  f"(kubectl create namespace {namespace}) or point the dispatcher at another one")
        return PermanentError(f"{what}: the {ref.kind} CRD ({ref.display}) is not installed — {ref.missing_fix}")
    if status in (400, 422):
        return PermanentError(f"{what}: the API server rejected it: {message} — fix the launch settings or template")
    return PermanentError(f"{what}: API server answered {status} {message}")


class KubeBackend:
    """Base of the Kubernetes kinds; subclasses set ``kind``/``resource`` and implement
    :meth:`build` and :meth:`progress`."""

    kind: str = ""
    resource: ResourceRef

    def __init__(
        self, *, api_client: "ApiClient | None" = None, namespace: str, request_timeout: Any = DEFAULT_TIMEOUT
    ) -> None:
        self.namespace = namespace
        self._api_client = api_client
        self._timeout = request_timeout

    # ---- what a kind supplies

    def build(self, request: LaunchRequest) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:  # pragma: no cover - abstract
        raise NotImplementedError

    def observe_context(self, items: list[dict[str, Any]], ref: ResourceRef) -> Any:
        """Extra reads a kind needs to judge the listed ``items`` of ``ref`` (ElasticJob: their
        pods), handed to :meth:`progress`. Default: none."""
        return None

    def resources(self) -> list[ResourceRef]:
        """The resources ``observe`` lists and ``cancel`` deletes from."""
        return [self.resource]

    def resource_of(self, manifest: Mapping[str, Any]) -> ResourceRef:
        return self.resource

    # ---- the Backend protocol

    @property
    def api_client(self) -> "ApiClient":
        if self._api_client is None:
            from dispatcher.adapters.kube_client import build_api_client

            self._api_client = build_api_client()
        return self._api_client

    def client_for(self, ref: ResourceRef) -> ResourceClient:
        return ResourceClient(self.api_client, ref, timeout=self._timeout)

    def dryrun(self, request: LaunchRequest) -> DryRun:
        if request.namespace != self.namespace:
            raise PermanentError(
                f"namespace: trial namespace {request.namespace!r} differs from the dispatcher's "
                f"{self.namespace!r}, whose jobs it observes — use one namespace for both"
            )
        manifest = self.build(request)
        return DryRun(job_name=request.job_name, kind=self.kind, request=manifest, rendered=render_yaml(manifest))

    def submit(self, dryrun: DryRun) -> str:
        if dryrun.kind != self.kind:
            raise ValueError(f"dry run of kind {dryrun.kind!r} given to the {self.kind!r} backend")
        manifest = dryrun.request
        ref = self.resource_of(manifest)
        namespace = manifest.get("metadata", {}).get("namespace") or self.namespace
        try:
            self.client_for(ref).create(namespace, manifest)
        except Exception as exc:  # noqa: BLE001 - translated below, re-raised when not a client error
            if getattr(exc, "status", None) == 409:
                log.info("%s %s already exists: already launched", ref.kind, dryrun.job_name)
                return dryrun.job_name
            raise self._translate(exc, ref=ref, verb="create", name=dryrun.job_name) from exc
        log.debug("created %s %s/%s", ref.kind, namespace, dryrun.job_name)
        return dryrun.job_name

    def observe(self) -> dict[str, JobStatus]:
        observed: dict[str, JobStatus] = {}
        for ref in self.resources():
            try:
                items = [obj for obj in self.client_for(ref).list(self.namespace, SELECTOR) if _ours(obj)]
            except Exception as exc:  # noqa: BLE001 - translated below
                raise self._translate(exc, ref=ref, verb="list") from exc
            context = self.observe_context(items, ref) if items else None
            for obj in items:
                status = self.job_status(obj, self.progress(obj, context))
                if status is not None:
                    observed[status.name] = status
        return observed

    def watch_streams(self, *, timeout_s: int = 60) -> list[tuple[str, Any]]:
        """``[(resource, stream)]``: each ``stream()`` is one Kubernetes watch on the resource with the
        sweepq selector, yielding events until the server closes it (``timeout_s``). Used by
        ``dispatcher.wake`` to tick within seconds of a job changing; the caller reconnects."""
        from kubernetes import watch

        streams = []
        for ref in self.resources():
            def stream(ref: ResourceRef = ref) -> Any:
                client = self.client_for(ref)
                return watch.Watch().stream(
                    client.list_function(), *client.list_args(self.namespace), label_selector=SELECTOR,
                    timeout_seconds=timeout_s, _request_timeout=(5, timeout_s + 10),
                )
            streams.append((ref.plural, stream))
        return streams

    def cancel(self, name: str) -> None:
        for ref in self.resources():
            try:
                self.client_for(ref).delete(self.namespace, name)
            except Exception as exc:  # noqa: BLE001 - translated below
                if getattr(exc, "status", None) == 404:
                    log.debug("%s %s already gone", ref.kind, name)
                    continue
                raise self._translate(exc, ref=ref, verb="delete", name=name) from exc
            log.info("deleted %s %s/%s", ref.kind, self.namespace, name)

    # ---- helpers

    def _translate(self, exc: BaseException, *, ref: ResourceRef, verb: str, name: str = "") -> SweepqError:
        import urllib3
        from kubernetes.client.exceptions import ApiException

        if isinstance(exc, SweepqError):
            return exc
        if not isinstance(exc, (ApiException, urllib3.exceptions.HTTPError, OSError)):
            raise exc
        return api_error(exc, ref=ref, verb=verb, namespace=self.namespace, name=name)

    def job_status(self, obj: Mapping[str, Any], progress: Progress) -> JobStatus | None:
        metadata = obj.get("metadata") or {}
        labels = metadata.get("labels") or {}
        try:
            return JobStatus(
                name=str(metadata["name"]),
                kind=self.kind,
                sweep_id=str(labels[LABEL_SWEEP_ID]),
                trial_index=int(labels[LABEL_TRIAL_INDEX]),
                attempt=int(labels[LABEL_ATTEMPT]),
                phase=progress.phase,
                gpus=as_int((metadata.get("annotations") or {}).get(ANNOTATION_GPUS)),
                created_at=parse_time(metadata.get("creationTimestamp")),
                started_at=progress.started_at,
                finished_at=progress.finished_at,
                reason=progress.reason,
            )
        except (KeyError, ValueError, TypeError):
            log.warning("skipping %s %r: sweepq labels missing or malformed", self.kind, metadata.get("name"))
            return None


def _ours(obj: Mapping[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return isinstance(labels, Mapping) and labels.get(LABEL_MANAGED_BY) == MANAGED_BY


def first_time(values: Iterable[Any]) -> float | None:
    times = [t for t in (parse_time(v) for v in values) if t is not None]
    return min(times) if times else None


def last_time(values: Iterable[Any]) -> float | None:
    times = [t for t in (parse_time(v) for v in values) if t is not None]
    return max(times) if times else None
