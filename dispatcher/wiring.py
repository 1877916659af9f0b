"""The composition root: build clients, adapters and backends from :class:`Settings`.

Entry points (CLI, Lambda handler, CronJob) call :func:`build_dispatcher`; tests build a
:class:`~dispatcher.tick.Dispatcher` directly with their own clients.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from dispatcher.adapters.queue import Queue, resolve_queue_url
from dispatcher.adapters.store import Store
from dispatcher.core.jobs import Backend
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher


def build_api_client(settings: Settings, session: Any) -> Any:
    """EKS (``SWEEPQ_CLUSTER_NAME``: DescribeCluster + presigned STS token) > kubeconfig > in-cluster."""
    from dispatcher.adapters import kube_client

    if settings.cluster_name:
        return kube_client.eks_api_client(
            settings.cluster_name, eks_client=session.client("eks"), sts_client=session.client("sts")
        )
    return kube_client.build_api_client()


def backend_options(kind: str, settings: Settings) -> dict[str, Any]:
    """Per-kind constructor options derived from the settings (also used by ``submit --dry-run``)."""
    if kind == "local":
        return {"state_dir": settings.state_dir, "slots": settings.local_slots}
    ttl = {"ttl_seconds": settings.job_ttl_s or None}
    if kind == "elasticjob":
        return {"rdzv_endpoint": settings.etcd_endpoint, **ttl}
    if kind == "trainjob":
        return {"runtime": settings.trainjob_runtime}  # TrainJob has no TTL field
    if kind == "template":
        return {"resources": settings.template_resources}
    return ttl


def build_backends(settings: Settings, *, api_client: Any = None, session: Any = None, clock: Callable[[], float] = time.time) -> dict[str, Backend]:
    from dispatcher.backends import make_backend

    backends: dict[str, Backend] = {}
    for kind in settings.enabled_kinds:
        if kind == "local":
            backends[kind] = make_backend(kind, namespace=settings.namespace, clock=clock, **backend_options(kind, settings))
            continue
        if api_client is None:
            api_client = build_api_client(settings, session)
        backends[kind] = make_backend(kind, api_client=api_client, namespace=settings.namespace,
                                      **backend_options(kind, settings))
    return backends


def build_dispatcher(
    settings: Settings,
    *,
    session: Any = None,
    api_client: Any = None,
    backends: dict[str, Backend] | None = None,
    clock: Callable[[], float] = time.time,
) -> Dispatcher:
    if session is None:
        import boto3

        session = boto3.session.Session()
    store = Store(settings.table, session.client("dynamodb"))
    sqs = session.client("sqs")
    queue = Queue(sqs, resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name))
    if backends is None:
        backends = build_backends(settings, api_client=api_client, session=session, clock=clock)
    return Dispatcher(settings=settings, store=store, queue=queue, backends=backends, clock=clock)
