"""Canonical identity of sweeps, trials and jobs. Purely computational.

* Canonical values: dict keys sorted, whole floats become ints (``1.0`` ≡ ``1``, the bug behind
  wandb #8549), tuples become lists. Two parameter sets are the same trial iff their canonical
  JSON is equal.
* Sweep id: ``<slug of the sweep name, ≤12>-<8 base32 chars of sha256(idempotency token)>``;
  the same token always gives the same sweep id, so a duplicate delivery or a retried submit
  collapses into one sweep by a conditional put.
* Trial id ``<sweep_id>-<index>`` is stable across attempts (W&B run id, checkpoint key).
* Job name ``<sweep_id>-<index>-a<attempt>``: deterministic per attempt, DNS-1123 and DNS-1035
  (starts with a letter), at most 40 characters, so every kind's derived pod and service names
  (``<job>-worker-12``, ``<job>-node-0-0-abcde``) stay under 63.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from typing import Any, TypeGuard

MAX_JOB_NAME = 40
_SLUG_MAX = 12
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
SWEEP_ID_RE = re.compile(r"^[a-z][a-z0-9-]{0,11}-[a-z2-7]{8}$")


def canonical(value: Any) -> Any:
    """Canonical form used for identity and hashing (not for what the trainer receives)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return int(value)
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)


def params_hash(params: Any) -> str:
    """Stable 16-hex-char hash of a parameter set (whole floats = ints, key order irrelevant)."""
    return hashlib.sha256(canonical_json(params).encode()).hexdigest()[:16]


def slug(text: str | None, *, max_len: int = _SLUG_MAX, default: str = "sweep") -> str:
    """A DNS-1035 label fragment: lower-case, [a-z0-9-], starts with a letter, no trailing '-'."""
    cleaned = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")
    if not cleaned or not cleaned[0].isalpha():
        cleaned = (default[0] + "-" + cleaned) if cleaned else default
    return cleaned[:max_len].rstrip("-") or default


def sweep_id_for(name: str | None, token: str) -> str:
    digest = hashlib.sha256(token.encode()).digest()
    tail = base64.b32encode(digest).decode().lower()[:8]
    return f"{slug(name)}-{tail}"


def is_sweep_id(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and bool(SWEEP_ID_RE.match(value))


def trial_id(sweep_id: str, index: int) -> str:
    return f"{sweep_id}-{index}"


def job_name(sweep_id: str, index: int, attempt: int) -> str:
    name = f"{sweep_id}-{index}-a{attempt}"
    if len(name) > MAX_JOB_NAME or not _DNS_LABEL.match(name):  # pragma: no cover - guarded by SWEEP_ID_RE
        raise ValueError(f"job name {name!r} is not a DNS-1035 label of at most {MAX_JOB_NAME} characters")
    return name


def parse_job_name(name: str) -> tuple[str, int, int] | None:
    """Inverse of :func:`job_name`; ``None`` for names sweepq did not make."""
    match = re.match(r"^(?P<sweep>[a-z][a-z0-9-]*-[a-z2-7]{8})-(?P<index>\d+)-a(?P<attempt>\d+)$", name)
    if not match:
        return None
    return match.group("sweep"), int(match.group("index")), int(match.group("attempt"))
