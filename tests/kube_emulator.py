"""A Kubernetes API emulator for sweepq tests, reachable over real HTTP by the official client.

Three parts:

* ``kube_server.SweepqKubeEmulator`` — the HTTP side: kmock 0.8's in-memory ``KubernetesEmulator``
  with label selectors, real status codes (201 create, 409 AlreadyExists, 404 NotFound as
  ``Status`` bodies), server-set metadata, PUT/PATCH (incl. ``/status``), owner-reference garbage
  collection, only *installed* resources served (default: batch/v1 jobs, v1 pods, the PyTorchJob,
  ElasticJob and TrainJob CRDs), request counts per ``(verb, plural)`` and fault injection; and
  **upstream validation**: a batch Job, PyTorchJob or TrainJob that upstream's own models or
  webhooks reject is refused with 422 (``upstream_models``), so no test can pass on a manifest a
  real cluster would mangle. A TrainJob needs its ClusterTrainingRuntime: ``torch-distributed``
  (upstream's default shape) and sweepq's ``sweepq-torch-distributed`` are installed.
* ``kube_status`` — what the operators and the kubelet write (job statuses, pods and their
  failure states); ``kube_kueue`` — Kueue's webhook, Workloads, quota admission, eviction.
* this module — :class:`KubeEmulator`, running the server on 127.0.0.1 in a background thread
  with its own event loop, so synchronous code (the dispatcher) talks to it through
  ``kubernetes.client`` exactly as to a cluster; the ``kube`` fixture (one server per test
  process, reset before each test).

Helpers: ``kube.api_client``, ``kube.set_job_phase(kind, name, phase)``, ``kube.put_pods``,
``kube.patch_status``, ``kube.list_objects(kind)``, ``kube.count(verb, kind)``, ``kube.fail_next``,
``kube.hang_next``, ``kube.kueue`` (``install``, ``evict``, ``admitted``, ... see ``kube_kueue``).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import copy
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator

import kmock
import pytest
import yaml
from kube_kueue import GROUP as KUEUE_GROUP
from kube_kueue import KueueConfig, KueueSim, Quota, config_from_manifests
from kube_server import SweepqKubeEmulator, _Fault, selector_matcher  # noqa: F401 - re-exported for tests
from kube_status import condition, job_pods, job_status_patch, running, worker_pods  # noqa: F401 - re-exported

from dispatcher.core.jobs import JobPhase

# Short names → (group, version, plural). Anything else: "group/version/plural" or "v1/plural".
KINDS: dict[str, tuple[str, str, str]] = {
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs"),
    "elasticjob": ("elastic.pytorch.org", "v1alpha1", "elasticjobs"),
    "trainjob": ("trainer.kubeflow.org", "v1alpha1", "trainjobs"),
    "job": ("batch", "v1", "jobs"),
    "pod": ("", "v1", "pods"),
    "workload": (KUEUE_GROUP, "v1beta2", "workloads"),
}
DEFAULT_INSTALLED = ("pytorchjob", "elasticjob", "trainjob", "job", "pod")
SUSPEND_PATHS = {"job": ("spec", "suspend"), "trainjob": ("spec", "suspend"),
                 "pytorchjob": ("spec", "runPolicy", "suspend")}
ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RUNTIME = ROOT / "infra" / "k8s" / "components" / "trainjob-runtime" / "runtime.yaml"


def upstream_torch_runtime() -> dict[str, Any]:
    """The shape of upstream's ``torch-distributed`` ClusterTrainingRuntime that a TrainJob can see
    (a ``node`` replicated job with a ``node`` container, the trainer ancestor label)."""
    return {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "ClusterTrainingRuntime",
            "metadata": {"name": "torch-distributed", "labels": {"trainer.kubeflow.org/framework": "torch"}},
            "spec": {"mlPolicy": {"numNodes": 1, "torch": {}}, "template": {"spec": {"replicatedJobs": [{
                "name": "node", "template": {
                    "metadata": {"labels": {"trainer.kubeflow.org/trainjob-ancestor-step": "trainer"}},
                    "spec": {"template": {"spec": {"containers": [{"name": "node", "image": "pytorch/pytorch"}]}}}}}]}}}}


def default_runtimes() -> dict[str, dict[str, Any]]:
    shipped = yaml.safe_load(SHIPPED_RUNTIME.read_text())
    return {"torch-distributed": upstream_torch_runtime(), shipped["metadata"]["name"]: shipped}


def resolve(kind: str) -> tuple[str, str, str]:
    if kind in KINDS:
        return KINDS[kind]
    parts = kind.split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"unknown kind {kind!r}: use one of {sorted(KINDS)} or 'group/version/plural'")


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
        self.handler = SweepqKubeEmulator(installed={resolve(kind) for kind in self._default_installed},
                                          runtimes=default_runtimes())
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
            self.handler.validate = True
            self.handler.runtimes = default_runtimes()
            self.handler.kueue = None
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

    def run_locked(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run coroutine function ``function(*args)`` on the server loop with the store's lock held."""
        async def _locked() -> Any:
            async with self.handler._lock:
                return await function(*args, **kwargs)
        return self._run(_locked())

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
        pytorchjob, trainjob and job (:func:`job_status_patch`), and for a running trainjob its
        pods (one per node, the ``node`` container running); worker pods for elasticjob
        (:func:`worker_pods`), whose own status the TorchElastic controller leaves stale."""
        phase = JobPhase(phase)
        job = self.get_object(kind, name, namespace)
        path = SUSPEND_PATHS.get(kind, ())
        suspended = job
        for key in path:
            suspended = suspended.get(key) or {} if isinstance(suspended, dict) else {}
        if path and suspended is True and phase is not JobPhase.PENDING:
            raise AssertionError(f"{kind} {name} is suspended (waiting for Kueue): it has no pods, so it cannot be "
                                 f"{phase.value} — admit it first (kube.kueue)")
        if kind == "elasticjob":
            self.patch_status(kind, name, {"conditions": [condition("Created", "ElasticJobCreated")]}, namespace)
            for pod in worker_pods(job, phase, reason=reason):
                self.put_object("pod", pod, job["metadata"]["namespace"])
        else:
            self.patch_status(kind, name, job_status_patch(kind, phase, reason=reason), namespace)
            if kind == "trainjob" and phase is JobPhase.RUNNING:  # the JobSet's pods, one per node, running
                nodes = int(((job.get("spec") or {}).get("trainer") or {}).get("numNodes") or 1)
                for pod in job_pods(job, [running("node")] * nodes):
                    self.put_object("pod", pod, job["metadata"]["namespace"])

    def put_pods(self, kind: str, name: str, statuses: Iterable[dict[str, Any]], namespace: str | None = None) -> \
            list[dict[str, Any]]:
        """Store the pods the kind's operator and the kubelet would show for job ``name``: one per
        pod status (``kube_status.oom_killed(...)``, ``image_pull_backoff(...)``, ...)."""
        job = self.get_object(kind, name, namespace)
        pods = job_pods(job, statuses)
        for pod in pods:
            self.put_object("pod", pod, job["metadata"]["namespace"])
        return pods

    def add_runtime(self, runtime: dict[str, Any]) -> None:
        """Install a ClusterTrainingRuntime the TrainJobs may reference (validated like any create)."""
        from upstream_models import check

        check(runtime)
        self.handler.runtimes[runtime["metadata"]["name"]] = copy.deepcopy(runtime)

    @property
    def kueue(self) -> "KueueControl":
        return KueueControl(self)


class KueueControl:
    """``kube.kueue``: install Kueue in the emulator and drive it (see ``kube_kueue``)."""

    def __init__(self, kube: KubeEmulator) -> None:
        self._kube = kube

    @property
    def sim(self) -> KueueSim:
        sim = self._kube.handler.kueue
        assert sim is not None, "Kueue is not installed: call kube.kueue.install(...) first"
        return sim

    def install(self, *, queues: dict[str, int | Quota], priority_classes: dict[str, int] | None = None,
                frameworks: Iterable[str] | None = None, preemption: bool = False, version: str = "v1beta2",
                manage_jobs_without_queue_name: bool = False, trainer_types: str | None = None) -> None:
        """Kueue with LocalQueues ``{name: max admitted jobs | Quota(jobs=, gpus=)}``, WorkloadPriority-
        Classes ``{name: value}``, the integrations ``frameworks`` (default: Kueue's), the Workload
        API ``version`` it serves, ``manageJobsWithoutQueueName`` and the Trainer API types its
        TrainJob integration is built against (``trainer_types``, default Kueue v0.19's v2.2.1)."""
        config = KueueConfig(queues={name: q if isinstance(q, Quota) else Quota(jobs=q) for name, q in queues.items()},
                             priority_classes=dict(priority_classes or {}), preemption=preemption, version=version,
                             manage_jobs_without_queue_name=manage_jobs_without_queue_name)
        if trainer_types is not None:
            config.trainer_types = trainer_types
        if frameworks is not None:
            config.frameworks = frozenset(frameworks)
        self._start(config)

    def install_from(self, objects: list[dict[str, Any]]) -> None:
        """Kueue configured from shipped manifests (ClusterQueues, LocalQueues, WorkloadPriorityClasses)."""
        self._start(config_from_manifests(objects))

    def _start(self, config: KueueConfig) -> None:
        handler = self._kube.handler
        handler.installed.add((KUEUE_GROUP, config.version, "workloads"))
        handler.kueue = KueueSim(handler.objects, handler._publish, config)
        self._kube.run_locked(handler.kueue.reconcile)

    def set_quota(self, queue: str, jobs: int | None = None, gpus: int | None = None) -> None:
        self.sim.config.queues[queue] = Quota(jobs=jobs, gpus=gpus)
        self._kube.run_locked(self.sim.reconcile)

    def evict(self, job_name: str, reason: str = "Preempted", *, requeue: bool = True) -> None:
        """Evict the job's Workload (``requeue=False``: it waits until :meth:`requeue`)."""
        self._kube.run_locked(self.sim.evict, job_name, reason, requeue=requeue)

    def requeue(self, job_name: str) -> None:
        self._kube.run_locked(self.sim.requeue, job_name)

    def deactivate(self, job_name: str) -> None:
        self._kube.run_locked(self.sim.deactivate, job_name)

    def workload(self, job_name: str) -> dict[str, Any]:
        async def _get() -> dict[str, Any]:
            return copy.deepcopy(self.sim.workload_of(job_name).raw)
        return self._kube.run_locked(_get)

    def admitted(self) -> list[str]:
        """Names of the jobs whose Workload is admitted (unfinished), sorted."""
        async def _names() -> list[str]:
            return self.sim.job_names(admitted=True)
        return self._kube.run_locked(_names)

    def waiting(self) -> list[str]:
        """Names of the jobs whose Workload waits (for quota, a requeue, or deactivated), sorted."""
        async def _names() -> list[str]:
            return self.sim.job_names(admitted=False)
        return self._kube.run_locked(_names)

    @property
    def events(self) -> list[str]:
        return list(self.sim.events)


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
