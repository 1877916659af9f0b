"""EKS authentication: cluster endpoint + CA from ``eks:DescribeCluster``, bearer tokens from STS.

The token scheme is the one of aws-iam-authenticator and ``aws eks get-token``:

* presign an STS ``GetCallerIdentity`` request (HTTP GET, query-string auth, ``X-Amz-Expires=60``)
  that carries the header ``x-k8s-aws-id: <cluster name>`` as a *signed* header, so the token is
  only valid for that cluster;
* the token is ``k8s-aws-v1.`` + base64url(presigned URL) without ``=`` padding.

EKS accepts such a token for 15 minutes after signing; :class:`EksTokenSource` hands out the same
token for 14 minutes, then presigns a new one. Presigning is local (no network call), so it is
cheap; the cache mostly keeps the ``Authorization`` header stable between requests of one tick.

Clients are injected (``eks_client``, ``sts_client`` from boto3); ``clock`` is injectable for tests.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from dispatcher.core.errors import PermanentError, TransientError

log = logging.getLogger(__name__)

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
PRESIGN_EXPIRES_S = 60  # what aws-iam-authenticator signs; EKS itself honours the token for 15 min
TOKEN_LIFETIME_S = 15 * 60
REFRESH_AFTER_S = 14 * 60  # refresh a minute before EKS stops accepting the token
_CLUSTER_PARAM = "SweepqClusterName"  # carried from generate_presigned_url's Params into the signer
_TRANSIENT_AWS_CODES = {"Throttling", "ThrottlingException", "TooManyRequestsException", "ServiceUnavailableException",
                        "ServerException", "InternalFailure", "RequestTimeout", "RequestTimeoutException"}


@dataclass(frozen=True)
class EksCluster:
    """What a Kubernetes client needs to reach an EKS cluster."""

    name: str
    endpoint: str  # https://....eks.amazonaws.com
    ca_data: str | bytes  # the cluster CA: PEM text (what EKS returns, base64-encoded) or DER bytes


def describe_cluster(eks_client: Any, cluster_name: str) -> EksCluster:
    """Endpoint and CA of ``cluster_name`` through ``eks:DescribeCluster`` (one API call)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        cluster = eks_client.describe_cluster(name=cluster_name)["cluster"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT_AWS_CODES or status >= 500:
            raise TransientError(f"eks:DescribeCluster {cluster_name!r} failed with {code} — retrying next tick") from exc
        if code == "ResourceNotFoundException":
            raise PermanentError(
                f"eks cluster: {cluster_name!r} does not exist in region {eks_client.meta.region_name!r} — "
                "check the cluster name and AWS region of the dispatcher"
            ) from exc
        raise PermanentError(
            f"eks cluster: eks:DescribeCluster on {cluster_name!r} failed with {code}: "
            f"{exc.response.get('Error', {}).get('Message', '')} — grant the dispatcher's role eks:DescribeCluster"
        ) from exc
    except BotoCoreError as exc:
        raise TransientError(f"eks:DescribeCluster {cluster_name!r}: {exc} — retrying next tick") from exc

    endpoint = cluster.get("endpoint")
    ca_data = (cluster.get("certificateAuthority") or {}).get("data")
    if not endpoint or not ca_data:
        raise TransientError(
            f"eks cluster: {cluster_name!r} has no endpoint/CA yet (status {cluster.get('status')!r}) — "
            "wait until it is ACTIVE"
        )
    ca = base64.b64decode(ca_data)
    return EksCluster(name=cluster_name, endpoint=endpoint,
                      ca_data=ca.decode("ascii") if ca.lstrip().startswith(b"-----BEGIN") else ca)


def _retain_cluster_name(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    # GetCallerIdentity takes no parameters: move ours out of the way of parameter validation.
    if _CLUSTER_PARAM in params:
        context[_CLUSTER_PARAM] = params.pop(_CLUSTER_PARAM)


def _add_cluster_header(request: Any, **_: Any) -> None:
    # Runs before signing, so the header is part of X-Amz-SignedHeaders.
    cluster_name = request.context.get(_CLUSTER_PARAM)
    if cluster_name:
        request.headers[CLUSTER_ID_HEADER] = cluster_name


def presign_token(sts_client: Any, cluster_name: str) -> str:
    """A fresh EKS bearer token for ``cluster_name``, signed with ``sts_client``'s credentials.

    Local computation only (SigV4 presigning); no request is sent to STS.
    """
    events = sts_client.meta.events
    events.register("provide-client-params.sts.GetCallerIdentity", _retain_cluster_name,
                    unique_id="sweepq-eks-token-params")
    events.register("before-sign.sts.GetCallerIdentity", _add_cluster_header, unique_id="sweepq-eks-token-header")
    url = sts_client.generate_presigned_url(
        "get_caller_identity",
        Params={_CLUSTER_PARAM: cluster_name},
        ExpiresIn=PRESIGN_EXPIRES_S,
        HttpMethod="GET",
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode("utf-8")).decode("ascii").rstrip("=")


class EksTokenSource:
    """Hands out a cached EKS token, presigning a new one after :data:`REFRESH_AFTER_S`.

    Thread-safe; ``clock`` returns epoch seconds (injected in tests).
    """

    def __init__(self, cluster_name: str, *, sts_client: Any, clock: Callable[[], float] = time.time) -> None:
        self.cluster_name = cluster_name
        self._sts = sts_client
        self._clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._signed_at = 0.0

    def token(self) -> str:
        with self._lock:
            now = self._clock()
            if self._token is None or now - self._signed_at >= REFRESH_AFTER_S or now < self._signed_at:
                self._token = presign_token(self._sts, self.cluster_name)
                self._signed_at = now
                log.debug("presigned a new EKS token for cluster %s", self.cluster_name)
            return self._token

    @property
    def expires_at(self) -> float | None:
        """Epoch seconds after which EKS rejects the cached token (``None`` before the first one)."""
        return None if self._token is None else self._signed_at + TOKEN_LIFETIME_S
