"""The composition root: build clients, adapters and backends from :class:`Settings`.

Entry points (CLI, Lambda handler, CronJob) call :func:`build_dispatcher`; tests build a
:class:`~dispatcher.tick.Dispatcher` directly with their own clients.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable

from dispatcher.adapters.metrics import MetricsStore
from dispatcher.adapters.queue import Queue, find_queue_url, resolve_queue_url
from dispatcher.adapters.store import Store
from dispatcher.core.errors import SweepqError
from dispatcher.core.jobs import Backend
from dispatcher.core.policy import Policy
from dispatcher.settings import Settings
from dispatcher.tick import Dispatcher

log = logging.getLogger(__name__)


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


PolicyGetter = Callable[[], Policy]


def build_policy(settings: Settings, *, session: Any = None) -> PolicyGetter:
    """``SWEEPQ_POLICY`` as a zero-argument callable returning the current policy (re-read when the
    file or SSM parameter changes; an invalid new version fails closed). Loaded once here so a
    broken policy stops the deployment at start-up with the problems listed."""
    from dispatcher.adapters.policy_source import PolicySource

    source = PolicySource.from_setting(settings.policy, session=session)
    source.get()
    return source.get


def build_backends(settings: Settings, *, api_client: Any = None, session: Any = None, clock: Callable[[], float] = time.time,
                   policy: PolicyGetter | None = None) -> dict[str, Backend]:
    from dispatcher.backends import make_backend

    backends: dict[str, Backend] = {}
    for kind in settings.enabled_kinds:
        if kind == "local":
            backends[kind] = make_backend(kind, namespace=settings.namespace, clock=clock, **backend_options(kind, settings))
            continue
        if api_client is None:
            api_client = build_api_client(settings, session)
        if policy is None:
            policy = build_policy(settings, session=session)
        backends[kind] = make_backend(kind, api_client=api_client, namespace=settings.namespace,
                                      **backend_options(kind, settings), **kube_options(kind, settings, policy))
    return backends


def kube_options(kind: str, settings: Settings, policy: PolicyGetter) -> dict[str, Any]:
    """What every Kubernetes kind renders from the settings and the operator policy: the pods' grace
    period (a TrainJob's comes from its runtime) and the Kueue priority class of a sweep's priority
    (``kueue.priority_classes`` of the policy as it is when the job is rendered)."""
    current = policy

    def priority_class(priority: int, team: str | None) -> str | None:
        return current().priority_class(priority, team)

    options: dict[str, Any] = {"kueue_priority_classes": priority_class}
    if kind != "trainjob":
        options["termination_grace_s"] = settings.termination_grace_s
    if kind == "template":
        options["policy"] = policy
    return options


def wake_queue_url(settings: Settings, sqs: Any) -> str | None:
    """``SWEEPQ_WAKE_QUEUE_URL``, else the URL of ``SWEEPQ_WAKE_QUEUE_NAME`` if that queue exists.
    Without one, trials get no wake queue (the schedule still ticks)."""
    if settings.wake_queue_url:
        return settings.wake_queue_url
    try:
        url = find_queue_url(sqs, str(settings.wake_queue_name))
    except SweepqError as exc:  # not permitted, throttled: the wake queue is an optimisation, never a blocker
        log.warning("wake queue %r not usable: %s", settings.wake_queue_name, exc)
        return None
    if url is None:
        log.info("no wake queue %r: trials send no 'trial finished' trigger (create it with `dispatcher bootstrap`)",
                 settings.wake_queue_name)
    return url


def build_dispatcher(
    settings: Settings,
    *,
    session: Any = None,
    api_client: Any = None,
    backends: dict[str, Backend] | None = None,
    clock: Callable[[], float] = time.time,
    policy: PolicyGetter | None = None,
) -> Dispatcher:
    if session is None:
        import boto3

        session = boto3.session.Session()
    if policy is None:
        policy = build_policy(settings, session=session)
    dynamodb = session.client("dynamodb")
    store = Store(settings.table, dynamodb, scope=settings.dispatcher_scope)
    metrics = MetricsStore(str(settings.metrics_table), dynamodb)  # the trials' metrics (CONTRACTS C1)
    sqs = session.client("sqs")
    queue = Queue(sqs, resolve_queue_url(sqs, url=settings.queue_url, name=settings.queue_name))
    wake_url = wake_queue_url(settings, sqs) if settings.wake else None
    if wake_url and wake_url != settings.wake_queue_url:
        settings = dataclasses.replace(settings, wake_queue_url=wake_url)
    if backends is None:
        backends = build_backends(settings, api_client=api_client, session=session, clock=clock, policy=policy)
    return Dispatcher(settings=settings, store=store, queue=queue, backends=backends, clock=clock,
                      wake_queue=Queue(sqs, wake_url) if wake_url else None, policy=policy, metrics=metrics)
