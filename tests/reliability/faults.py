"""Seeded fault injection at the external boundaries.

* :class:`AwsFaults` — botocore event hooks on a session: a share of the calls fail with a
  throttle or a 5xx, either *before* the call (``before-call``: it never reached AWS) or *after*
  it (``after-call``: AWS applied it, the answer was lost — the ambiguous case).
* :class:`KubeFaults` — the emulator's own faults: the next request to a resource answers
  429/500/503, or hangs past the client's read timeout.

Both count what they injected, for the figures.
"""

from __future__ import annotations

import collections
import random
import threading
from typing import Any

from botocore.exceptions import ClientError

AWS_ERRORS = {
    "dynamodb": [("ThrottlingException", 400), ("ProvisionedThroughputExceededException", 400),
                 ("InternalServerError", 500)],
    "sqs": [("RequestThrottled", 403), ("InternalError", 500), ("ServiceUnavailable", 503)],
}


class AwsFaults:
    """``rate`` of a session's calls fail; ``after_share`` of those after the call happened."""

    def __init__(self, rng: random.Random, *, rate: float = 0.1, after_share: float = 0.3) -> None:
        self.rng, self.rate, self.after_share = rng, rate, after_share
        self.active = True
        self.injected: collections.Counter[str] = collections.Counter()
        self.calls = 0
        self._lock = threading.Lock()

    def install(self, session: Any) -> "AwsFaults":
        session.events.register("before-call", self._before)
        session.events.register("after-call", self._after)
        return self

    def _draw(self, service: str, operation: str, when: str) -> ClientError | None:
        if service not in AWS_ERRORS:
            return None
        with self._lock:
            if when == "before":
                self.calls += 1
            if not self.active or self.rng.random() >= self.rate * (self.after_share if when == "after"
                                                                     else 1 - self.after_share):
                return None
            code, status = self.rng.choice(AWS_ERRORS[service])
            self.injected[f"{when} {service}:{operation} {code}"] += 1
        return ClientError({"Error": {"Code": code, "Message": f"injected {code} ({when} the call)"},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, operation)

    def _before(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        error = self._draw(service, operation, "before")
        if error is not None:
            raise error

    def _after(self, event_name: str, **_: Any) -> None:
        _, service, operation = event_name.split(".", 2)
        error = self._draw(service, operation, "after")
        if error is not None:
            raise error

    @property
    def total(self) -> int:
        return sum(self.injected.values())


class KubeFaults:
    """Per step, with probability ``rate``, the next request of one verb to one kind fails."""

    def __init__(self, kube: Any, rng: random.Random, *, rate: float = 0.1, hang_s: float = 0.0,
                 kind: str = "pytorchjob") -> None:
        self.kube, self.rng, self.rate, self.hang_s, self.kind = kube, rng, rate, hang_s, kind
        self.injected: collections.Counter[str] = collections.Counter()

    def pending(self, verb: str | None = None) -> int:
        with self.kube.handler._meta_lock:
            return sum(f.remaining for f in self.kube.handler.faults if verb is None or f.verb == verb)

    def step(self) -> None:
        for verb in ("list", "create", "delete"):
            if self.rng.random() >= self.rate or self.pending(verb):
                continue
            if self.hang_s and self.rng.random() < 0.2:
                self.kube.hang_next(self.kind, self.hang_s, verb=verb)
                self.injected[f"{verb} hang"] += 1
            else:
                status = self.rng.choice([429, 500, 503])
                self.kube.fail_next(self.kind, status, verb=verb, retry_after=1 if status == 429 else None)
                self.injected[f"{verb} {status}"] += 1

    @property
    def total(self) -> int:
        """Faults the emulator actually answered with (scheduled minus still pending)."""
        return sum(self.injected.values()) - self.pending()
