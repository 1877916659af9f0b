"""Build a ``kubernetes.client.ApiClient`` — the one place that decides how sweepq reaches a cluster.

Three sources, first match wins (:func:`build_api_client`):

1. an explicit API server ``host`` (+ CA + bearer token or token provider) — used for EKS, where
   :func:`eks_api_client` gets the endpoint and CA from ``eks:DescribeCluster`` and presigns tokens;
2. a kubeconfig: ``kubeconfig=`` argument, else ``$KUBECONFIG``, else ``~/.kube/config`` if present;
3. the in-cluster ServiceAccount (the dispatcher CronJob).

Every client gets the same connection policy (:func:`_harden`): connection errors are retried a
few times, but a read timeout or an HTTP error status is *not* retried inside the client — the
backends turn those into ``TransientError`` and the next tick retries, so one hung API server
costs one timeout per tick, not four.

``kubernetes`` is imported inside the functions, never at module import.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from dispatcher.core.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover - typing only
    from kubernetes.client import ApiClient, Configuration

log = logging.getLogger(__name__)

CONNECT_RETRIES = 3
# The bearer token's key in ``Configuration.api_key``. Clients up to 35.x read only "authorization";
# 36+ read "BearerToken" *or* "authorization" (its alias). "BearerToken" alone sent no token at all
# with a 35.x client — which ``kubernetes>=29`` allows — so the key every version reads is used.
API_KEY = "authorization"


def _harden(configuration: "Configuration") -> "Configuration":
    import urllib3

    configuration.retries = urllib3.Retry(
        total=CONNECT_RETRIES, connect=CONNECT_RETRIES, read=0, status=0, other=0,
        backoff_factor=0.2, raise_on_status=False,
    )
    return configuration


def api_client_from_host(
    host: str,
    *,
    token: str | None = None,
    token_provider: Callable[[], str] | None = None,
    ca_data: str | bytes | None = None,
    ca_file: str | None = None,
    verify_ssl: bool = True,
) -> "ApiClient":
    """A client for ``host`` (``https://...`` or ``http://127.0.0.1:port`` for emulators).

    ``token_provider`` is called before every request (its result may be cached by the provider,
    e.g. :class:`~dispatcher.adapters.eks_token.EksTokenSource`); ``token`` is a fixed token.
    """
    from kubernetes.client import ApiClient, Configuration

    if token is not None and token_provider is not None:
        raise ConfigError("kubernetes auth: pass either token or token_provider, not both")
    configuration = Configuration(host=host.rstrip("/"))
    configuration.verify_ssl = verify_ssl
    if ca_data:
        configuration.ca_cert_data = ca_data  # PEM text or DER bytes (urllib3 cadata)
    if ca_file:
        configuration.ssl_ca_cert = ca_file
    if token is not None or token_provider is not None:
        # one of the two (both is refused above)
        configuration.api_key = {API_KEY: token if token_provider is None else token_provider()}
        configuration.api_key_prefix = {API_KEY: "Bearer"}
    if token_provider is not None:
        provider = token_provider

        def _refresh(config: Any) -> None:
            config.api_key[API_KEY] = provider()

        configuration.refresh_api_key_hook = _refresh
    return ApiClient(_harden(configuration))


def api_client_from_kubeconfig(path: str | os.PathLike[str] | None = None, *, context: str | None = None) -> "ApiClient":
    """A client from a kubeconfig file (``None``: ``$KUBECONFIG`` or ``~/.kube/config``)."""
    from kubernetes import config
    from kubernetes.client import ApiClient, Configuration

    configuration = Configuration()
    try:
        config.load_kube_config(
            config_file=str(path) if path is not None else None, context=context,
            client_configuration=configuration, persist_config=False,
        )
    except (config.ConfigException, OSError) as exc:
        where = str(path) if path else "$KUBECONFIG or ~/.kube/config"
        raise ConfigError(
            f"kubeconfig: cannot load {where}{f' (context {context!r})' if context else ''}: {exc} — "
            "fix the file or point KUBECONFIG elsewhere"
        ) from exc
    return ApiClient(_harden(configuration))


def api_client_in_cluster() -> "ApiClient":
    """A client from the pod's ServiceAccount token (refreshed when kubelet rotates it)."""
    from kubernetes import config
    from kubernetes.client import ApiClient, Configuration

    configuration = Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as exc:
        raise ConfigError(
            f"kubernetes: not running in a cluster ({exc}) — set KUBECONFIG or pass an API server host"
        ) from exc
    return ApiClient(_harden(configuration))


def eks_api_client(
    cluster_name: str,
    *,
    eks_client: Any,
    sts_client: Any | None = None,
    clock: Callable[[], float] | None = None,
) -> "ApiClient":
    """A client for the EKS cluster ``cluster_name``: endpoint + CA from ``eks:DescribeCluster``
    (``eks_client``), tokens presigned with ``sts_client`` (default: a boto3 STS client in the
    EKS client's region) and refreshed before they expire."""
    from dispatcher.adapters.eks_token import EksTokenSource, describe_cluster

    cluster = describe_cluster(eks_client, cluster_name)
    if sts_client is None:
        import boto3

        sts_client = boto3.client("sts", region_name=eks_client.meta.region_name)
    source = EksTokenSource(cluster_name, sts_client=sts_client, **({"clock": clock} if clock else {}))
    return api_client_from_host(cluster.endpoint, token_provider=source.token, ca_data=cluster.ca_data)


def build_api_client(
    *,
    host: str | None = None,
    token: str | None = None,
    ca_data: str | bytes | None = None,
    kubeconfig: str | os.PathLike[str] | None = None,
    context: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> "ApiClient":
    """Pick the source: explicit ``host`` > kubeconfig > in-cluster (see the module docstring)."""
    env = os.environ if environ is None else environ
    if host:
        log.debug("kubernetes: explicit API server %s", host)
        return api_client_from_host(host, token=token, ca_data=ca_data)
    default_config = Path.home() / ".kube" / "config"
    if kubeconfig is not None or env.get("KUBECONFIG") or default_config.is_file():
        path = kubeconfig or env.get("KUBECONFIG") or default_config
        log.debug("kubernetes: kubeconfig %s", path)
        return api_client_from_kubeconfig(path, context=context)
    if env.get("KUBERNETES_SERVICE_HOST"):
        log.debug("kubernetes: in-cluster ServiceAccount")
        return api_client_in_cluster()
    raise ConfigError(
        "kubernetes: no cluster configured — set KUBECONFIG, run inside a cluster, or give the EKS cluster name"
    )
