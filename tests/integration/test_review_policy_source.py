"""Adversarial review (rev11p): SWEEPQ_POLICY from SSM (moto) does not fail closed "on every call until
it is fixed" (adapters/policy_source.py docstring; README "Operator policy": "never a silent
fallback"). Fails on the current code."""

from __future__ import annotations

import pytest
from helpers import Clock

from dispatcher.adapters.policy_source import PolicySource
from dispatcher.core.errors import ConfigError

LOOSE = "images: ['*']\nlimits: {gpus_per_node: 8}\n"
# The operator tightens the policy and makes one typo (gpus_per_node: "one"): an invalid policy.
TIGHT_WITH_TYPO = "images: [ghcr.io/acme/]\nlimits: {gpus_per_node: one}\n"


@pytest.fixture
def ssm(aws):
    client = aws.client("ssm")
    client.put_parameter(Name="/sweepq/policy", Type="String", Value=LOOSE)
    return client


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_an_invalid_new_ssm_version_is_replaced_by_the_old_policy_on_the_next_call(aws, ssm) -> None:
    """Attack/defect: version 1 (loose) is loaded; the operator puts version 2, invalid. The first
    ``get()`` raises (good), but ``_from_ssm`` has already set ``_checked_at = now`` while
    ``_policy`` still holds version 1, so every further ``get()`` for ``refresh_s`` (60 s) silently
    returns the old, looser policy; then one call raises again, then 60 s of the old one, and so on.
    Expected: ConfigError on every call until the parameter is fixed (as the file source does).
    Actual: the second call returns version 1's policy."""
    clock = Clock()
    source = PolicySource("ssm:/sweepq/policy", ssm_client=ssm, clock=clock, refresh_s=60)
    assert source.get().limits.gpus_per_node == 8
    ssm.put_parameter(Name="/sweepq/policy", Type="String", Value=TIGHT_WITH_TYPO, Overwrite=True)
    clock.advance(61)
    with pytest.raises(ConfigError):
        source.get()
    clock.advance(1)
    with pytest.raises(ConfigError):
        policy = source.get()
        raise AssertionError(f"fell back to the previous policy (images {policy.images}, "
                             f"gpus_per_node {policy.limits.gpus_per_node}) after the new version failed")
