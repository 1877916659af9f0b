"""Job backends, one per kind, all implementing ``dispatcher.core.jobs.Backend``.

:func:`make_backend` imports only the module of the kind asked for, so the local backend never
loads the ``kubernetes`` client and the Kubernetes kinds never load the local supervisor.
"""

from __future__ import annotations

import importlib
from typing import Any

from dispatcher.core.errors import ConfigError
from dispatcher.core.jobs import Backend

# kind → (module, class). Kubernetes kinds take (api_client=, namespace=, request_timeout=) and the
# options every kind renders the same way (termination_grace_s= — SWEEPQ_TERMINATION_GRACE_S; not
# for trainjob, whose runtime sets it —, run_as_user=, run_as_group=, kueue_priority_classes= —
# the policy's bound Policy.priority_class, or a {min_priority: class} mapping —,
# pending_detail_after_s=, clock=; see KubeBackend.__init__ and kube_options.JobOptions); per kind:
# pytorchjob/job ttl_seconds=, trainjob runtime=, template templates=/plurals=/resources=.
# elasticjob is retired (observe/cancel only).
BACKENDS: dict[str, tuple[str, str]] = {
    "pytorchjob": ("dispatcher.backends.pytorchjob", "PyTorchJobBackend"),
    "elasticjob": ("dispatcher.backends.elasticjob", "ElasticJobBackend"),
    "trainjob": ("dispatcher.backends.trainjob", "TrainJobBackend"),
    "job": ("dispatcher.backends.batchjob", "BatchJobBackend"),
    "template": ("dispatcher.backends.template", "TemplateBackend"),
    "local": ("dispatcher.backends.local", "LocalBackend"),
}


def make_backend(kind: str, *, api_client: Any = None, namespace: str, **options: Any) -> Backend:
    """The backend of ``kind``. ``api_client`` (a ``kubernetes.client.ApiClient``; built from the
    environment on first use when ``None``) and ``namespace`` go to the Kubernetes kinds; the local
    backend gets only ``options`` (``state_dir=``, ``slots=``, ...)."""
    if kind not in BACKENDS:
        raise ConfigError(f"backend: unknown kind {kind!r} — use one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[kind]
    backend_class = getattr(importlib.import_module(module_name), class_name)
    if kind == "local":
        return backend_class(**options)
    return backend_class(api_client=api_client, namespace=namespace, **options)
