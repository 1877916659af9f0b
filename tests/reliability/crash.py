"""Crash-point injection: proxies around the AWS clients and the backends that kill a run at call k.

A :class:`Crash` is a ``BaseException``: no ``except Exception`` in the product catches it, and the
tick has no cleanup, so the run stops dead like a killed process — lease not released, work half
done. ``mode="before"`` dies before call k happens; ``mode="after"`` dies after it happened but
before its result was used (e.g. the job was created but the trial was never marked LAUNCHED).
"""

from __future__ import annotations

from typing import Any

SKIP = {"meta", "exceptions", "get_waiter", "can_paginate", "get_paginator", "kind", "namespace", "slots"}


class Crash(BaseException):
    pass


class Crasher:
    def __init__(self, at: int | None = None, mode: str = "before") -> None:
        self.at, self.mode, self.calls = at, mode, 0
        self.log: list[str] = []

    def around(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.log.append(what)
        if self.calls == self.at and self.mode == "before":
            raise Crash(f"before call {self.calls}: {what}")
        result = fn(*args, **kwargs)
        if self.calls == self.at and self.mode == "after":
            raise Crash(f"after call {self.calls}: {what}")
        return result


class Proxy:
    """Wraps every public method of ``target`` with the crasher."""

    def __init__(self, target: Any, crasher: Crasher, prefix: str) -> None:
        self._target, self._crasher, self._prefix = target, crasher, prefix

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if name.startswith("_") or name in SKIP or not callable(attr):
            return attr
        return lambda *a, **k: self._crasher.around(f"{self._prefix}.{name}", attr, *a, **k)


class Session:
    """A boto3 session whose clients are crash proxies."""

    def __init__(self, session: Any, crasher: Crasher) -> None:
        self._session, self._crasher = session, crasher

    def client(self, service: str, **kwargs: Any) -> Any:
        return Proxy(self._session.client(service, **kwargs), self._crasher, service)
