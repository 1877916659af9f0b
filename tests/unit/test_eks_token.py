"""EKS bearer tokens: shape of the presigned STS URL, caching with an injected clock, and the
DescribeCluster → ApiClient wiring (moto for EKS; presigning is local, no network)."""

from __future__ import annotations

import base64
import urllib.parse

import boto3
import pytest

from dispatcher.adapters.eks_token import (
    CLUSTER_ID_HEADER,
    REFRESH_AFTER_S,
    TOKEN_PREFIX,
    EksTokenSource,
    describe_cluster,
    presign_token,
)
from dispatcher.core.errors import PermanentError


@pytest.fixture
def sts():
    return boto3.client("sts", region_name="eu-west-1", aws_access_key_id="AKIDEXAMPLE",
                        aws_secret_access_key="not-a-real-secret")


def decode(token: str) -> urllib.parse.ParseResult:
    assert token.startswith(TOKEN_PREFIX)
    body = token[len(TOKEN_PREFIX):]
    assert "=" not in body and "+" not in body and "/" not in body  # base64url, no padding
    return urllib.parse.urlparse(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode())


def test_token_is_a_presigned_get_caller_identity_url_bound_to_the_cluster(sts) -> None:
    url = decode(presign_token(sts, "gpu-cluster"))
    query = urllib.parse.parse_qs(url.query)
    assert url.scheme == "https" and url.hostname.startswith("sts.") and url.hostname.endswith(".amazonaws.com")
    assert query["Action"] == ["GetCallerIdentity"]
    assert query["X-Amz-Expires"] == ["60"]
    assert CLUSTER_ID_HEADER in query["X-Amz-SignedHeaders"][0].split(";")
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert "X-Amz-Signature" in query


def test_tokens_for_two_clusters_differ_and_handlers_register_once(sts) -> None:
    first = decode(presign_token(sts, "a")).query
    second = decode(presign_token(sts, "b")).query
    assert urllib.parse.parse_qs(first)["X-Amz-Signature"] != urllib.parse.parse_qs(second)["X-Amz-Signature"]


def test_token_is_cached_until_refresh_time(sts) -> None:
    signs: list[str] = []
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", lambda request, **_: signs.append("signed"))
    now = [1_000.0]
    source = EksTokenSource("gpu-cluster", sts_client=sts, clock=lambda: now[0])
    token = source.token()
    now[0] += REFRESH_AFTER_S - 1
    assert source.token() == token and len(signs) == 1
    assert source.expires_at == 1_000.0 + 15 * 60
    now[0] += 1
    source.token()
    assert len(signs) == 2
    assert source.expires_at == 1_000.0 + REFRESH_AFTER_S + 15 * 60


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_describe_cluster_gives_endpoint_and_ca_and_names_the_fix_when_missing(aws) -> None:
    eks = aws.client("eks")
    iam = aws.client("iam")
    role = iam.create_role(RoleName="eks", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    eks.create_cluster(name="gpu-cluster", roleArn=role, resourcesVpcConfig={"subnetIds": ["subnet-1"]})
    cluster = describe_cluster(eks, "gpu-cluster")
    assert cluster.endpoint.startswith("https://")
    assert cluster.ca_data  # moto's CA data, base64-decoded
    with pytest.raises(PermanentError, match="'missing' does not exist in region 'us-east-1'"):
        describe_cluster(eks, "missing")


def test_eks_api_client_sends_a_fresh_bearer_token(aws, sts) -> None:
    from dispatcher.adapters.kube_client import eks_api_client

    eks = aws.client("eks")
    role = aws.client("iam").create_role(RoleName="eks", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    eks.create_cluster(name="gpu-cluster", roleArn=role, resourcesVpcConfig={"subnetIds": ["subnet-1"]})
    signs: list[str] = []
    sts.meta.events.register("before-sign.sts.GetCallerIdentity", lambda request, **_: signs.append("signed"))
    now = [0.0]
    client = eks_api_client("gpu-cluster", eks_client=eks, sts_client=sts, clock=lambda: now[0])
    assert client.configuration.host.startswith("https://") and client.configuration.ca_cert_data
    header = client.configuration.auth_settings()["BearerToken"]["value"]  # what each request sends
    assert header.startswith("Bearer " + TOKEN_PREFIX)
    decode(header.removeprefix("Bearer "))
    client.configuration.auth_settings()
    assert len(signs) == 1  # cached between requests
    now[0] += REFRESH_AFTER_S
    client.configuration.auth_settings()
    assert len(signs) == 2  # presigned again before EKS would reject it
