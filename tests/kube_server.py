"""The HTTP side of the Kubernetes API emulator (see tests/kube_emulator.py for the whole picture).

:class:`SweepqKubeEmulator` is kmock 0.8's ``KubernetesEmulator`` with the gaps that matter for
job backends closed: label selectors, real status codes and ``Status`` bodies, server-set
metadata, PUT/PATCH semantics, owner-reference garbage collection, installed resources, request
counts and fault injection — plus what a real cluster does on create that an in-memory store
does not:

* **list items as a real API server sends them** — items of a built-in kind's list (batch Jobs,
  pods) carry no ``kind``/``apiVersion``; a CRD's do;
* **upstream validation** — a create or replace of a batch Job, PyTorchJob, TrainJob or
  ClusterTrainingRuntime that upstream's own models or webhooks reject (``upstream_models``:
  an unknown field, a wrong type, a TrainJob patching a job its runtime lacks) answers **422
  Invalid** with the problems, as the API server and the operators' webhooks would; a TrainJob
  whose ClusterTrainingRuntime is not installed answers **403** like Trainer's webhook (a
  controller-runtime webhook's denial is 403 Forbidden, ``admission webhook "…" denied the
  request: …``);
* **Kueue** (``kube_kueue``, when installed by the test) — its webhook suspends labelled jobs on
  create, and its controllers react after every write.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import itertools
import re
import threading
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import aiohttp.web
import attrs
import kmock
from kube_kueue import KueueSim
from kube_status import now_rfc3339
from upstream_models import problems

_REASONS = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 415: "UnsupportedMediaType",
            422: "Invalid", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}
REQUEST_LOG_LIMIT = 5000
# API groups served by the API server itself (not CRDs). Their list responses are encoded as
# typed lists whose items carry no ``kind``/``apiVersion`` (kubernetes/kubernetes#3030; the
# python client's ``V1JobList.items[i].kind`` is ``None``); a CRD's list items keep theirs.
BUILTIN_GROUPS = frozenset({"", "batch", "apps", "policy", "networking.k8s.io", "rbac.authorization.k8s.io"})
VALIDATED = {("batch", "jobs"), ("kubeflow.org", "pytorchjobs"), ("trainer.kubeflow.org", "trainjobs"),
             ("trainer.kubeflow.org", "clustertrainingruntimes")}


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
        return "watch" if request.params.get("watch") == "true" else ("get" if named else "list")
    return {("POST", False): "create", ("PUT", True): "put", ("PATCH", True): "patch",
            ("DELETE", True): "delete"}.get((method, named))


@attrs.define(kw_only=True)
class SweepqKubeEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the gaps listed in the module docstring closed."""

    installed: set[tuple[str, str, str]] = attrs.field(factory=set)
    honor_selectors: bool = True  # False: behave like servers/tools that ignore labelSelector
    validate: bool = True  # False: accept what upstream would reject (to test sweepq's own 422 handling)
    runtimes: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # ClusterTrainingRuntimes by name
    kueue: KueueSim | None = None
    counts: collections.Counter[tuple[str, str]] = attrs.field(factory=collections.Counter, init=False)
    faults: list[_Fault] = attrs.field(factory=list, init=False)
    stopping: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _meta_lock: threading.Lock = attrs.field(factory=threading.Lock, init=False)
    _rv: Iterator[int] = attrs.field(factory=lambda: itertools.count(1000), init=False)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        # The API server parses bools with Go's ParseBool (kubernetes<36 sends watch=True, 36+
        # watch=true); kmock knows only "true": normalise before it parses the request.
        watch = raw_request.query.get("watch")
        if watch is not None and watch != "true" and watch.lower() in ("true", "1", "t"):
            raw_request = raw_request.clone(rel_url=raw_request.rel_url.update_query(watch="true"))
        return await super().__call__(raw_request)

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
        if group in BUILTIN_GROUPS:  # a JobList's / PodList's items carry no kind/apiVersion
            for item in items:
                item.pop("kind", None)
                item.pop("apiVersion", None)
        return aiohttp.web.json_response({
            "apiVersion": f"{group}/{version}" if group else version, "kind": "List",
            "metadata": {"resourceVersion": str(next(self._rv))}, "items": items,
        })

    def _invalid(self, request: kmock.Request, body: dict[str, Any]) -> aiohttp.web.StreamResponse | None:
        """422 for what upstream rejects (see the module docstring), else ``None``."""
        resource = request.resource
        if not self.validate or (resource.group, resource.plural) not in VALIDATED:
            return None
        runtime = None
        if body.get("kind") == "TrainJob":
            ref = ((body.get("spec") or {}).get("runtimeRef") or {}).get("name")
            runtime = self.runtimes.get(str(ref))
            if runtime is None:  # Trainer's webhook (controller-runtime: a denial is 403 Forbidden)
                return _status(403, f'admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: '
                                    f'spec.runtimeRef: clustertrainingruntime "{ref}" not found: specified '
                                    "clusterTrainingRuntime must be created before the TrainJob is created")
        found = problems(body, runtime=runtime)
        if found:
            return _status(422, f'{body.get("kind")} "{(body.get("metadata") or {}).get("name")}" is invalid: '
                                + "; ".join(found), reason="Invalid")
        return None

    async def _publish(self, resource: Any, event: str, obj: dict[str, Any]) -> None:
        await self._buses[resource].put({"type": event, "object": obj})

    async def _after_write(self) -> None:
        """Controllers that react to writes (Kueue); the store's lock is held."""
        if self.kueue is not None:
            await self.kueue.reconcile()

    async def _create(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        body = request.data
        if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
            return _status(422, "metadata.name: Required value", reason="Invalid")
        invalid = self._invalid(request, body)
        if invalid is not None:
            return invalid
        obj = copy.deepcopy(body)
        name = obj["metadata"]["name"]
        key = self._key(request, name)
        async with self._lock:
            if key in self._objects and not self._objects[key].deleted:
                return _status(409, f'{request.resource.plural} "{name}" already exists', reason="AlreadyExists",
                               details={"name": name, "group": request.resource.group, "kind": request.resource.plural})
            if self.kueue is not None:
                self.kueue.mutate(request.resource, obj)  # Kueue's mutating webhook
            obj["metadata"].update({"namespace": request.namespace, "uid": str(uuid.uuid4()),
                                    "resourceVersion": str(next(self._rv)), "generation": 1,
                                    "creationTimestamp": now_rfc3339()})
            self._objects[key] = obj
            await self._publish(request.resource, "ADDED", copy.deepcopy(obj))
            response = copy.deepcopy(obj)  # what the API server answers: the object as admitted
            await self._after_write()
        return aiohttp.web.json_response(response, status=201)

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
                await self._after_write()
                return aiohttp.web.json_response(last)
            old_meta = stored.raw.get("metadata") or {}
            if verb == "put":
                new = copy.deepcopy(request.data or {})
                invalid = self._invalid(request, new)
                if invalid is not None:
                    return invalid
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
            await self._after_write()
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


