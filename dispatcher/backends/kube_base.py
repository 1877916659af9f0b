"""The shared Kubernetes backend: submit / observe / cancel over the official ``kubernetes`` client.

A kind subclasses :class:`KubeBackend` and supplies ``kind``, ``resource`` (group/version/plural
and what to do when the cluster lacks it), ``build(request) -> manifest`` (a pure module-level
function of the kind) and ``progress(obj, context) -> Progress`` (its commented phase table).

Contract details (see ``dispatcher.core.jobs``):

* ``submit``: HTTP 409 on create means "already launched" — success, returns the name.
* ``observe``: one list call per resource per tick, selector ``app.kubernetes.io/managed-by=sweepq``,
  re-checked client-side (some servers and emulators ignore selectors). Then at most two more,
  each only when needed, never one per job: the namespace's Kueue Workloads when a listed job
  carries a queue label or is suspended (:mod:`dispatcher.backends.kueue`: ``JobStatus.admission``), and the
  kind's pods when a job failed (its cause is read once and remembered) or has been pending more
  than ``pending_detail_after_s`` outside Kueue's queue (:mod:`dispatcher.backends.kube_pods`:
  ``JobStatus.detail``). Neither extra read can fail the tick: without it the status is plainer.
* ``cancel``: delete with ``propagationPolicy=Foreground`` — the job stays listed (holding its GPUs in
  the cap accounting) until its pods are gone; 404 is fine.
* API errors become typed errors: 409 (create) ok; 429/5xx/timeouts/401 → ``TransientError``;
  403/404-resource/400/422 → ``PermanentError`` whose message says what to do.

The resource plumbing (``ResourceRef``, ``ResourceClient``, error translation) lives in
:mod:`dispatcher.backends.kube_resource`.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from dispatcher.backends import kueue
from dispatcher.backends.kube_common import (
    ANNOTATION_GPUS,
    LABEL_JOB_NAME,
    LABEL_KIND,
    Progress,
    as_int,
    parse_time,
    render_yaml,
)
from dispatcher.backends.kube_options import JobOptions, PriorityClasses
from dispatcher.backends.kube_pods import job_detail
from dispatcher.backends.kube_resource import PODS, ResourceClient, ResourceRef, api_error, workloads_ref
from dispatcher.core.errors import PermanentError, SweepqError
from dispatcher.core.jobs import (
    LABEL_ATTEMPT,
    LABEL_MANAGED_BY,
    LABEL_SWEEP_ID,
    LABEL_TRIAL_INDEX,
    MANAGED_BY,
    SELECTOR,
    Admission,
    DryRun,
    JobPhase,
    JobStatus,
    LaunchRequest,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = (5.0, 30.0)  # (connect, read) seconds per API call
PENDING_DETAIL_AFTER_S = 60.0  # a job pending this long outside Kueue's queue gets its pods' cause


class KubeBackend(abc.ABC):
    """Base of the Kubernetes kinds; subclasses set ``kind``/``resource`` and implement
    :meth:`build` and :meth:`progress`."""

    kind: str = ""
    resource: ResourceRef

    def __init__(
        self, *, api_client: "ApiClient | None" = None, namespace: str, request_timeout: Any = DEFAULT_TIMEOUT,
        termination_grace_s: int | None = None, run_as_user: int | None = None, run_as_group: int | None = None,
        kueue_priority_classes: PriorityClasses = None,
        pending_detail_after_s: float = PENDING_DETAIL_AFTER_S, clock: Callable[[], float] = time.time,
    ) -> None:
        """Options every kind takes: see :class:`~dispatcher.backends.kube_options.JobOptions` for
        ``termination_grace_s`` (``SWEEPQ_TERMINATION_GRACE_S``), ``run_as_user``/``run_as_group``
        and ``kueue_priority_classes``; ``pending_detail_after_s`` and ``clock`` for pod causes."""
        self.namespace = namespace
        self._api_client = api_client
        self._timeout = request_timeout
        self.options = JobOptions.build(termination_grace_s=termination_grace_s, run_as_user=run_as_user,
                                        run_as_group=run_as_group, kueue_priority_classes=kueue_priority_classes)
        self.pending_detail_after_s = pending_detail_after_s
        self._clock = clock
        self._workloads = kueue.WorkloadReader(self._list_workloads)
        self._causes: dict[str, str] = {}  # uid/name of a failed job → its pods' cause (never changes)

    # ---- what a kind supplies

    @abc.abstractmethod
    def build(self, request: LaunchRequest) -> dict[str, Any]:
        """The manifest of one job of this kind."""

    @abc.abstractmethod
    def progress(self, obj: Mapping[str, Any], context: Any) -> Progress:
        """Where one listed job of this kind stands (phase, detail)."""

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
        now = self._clock()
        seen: set[str] = set()
        for ref in self.resources():
            try:
                items = [obj for obj in self.client_for(ref).list(self.namespace, SELECTOR) if _ours(obj)]
            except Exception as exc:  # noqa: BLE001 - translated below
                raise self._translate(exc, ref=ref, verb="list") from exc
            context = self.observe_context(items, ref) if items else None
            jobs = [(obj, status) for obj in items
                    if (status := self.job_status(obj, self.progress(obj, context))) is not None]
            jobs = self._with_admission(jobs, ref, now)
            for status in self._with_causes(jobs, context, now, seen):
                observed[status.name] = status
        for gone in set(self._causes) - seen:  # the cache holds only jobs still listed
            del self._causes[gone]
        return observed

    def pods_of(self, context: Any) -> dict[str, list[dict[str, Any]]] | None:
        """The pods a kind already listed for its phase, by job name (ElasticJob), else ``None``."""
        return None

    def _list_workloads(self, version: str) -> list[dict[str, Any]]:
        return self.client_for(workloads_ref(version)).list(self.namespace, "")

    def _with_admission(self, jobs: list[tuple[dict[str, Any], JobStatus]], ref: ResourceRef,
                        now: float) -> list[tuple[dict[str, Any], JobStatus]]:
        """Kueue's view of the jobs it may hold — those with a queue label, and any suspended one
        (sweepq never creates a job suspended: Kueue did) —: one Workload list for all of them.
        Workloads are matched by owner (``ref.kind``, name): list items of built-in kinds carry
        no ``kind``."""
        if not any(kueue.queue_of(obj) or kueue.suspended(obj) for obj, _ in jobs):
            return jobs
        workloads = self._workloads.read()
        owners = kueue.workloads_by_owner(workloads or [])
        result = []
        for obj, status in jobs:
            age = now - status.created_at if status.created_at is not None else None
            view = kueue.admission_of(obj, owners.get((ref.kind, status.name)), workloads_read=workloads is not None,
                                      age_s=age)
            phase, failed = kueue.apply_admission(status.phase, view)
            waiting = view.admission is not None and view.admission.waiting and not failed
            status = dataclasses.replace(
                status, admission=view.admission, admitted_at=view.admitted_at, detail=view.detail, phase=phase,
                reason=failed or status.reason,
                started_at=None if waiting and view.admission is not Admission.EVICTED else status.started_at,
                finished_at=(view.failed_at or status.finished_at or self._clock()) if failed else status.finished_at)
            result.append((obj, status))
        return result

    def _with_causes(self, jobs: list[tuple[dict[str, Any], JobStatus]], context: Any, now: float,
                     seen: set[str]) -> list[JobStatus]:
        """``detail`` from the pods of failed jobs and of jobs pending a while (one pods list) — a
        pending job with none gets that said; adds the cache key of every job to ``seen``."""
        def key(obj: Mapping[str, Any], status: JobStatus) -> str:
            return str((obj.get("metadata") or {}).get("uid") or status.name)

        def wants_pods(obj: Mapping[str, Any], status: JobStatus) -> bool:
            if status.phase is JobPhase.FAILED:
                return key(obj, status) not in self._causes
            if status.phase is not JobPhase.PENDING or (status.admission is not None and status.admission.waiting):
                return False  # a job Kueue holds has no pods
            since = status.admitted_at or status.created_at
            return since is not None and now - since >= self.pending_detail_after_s

        pods = self.pods_of(context)
        if pods is None and any(wants_pods(obj, status) for obj, status in jobs):
            pods = self._list_pods()
        result = []
        for obj, status in jobs:
            cache_key = key(obj, status)
            seen.add(cache_key)
            detail = self._causes.get(cache_key, "")
            if cache_key not in self._causes and pods is not None and wants_pods(obj, status):
                mine = pods.get(status.name, [])
                detail = job_detail(mine)
                if status.phase is JobPhase.FAILED:  # terminal: read its pods once, even if none are left
                    self._causes[cache_key] = detail
                elif not mine:
                    detail = self._no_pods(obj, status, now)
            if detail:
                status = dataclasses.replace(status, detail=f"{status.detail}; {detail}" if status.detail else detail)
            result.append(status)
        return result

    def _no_pods(self, obj: Mapping[str, Any], status: JobStatus, now: float) -> str:
        """A job pending a while without a single pod: its controller cannot create them, and says
        why only in its events (not read: one more list per tick and RBAC on events)."""
        since = status.admitted_at or status.created_at or now
        kind = str(obj.get("kind") or self.resource_of(obj).kind).lower()
        return (f"no pods after {int(now - since)} s: the {self.kind} controller cannot create them (Pod Security or "
                "the admission policy refusing them, a ServiceAccount that does not exist, a full ResourceQuota) — "
                f"kubectl -n {self.namespace} describe {kind} {status.name} shows why")

    def _list_pods(self) -> dict[str, list[dict[str, Any]]] | None:
        """This kind's sweepq pods by job name, or ``None`` when they cannot be read (logged)."""
        try:
            items = self.client_for(PODS).list(self.namespace, f"{SELECTOR},{LABEL_KIND}={self.kind}")
        except Exception as exc:  # noqa: BLE001 - causes are optional: the status stays without them
            log.warning("%s: pods unreadable, no failure causes this tick (%s)", self.kind,
                        getattr(exc, "status", "") or type(exc).__name__)
            return None
        by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for pod in items:
            labels = (pod.get("metadata") or {}).get("labels") or {}
            if labels.get(LABEL_MANAGED_BY) == MANAGED_BY and labels.get(LABEL_JOB_NAME):
                by_job[str(labels[LABEL_JOB_NAME])].append(pod)
        return by_job

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
