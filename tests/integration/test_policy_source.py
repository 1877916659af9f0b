"""SWEEPQ_POLICY: a file (a ConfigMap mounted as one) or an SSM parameter (moto), cached per process,
re-read on change, failing closed when the operator's policy cannot be read or is invalid."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from helpers import Clock

from dispatcher.adapters.policy_source import PolicySource, load_policy
from dispatcher.core.errors import ConfigError, TransientError
from dispatcher.core.policy import Policy, PolicyError

ONE = "limits: {gpus_per_node: 1}\n"
TWO = "limits: {gpus_per_node: 2}\n"


def test_no_setting_is_the_default_policy() -> None:
    for value in (None, "", "  "):
        source = PolicySource(value)
        assert source.kind == "default" and source.get() == Policy.default() and source.get() is source.get()


def test_a_file_is_parsed_once_and_again_only_when_its_content_changes(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    source = PolicySource(str(path))
    first = source.get()
    assert source.kind == "file" and first.limits.gpus_per_node == 1
    assert source.get() is first  # same content: the parsed policy is reused
    path.write_text(TWO)  # same size, maybe the same mtime: the content decides, not the clock
    assert source.get().limits.gpus_per_node == 2


def test_a_configmap_update_by_symlink_swap_is_seen(tmp_path: Path) -> None:
    """kubelet updates a mounted ConfigMap by pointing ..data at a new directory, atomically."""
    for version, text in (("v1", ONE), ("v2", TWO)):
        (tmp_path / version).mkdir()
        (tmp_path / version / "policy.yaml").write_text(text)
    (tmp_path / "..data").symlink_to("v1")
    (tmp_path / "policy.yaml").symlink_to("..data/policy.yaml")
    source = PolicySource(str(tmp_path / "policy.yaml"))
    assert source.get().limits.gpus_per_node == 1
    (tmp_path / "..data_tmp").symlink_to("v2")
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    assert source.get().limits.gpus_per_node == 2


def test_a_broken_or_missing_file_fails_closed_until_fixed(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(ONE)
    source = PolicySource(str(path))
    assert source.get().limits.gpus_per_node == 1
    path.write_text("limits: {gpus_per_node: lots}\n")
    for _ in range(2):  # every call, not only the first: no fallback to the last or the default policy
        with pytest.raises(PolicyError, match=f"{path}: limits.gpus_per_node"):
            source.get()
    path.unlink()
    with pytest.raises(ConfigError, match=f"SWEEPQ_POLICY: cannot read {path}.*unset SWEEPQ_POLICY"):
        source.get()
    path.write_text(TWO)
    assert source.get().limits.gpus_per_node == 2


def test_load_policy_reads_the_example(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "infra" / "policy.example.yaml"
    assert list(load_policy(str(example)).teams) == ["team-a", "team-b"]
    assert load_policy(None) == Policy.default()


# -- SSM ------------------------------------------------------------------------------------------

@pytest.fixture
def ssm(aws):
    client = aws.client("ssm")
    client.put_parameter(Name="/sweepq/policy", Type="String", Value=ONE)
    return client


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_an_ssm_parameter_is_read_at_most_every_refresh_and_reparsed_on_a_new_version(aws, ssm) -> None:
    calls: list[str] = []
    ssm.meta.events.register("before-call.ssm.GetParameter", lambda **_: calls.append("get"))
    clock = Clock()
    assert PolicySource.from_setting("ssm:/sweepq/policy", session=aws).get().limits.gpus_per_node == 1
    source = PolicySource("ssm:/sweepq/policy", ssm_client=ssm, clock=clock, refresh_s=60)
    first = source.get()
    assert source.kind == "ssm" and first.limits.gpus_per_node == 1 and calls == ["get"]
    ssm.put_parameter(Name="/sweepq/policy", Type="String", Value=TWO, Overwrite=True)
    clock.advance(30)
    assert source.get() is first and calls == ["get"]  # within refresh_s: no call
    clock.advance(31)
    assert source.get().limits.gpus_per_node == 2 and calls == ["get", "get"]
    clock.advance(61)
    again = source.get()
    clock.advance(61)
    assert source.get() is again and len(calls) == 4  # same Version: read, not parsed again


def test_a_secure_string_parameter_is_decrypted(aws) -> None:
    ssm = aws.client("ssm")
    ssm.put_parameter(Name="/sweepq/secure-policy", Type="SecureString", Value=TWO)
    assert PolicySource("ssm:/sweepq/secure-policy", ssm_client=ssm).get().limits.gpus_per_node == 2


def test_a_missing_parameter_or_an_invalid_policy_fails_closed(aws, ssm) -> None:
    with pytest.raises(ConfigError, match="SSM parameter /sweepq/nope does not exist — create it"):
        PolicySource("ssm:/sweepq/nope", ssm_client=ssm).get()
    ssm.put_parameter(Name="/sweepq/bad", Type="String", Value="teams: {a: {members: []}}")
    with pytest.raises(PolicyError, match=r"ssm:/sweepq/bad \(version 1\): teams.a.members"):
        PolicySource("ssm:/sweepq/bad", ssm_client=ssm).get()
    with pytest.raises(ConfigError, match="names no parameter"):
        PolicySource("ssm:", ssm_client=ssm)
    with pytest.raises(ConfigError, match="needs an SSM client"):
        PolicySource("ssm:/sweepq/policy")


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_a_missing_parameter_is_asked_for_once_per_refresh_then_adopted_once_created(aws, ssm) -> None:
    # every sweep of every tick reads the policy: a missing parameter must not become one SSM call each
    calls: list[str] = []
    ssm.meta.events.register("before-call.ssm.GetParameter", lambda **_: calls.append("get"))
    clock = Clock()
    source = PolicySource("ssm:/sweepq/later", ssm_client=ssm, clock=clock, refresh_s=60)
    for _ in range(5):
        with pytest.raises(ConfigError, match="does not exist"):
            source.get()
    assert calls == ["get"]
    ssm.put_parameter(Name="/sweepq/later", Type="String", Value=TWO)
    clock.advance(61)
    assert source.get().limits.gpus_per_node == 2 and calls == ["get", "get"]


def test_a_transient_ssm_failure_keeps_the_policy_already_read(aws, ssm) -> None:
    clock = Clock()
    source = PolicySource("ssm:/sweepq/policy", ssm_client=ssm, clock=clock, refresh_s=60)
    first = source.get()
    failing = {"on": True}

    def throttle(**_: object) -> None:
        if failing["on"]:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetParameter")

    ssm.meta.events.register("before-call.ssm.GetParameter", throttle)
    clock.advance(61)
    assert source.get() is first  # nothing says it changed
    fresh = PolicySource("ssm:/sweepq/policy", ssm_client=ssm, clock=clock)
    with pytest.raises(TransientError, match="ThrottlingException reading /sweepq/policy — retried next tick"):
        fresh.get()  # nothing read yet: no policy to keep, and never the default instead
    failing["on"] = False
    assert fresh.get() == first


def test_access_denied_is_a_configuration_error(aws, ssm) -> None:
    def deny(**_: object) -> None:
        raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetParameter")

    ssm.meta.events.register("before-call.ssm.GetParameter", deny)
    with pytest.raises(ConfigError, match="grant ssm:GetParameter on it"):
        PolicySource("ssm:/sweepq/policy", ssm_client=ssm).get()


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_an_invalid_version_fails_closed_until_the_version_changes_even_through_read_errors(aws, ssm) -> None:
    """rev11p #8: an invalid new version is raised on every call — within the refresh interval
    without reading, after it when SSM says the same version, and when SSM throttles — never the
    older valid policy; a new valid version is taken at the next read."""
    clock = Clock()
    source = PolicySource("ssm:/sweepq/policy", ssm_client=ssm, clock=clock, refresh_s=60)
    source.get()
    ssm.put_parameter(Name="/sweepq/policy", Type="String", Value="limits: {gpus_per_node: one}", Overwrite=True)
    clock.advance(61)
    calls = {"n": 0, "throttle": False}

    def count(**_: object) -> None:
        calls["n"] += 1
        if calls["throttle"]:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"},
                               "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetParameter")

    ssm.meta.events.register("before-call.ssm.GetParameter", count)
    for _ in range(3):
        with pytest.raises(PolicyError, match=r"version 2\): limits.gpus_per_node"):
            source.get()
    assert calls["n"] == 1  # the remembered error, not a read per call
    clock.advance(61)
    with pytest.raises(PolicyError, match="version 2"):
        source.get()  # read again: still version 2
    calls["throttle"] = True
    clock.advance(61)
    with pytest.raises(PolicyError, match="version 2"):
        source.get()  # a read error does not bring the old policy back
    calls["throttle"] = False
    ssm.put_parameter(Name="/sweepq/policy", Type="String", Value="limits: {gpus_per_node: 3}", Overwrite=True)
    clock.advance(61)
    assert source.get().limits.gpus_per_node == 3
