"""Which cluster the backends reach: explicit host > kubeconfig > in-cluster (kube_client)."""

from __future__ import annotations

import pytest
import yaml
from kubernetes.client import CoreV1Api

from dispatcher.adapters.kube_client import api_client_from_kubeconfig, build_api_client
from dispatcher.core.errors import ConfigError


def kubeconfig(path, server: str, token: str = "t0ken") -> str:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emu",
        "clusters": [{"name": "emu", "cluster": {"server": server}}],
        "users": [{"name": "me", "user": {"token": token}}],
        "contexts": [{"name": "emu", "context": {"cluster": "emu", "user": "me"}}],
    }))
    return str(path)


def test_explicit_host_wins_and_sends_the_token(kube) -> None:
    client = build_api_client(host=kube.url, token="abc", environ={"KUBECONFIG": "/nonexistent"})
    assert client.configuration.host == kube.url
    assert client.configuration.auth_settings()["BearerToken"]["value"] == "Bearer abc"
    assert CoreV1Api(client).list_namespaced_pod("sweepq").items == []


def test_kubeconfig_from_the_environment(kube, tmp_path) -> None:
    path = kubeconfig(tmp_path / "config", kube.url)
    client = build_api_client(environ={"KUBECONFIG": path})
    assert client.configuration.host == kube.url
    assert CoreV1Api(client).list_namespaced_pod("sweepq").items == []
    assert client.configuration.retries.read == 0  # a hung server costs one timeout per tick


def test_missing_configuration_names_the_fix(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="set KUBECONFIG"):
        build_api_client(environ={})
    with pytest.raises(ConfigError, match="not running in a cluster"):
        build_api_client(environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    with pytest.raises(ConfigError, match="cannot load .*context 'nope'"):
        api_client_from_kubeconfig(kubeconfig(tmp_path / "c", "http://127.0.0.1:1"), context="nope")
