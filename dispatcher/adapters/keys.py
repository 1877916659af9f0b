"""Item keys and partition values of the sweep table (one place, shared by the store modules)."""

from __future__ import annotations

DONE = "DONE"
LEGACY_ACTIVE = "ACTIVE"  # list_pk of sweeps stored before scopes existed (never ticked; see the README)
REGISTRY_KEY = {"pk": "SCOPES", "sk": "registry"}


def sweep_key(sweep_id: str) -> dict[str, str]:
    return {"pk": f"SWEEP#{sweep_id}", "sk": "META"}


def spec_key(sweep_id: str) -> dict[str, str]:
    return {"pk": f"SWEEP#{sweep_id}", "sk": "SPEC"}


def trial_key(sweep_id: str, index: int) -> dict[str, str]:
    return {"pk": f"SWEEP#{sweep_id}", "sk": f"TRIAL#{index:010d}"}


def lease_key(scope: str) -> dict[str, str]:
    """One tick lease per dispatcher scope."""
    return {"pk": "LEASE", "sk": f"dispatcher#{scope}"}


def active_pk(scope: str) -> str:
    """``list_pk`` of a scope's active sweeps: the ``by_state`` partition its tick queries."""
    return f"ACTIVE#{scope}"
