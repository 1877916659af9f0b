"""A Kubernetes API emulator for sweepq tests, reachable over real HTTP by the official client.

It wraps kmock 0.8's ``KubernetesEmulator`` (an in-memory object store behind an aiohttp server)
and closes the gaps that matter for job backends (:class:`SweepqKubeEmulator`):

* ``labelSelector`` on lists is honoured (``k=v``, ``k!=v``, ``k``, ``!k``, ``k in (a,b)``, ``notin``);
* create answers **201** with the stored object (kmock: 200, so the client's ``201: object`` map
  returned ``None``), a duplicate create answers **409 AlreadyExists**, a delete/patch/get of a
  missing object **404 NotFound** — all as ``kind: Status`` bodies like the real API server;
* objects get ``uid``, ``resourceVersion`` (bumped on every write), ``creationTimestamp``,
  ``generation``; **PUT** replaces (409 on a stale resourceVersion); **PATCH** merges, including
  the ``/status`` subresource; delete cascades to objects whose ownerReferences point at it;
* only *installed* resources are served (default: batch/v1 jobs, v1 pods, the PyTorchJob,
  ElasticJob and TrainJob CRDs); others answer 404 like a cluster without the CRD;
* a request counter per ``(verb, plural)``, and fault injection: the next N requests to a
  resource answer 429/500/... or hang (then 504) — for benchmarks and reliability tests.

The server runs in a background thread with its own event loop, so synchronous code (the
dispatcher) talks to it through ``kubernetes.client`` exactly as to a cluster. Use the ``kube``
fixture (registered in ``tests/conftest.py``) or ``with KubeEmulator() as kube:``; one server per
test process is shared and reset before each test.
Helpers: ``kube.api_client``, ``kube.set_job_phase(kind, name, phase)``, ``kube.patch_status``,
``kube.list_objects(kind)``, ``kube.count(verb, kind)``, ``kube.fail_next``, ``kube.hang_next``.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import copy
import datetime as dt
import itertools
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import aiohttp.web
import attrs
import kmock
import pytest

from dispatcher.core.jobs import JobPhase

# Short names → (group, version, plural). Anything else: "group/version/plural" or "v1/plural".
KINDS: dict[str, tuple[str, str, str]] = {
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs"),
    "elasticjob": ("elastic.pytorch.org", "v1alpha1", "elasticjobs"),
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "job": ("batch", "v1", "jobs"),
    "pod": ("", "v1", "pods"),
}
DEFAULT_INSTALLED = ("pytorchjob", "elasticjob", "trainjob", "job", "pod")
REQUEST_LOG_LIMIT = 5000
_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def resolve(kind: str) -> tuple[str, str, str]:
    if kind in KINDS:
        return KINDS[kind]
    parts = kind.split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"unknown kind {kind!r}: use one of {sorted(KINDS)} or 'group/version/plural'")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- label selectors

_SELECTOR_TERM = re.compile(
    r"^(?P<neg>!)?(?P<key>[A-Za-z0-9._/-]+)(?:(?P<op>==|=|!=)(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?$"
)


def selector_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    """A predicate over labels for a Kubernetes label selector string (equality- and set-based)."""
    terms = [t.strip() for t in re.split(r",(?![^(]*\))", selector or "") if t.strip()]
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in terms:
        match = _SELECTOR_TERM.match(term)
        if not match:
            raise ValueError(f"unparsable label selector term {term!r}")
        key, op, value = match["key"], match["op"], match["value"]
        if match["neg"]:
            checks.append(lambda labels, k=key: k not in labels)
        elif op in ("=", "=="):
            checks.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            checks.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif match["set"] == "in":
            values = {v.strip() for v in match["values"].split(",")}
            checks.append(lambda labels, k=key, vs=values: k in labels and labels[k] in vs)
        elif match["set"] == "notin":  # also matches objects without the key, as in Kubernetes
            values = {v.strip() for v in match["values"].split(",")}
            checks.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        else:
            checks.append(lambda labels, k=key: k in labels)
    return lambda labels: all(check(labels) for check in checks)


# --------------------------------------------------------------------------- the HTTP side


def _status(code: int, message: str, *, reason: str | None = None, details: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None) -> aiohttp.web.Response:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason or _REASONS.get(code, "Unknown"), "details": details or {}, "code": code}
    return aiohttp.web.json_response(body, status=code, headers=headers)


@dataclass
class _Fault:
    plural: str
    verb: str | None
    status: int
    hang: float
    remaining: int
    retry_after: float | None


def _verb(request: kmock.Request) -> str | None:
    method, named = str(request.method.value).upper(), request.name is not None
    if method == "GET":
        return "watch" if request.params.get("watch") in ("true", "1") else ("get" if named else "list")
    return {("POST", False): "create", ("PUT", True): "put", ("PATCH", True): "patch",
            ("DELETE", True): "delete"}.get((method, named))


@attrs.define(kw_only=True)
class SweepqKubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the gaps listed in the module docstring closed."""

    installed: set[tuple[str, str, str]] = attrs.field(factory=set)
    honor_selectors: bool = True  # False: behave like servers/tools that ignore labelSelector
    counts: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter, init=False)
    faults: list[_Fault] = attrs.field(factory=list, init=False)
    stopping: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _meta_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _rv: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if len(self._requests) > REQUEST_LOG_LIMIT:  # kmock keeps every request: bound it for benchmarks
            del self._requests[:-REQUEST_LOG_LIMIT // 10]
        resource, verb = request.resource, _verb(request)
        if resource is None or not resource.plural or verb is None:
            return await super()._handle(request)  # discovery, /version, odd verbs
        plural = resource.plural
        with self._meta_lock:
            self.counts[(verb, plural)] += 1
            fault = next((f for f in self.faults if f.plural == plural and f.verb in (None, verb) and f.remaining), None)
            if fault is not None:
                fault.remaining -= 1
        if fault is not None:
            return await self._apply_fault(fault)
        if (resource.group, resource.version, plural) not in self.installed:
            return _status(404, "the server could not find the requested resource")
        if verb == "watch":
            return await super()._handle(request)
        if verb == "list":
            return await self._list(request)
        if verb == "create":
            return await self._create(request)
        return await self._modify(request, verb)

    async def _apply_fault(self, fault: _Fault) -> aiohttp.web.StreamResponse:
        if fault.hang:
            try:
                await asyncio.wait_for(self.stopping.wait(), timeout=fault.hang)
            except asyncio.TimeoutError:
                pass
            return _status(504, "injected hang: the request timed out")
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
        return _status(fault.status, f"injected fault {fault.status}", headers=headers)

    def _key(self, request: kmock.Request, name: str | None = None) -> tuple[Any, str | None, str]:
        return (request.resource, request.namespace, name or request.name or "")

    async def _list(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        try:
            matches = selector_matcher(request.params.get("labelSelector") if self.honor_selectors else None)
        except ValueError as exc:
            return _status(400, str(exc))
        async with self._lock:
            items = [
                copy.deepcopy(obj.raw) for (res, ns, _), obj in self._objects.items()
                if res == request.resource and (request.namespace is None or ns == request.namespace)
                and not obj.deleted and matches((obj.raw.get("metadata") or {}).get("labels") or {})
            ]
        group, version = request.resource.group, request.resource.version
        return aiohttp.web.json_response({
            "apiVersion": f"{group}/{version}" if group else version, "kind": "List",
            "metadata": {"resourceVersion": str(next(self._rv))}, "items": items,
        })

    async def _create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        body = request.data
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            return _status(422, "metadata.name: Required value", reason="Invalid")
        obj = copy.deepcopy(body)
        name = obj["metadata"]["name"]
        key = self._key(request, name)
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                return _status(409, f'{request.resource.plural} "{name}" already exists', reason="AlreadyExists",
                               details={"name": name, "group": request.resource.group, "kind": request.resource.plural})
            obj["metadata"].update({"namespace": request.namespace, "uid": str(uuid.uuid4()),
                                    "resourceVersion": str(next(self._rv)), "generation": 1,
                                    "creationTimestamp": now_rfc3339()})
            self._objects[key] = obj
            await self._buses[request.resource].put({"type": "ADDED", "object": copy.deepcopy(obj)})
        return aiohttp.web.json_response(obj, status=201)

    async def _modify(self, request: kmock.Request, verb: str) -> aiohttp.web.StreamResponse:
        key = self._key(request)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                return _status(404, f'{request.resource.plural} "{request.name}" not found',
                               details={"name": request.name, "kind": request.resource.plural})
            stored = self._objects[key]
            if verb == "get":
                return aiohttp.web.json_response(stored.raw)
            if verb == "delete":
                last = copy.deepcopy(stored.raw)
                stored.delete()
                await self._buses[request.resource].put({"type": "DELETED", "object": last})
                await self._collect_garbage(last["metadata"].get("uid"))
                return aiohttp.web.json_response(last)
            old_meta = stored.raw.get("metadata") or {}
            if verb == "put":
                new = copy.deepcopy(request.data or {})
                sent_rv = (new.get("metadata") or {}).get("resourceVersion")
                if sent_rv and sent_rv != old_meta.get("resourceVersion"):
                    return _status(409, "the object has been modified; please apply your changes to the latest "
                                        "version and try again", reason="Conflict")
                new.setdefault("metadata", {}).update({k: old_meta[k] for k in ("uid", "creationTimestamp",
                                                                                 "namespace", "name") if k in old_meta})
                new["metadata"]["resourceVersion"] = str(next(self._rv))
                stored.create(new)
            else:
                if not isinstance(request.data, dict):
                    return _status(415, "only merge patches are emulated (JSON patch lists are not)",
                                   reason="UnsupportedMediaType")
                stored.patch({**request.data, "metadata": {**(request.data.get("metadata") or {}),
                                                           "resourceVersion": str(next(self._rv))}})
            raw = copy.deepcopy(stored.raw)
            await self._buses[request.resource].put({"type": "MODIFIED", "object": raw})
        return aiohttp.web.json_response(raw)

    async def _collect_garbage(self, owner_uid: str | None) -> None:
        """Delete dependents (ownerReferences → owner_uid), like the garbage collector."""
        if not owner_uid:
            return
        for (res, _, _), obj in list(self._objects.items()):
            if obj.deleted:
                continue
            refs = (obj.raw.get("metadata") or {}).get("ownerReferences") or []
            if any(ref.get("uid") == owner_uid for ref in refs):
                last = copy.deepcopy(obj.raw)
                obj.delete()
                await self._buses[res].put({"type": "DELETED", "object": last})


# --------------------------------------------------------------------------- the sync controller


def kube_api_client(url: str) -> Any:
    """An official ``kubernetes.client.ApiClient`` for the emulator at ``url``."""
    from dispatcher.adapters.kube_client import api_client_from_host

    return api_client_from_host(url)


class KubeEmulator:
    """Runs :class:`SweepqKubeEmulator` on 127.0.0.1 in a background thread; sync helpers."""

    def __init__(self, *, installed: Iterable[str] = DEFAULT_INSTALLED) -> None:
        self._default_installed = tuple(installed)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self.handler: SweepqKubeEmulator | None = None
        self.url = ""
        self._api_client: Any = None

    # ---- lifecycle

    def start(self) -> "KubeEmulator":
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="kube-emulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes emulator did not start within 10 s")
        return self

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        self.handler = SweepqKubeEmulator(installed={resolve(kind) for kind in self._default_installed})
        async with self.handler, kmock.Server(self.handler) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return
        self._loop.call_soon_threadsafe(self.handler.stopping.set)
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        if self._api_client is not None:
            self._api_client.close()
        self._loop = self._thread = None

    def __enter__(self) -> "KubeEmulator":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _run(self, coro: Any) -> Any:
        assert self._loop is not None, "the emulator is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    @property
    def api_client(self) -> Any:
        if self._api_client is None:
            self._api_client = kube_api_client(self.url)
        return self._api_client

    def reset(self) -> None:
        """Forget all objects, counts and faults; reinstall the default resources."""
        async def _reset() -> None:
            async with self.handler._lock:
                self.handler.objects.clear()
                self.handler._requests.clear()
            with self.handler._meta_lock:
                self.handler.counts.clear()
                self.handler.faults.clear()
            self.handler.installed = {resolve(kind) for kind in self._default_installed}
            self.handler.honor_selectors = True
        self._run(_reset())

    # ---- resources and faults

    def install(self, kind: str) -> None:
        self.handler.installed.add(resolve(kind))

    def uninstall(self, kind: str) -> None:
        self.handler.installed.discard(resolve(kind))

    def fail_next(self, kind: str, status: int = 500, *, times: int = 1, verb: str | None = None,
                  retry_after: float | None = None) -> None:
        """The next ``times`` requests (of ``verb``, default any) to ``kind`` answer ``status``."""
        with self.handler._meta_lock:
            self.handler.faults.append(_Fault(resolve(kind)[2], verb, status, 0.0, times, retry_after))

    def hang_next(self, kind: str, seconds: float, *, times: int = 1, verb: str | None = None) -> None:
        """The next ``times`` requests to ``kind`` answer only after ``seconds`` (then 504)."""
        with self.handler._meta_lock:
            self.handler.faults.append(_Fault(resolve(kind)[2], verb, 504, seconds, times, None))

    @property
    def requests(self) -> collections.Counter[tuple[str, str]]:
        """A snapshot: ``{(verb, plural): count}``, verbs list/get/create/put/patch/delete/watch."""
        with self.handler._meta_lock:
            return collections.Counter(self.handler.counts)

    def count(self, verb: str, kind: str) -> int:
        return self.requests[(verb, resolve(kind)[2])]

    def reset_counts(self) -> None:
        with self.handler._meta_lock:
            self.handler.counts.clear()

    # ---- objects

    def _find(self, kind: str, name: str, namespace: str | None) -> tuple[Any, Any]:
        group, version, plural = resolve(kind)
        found = [(key, obj) for key, obj in self.handler.objects.items()
                 if (key[0].group, key[0].version, key[0].plural) == (group, version, plural)
                 and key[2] == name and (namespace is None or key[1] == namespace) and not obj.deleted]
        if len(found) != 1:
            raise LookupError(f"{len(found)} {plural} named {name!r} in namespace {namespace or 'any'}")
        return found[0]

    def list_objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        async def _list() -> list[dict[str, Any]]:
            group, version, plural = resolve(kind)
            async with self.handler._lock:
                return [copy.deepcopy(obj.raw) for key, obj in self.handler.objects.items()
                        if (key[0].group, key[0].version, key[0].plural) == (group, version, plural)
                        and (namespace is None or key[1] == namespace) and not obj.deleted]
        return self._run(_list())

    def get_object(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        async def _get() -> dict[str, Any]:
            async with self.handler._lock:
                return copy.deepcopy(self._find(kind, name, namespace)[1].raw)
        return self._run(_get())

    def put_object(self, kind: str, obj: dict[str, Any], namespace: str) -> None:
        """Store ``obj`` as is (e.g. a foreign object, or pods an operator would create)."""
        async def _put() -> None:
            async with self.handler._lock:
                self.handler.objects[kmock.resource(*resolve(kind)), namespace, obj["metadata"]["name"]] = \
                    copy.deepcopy(obj)
        self._run(_put())

    def patch_status(self, kind: str, name: str, status: dict[str, Any], namespace: str | None = None) -> None:
        """Merge ``status`` into the object's status (lists are replaced, ``None`` removes a key) — over
        HTTP, as an operator writes it, so watches see a MODIFIED event (not counted as a request)."""
        from kubernetes.client import CustomObjectsApi

        group, version, plural = resolve(kind)
        key, _ = self._find(kind, name, namespace)
        CustomObjectsApi(self.api_client).patch_namespaced_custom_object_status(
            group, version, key[1], plural, name, {"status": status})
        with self.handler._meta_lock:
            self.handler.counts[("patch", plural)] -= 1

    def set_job_phase(self, kind: str, name: str, phase: JobPhase | str, *, reason: str = "",
                      namespace: str | None = None) -> None:
        """Write what the kind's operator would write for ``phase``: status conditions/counters for
        pytorchjob, trainjob and job (:func:`job_status_patch`); worker pods for elasticjob
        (:func:`worker_pods`), whose own status the TorchElastic controller leaves stale."""
        phase = JobPhase(phase)
        job = self.get_object(kind, name, namespace)
        if kind == "elasticjob":
            self.patch_status(kind, name, {"conditions": [_condition("Created", "ElasticJobCreated")]}, namespace)
            for pod in worker_pods(job, phase, reason=reason):
                self.put_object("pod", pod, job["metadata"]["namespace"])
        else:
            self.patch_status(kind, name, job_status_patch(kind, phase, reason=reason), namespace)


# --------------------------------------------------------------------------- what operators write


def _condition(kind: str, reason: str = "", message: str = "", status: str = "True") -> dict[str, str]:
    now = now_rfc3339()
    return {"type": kind, "status": status, "reason": reason or kind, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now}


def job_status_patch(kind: str, phase: JobPhase, *, reason: str = "") -> dict[str, Any]:
    """The status a PyTorchJob / batch Job / TrainJob shows in ``phase`` (their controllers' shapes)."""
    now = now_rfc3339()
    if kind == "pytorchjob":
        created, running = _condition("Created", "PyTorchJobCreated"), _condition("Running", "PyTorchJobRunning")
        ended = {**running, "status": "False"}
        return {
            JobPhase.PENDING: {"conditions": [created]},
            JobPhase.RUNNING: {"conditions": [created, running], "startTime": now},
            JobPhase.SUCCEEDED: {"conditions": [created, ended, _condition("Succeeded", "PyTorchJobSucceeded")],
                                 "startTime": now, "completionTime": now},
            JobPhase.FAILED: {"conditions": [created, ended, _condition("Failed", reason or "PyTorchJobFailed",
                                                                        "PyTorchJob failed")],
                              "startTime": now, "completionTime": now},
        }[phase]
    if kind == "job":
        return {
            JobPhase.PENDING: {"active": 1, "ready": 0},
            JobPhase.RUNNING: {"active": 1, "ready": 1, "startTime": now},
            JobPhase.SUCCEEDED: {"active": 0, "ready": 0, "succeeded": 1, "startTime": now, "completionTime": now,
                                 "conditions": [_condition("Complete")]},
            JobPhase.FAILED: {"active": 0, "ready": 0, "failed": 1, "startTime": now, "conditions": [
                _condition("Failed", reason or "BackoffLimitExceeded", "Job has reached the specified backoff limit")]},
        }[phase]
    if kind == "trainjob":
        def jobs(ready: int, active: int, succeeded: int, failed: int) -> list[dict[str, Any]]:
            return [{"name": "node", "ready": ready, "active": active, "succeeded": succeeded, "failed": failed,
                     "suspended": 0}]
        return {
            JobPhase.PENDING: {"jobsStatus": jobs(0, 1, 0, 0)},
            JobPhase.RUNNING: {"jobsStatus": jobs(1, 1, 0, 0)},
            JobPhase.SUCCEEDED: {"jobsStatus": jobs(0, 0, 1, 0),
                                 "conditions": [_condition("Complete", "JobsCompleted", "TrainJob completed")]},
            JobPhase.FAILED: {"jobsStatus": jobs(0, 0, 0, 1),
                              "conditions": [_condition("Failed", reason or "JobsFailed", "TrainJob failed")]},
        }[phase]
    raise ValueError(f"no status emulation for kind {kind!r}")


def worker_pods(job: dict[str, Any], phase: JobPhase, *, reason: str = "") -> list[dict[str, Any]]:
    """The worker pods the TorchElastic controller would run for ``job`` in ``phase``."""
    worker = job["spec"]["replicaSpecs"]["Worker"]
    meta, now = job["metadata"], now_rfc3339()
    pod_phase = {JobPhase.PENDING: "Pending", JobPhase.RUNNING: "Running",
                 JobPhase.SUCCEEDED: "Succeeded", JobPhase.FAILED: "Failed"}[phase]
    status: dict[str, Any] = {"phase": pod_phase}
    if phase is not JobPhase.PENDING:
        status["startTime"] = now
    if phase.terminal:
        code = 0 if phase is JobPhase.SUCCEEDED else 1
        status["containerStatuses"] = [{"name": "worker", "state": {"terminated": {
            "exitCode": code, "reason": reason or ("Completed" if code == 0 else "Error"), "finishedAt": now}}}]
    return [{
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"{meta['name']}-worker-{index}", "namespace": meta["namespace"],
                     "uid": str(uuid.uuid4()), "creationTimestamp": now,
                     "labels": dict(worker["template"]["metadata"].get("labels") or {}),
                     "ownerReferences": [{"apiVersion": job["apiVersion"], "kind": job["kind"], "name": meta["name"],
                                          "uid": meta.get("uid", ""), "controller": True}]},
        "status": copy.deepcopy(status),
    } for index in range(int(worker.get("replicas") or 1))]


# --------------------------------------------------------------------------- pytest

_shared: KubeEmulator | None = None
_shared_lock = threading.Lock()


def shared_emulator() -> KubeEmulator:
    """One emulator per test process (started on first use, stopped at exit)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = KubeEmulator().start()
            atexit.register(_shared.stop)
        return _shared


@pytest.fixture
def kube() -> Iterator[KubeEmulator]:
    """A clean emulator (no objects, counts or faults; default CRDs installed) over HTTP."""
    emulator = shared_emulator()
    emulator.reset()
    yield emulator
