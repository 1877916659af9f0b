"""Shared plumbing of the benchmarks: import paths, fake AWS credentials, the Markdown table, the
exact command line, and the optional JSON result file the smoke test reads.

Every benchmark is a script (``python benchmarks/NAME.py``); it inserts the repository root and
``tests/`` (for ``helpers`` and ``kube_emulator``) into ``sys.path`` through this module.
"""

from __future__ import annotations

import collections
import json
import os
import platform
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT / "tests", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# Benchmarks never reach real AWS or W&B: moto needs credentials to exist, any will do.
for _key, _value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                     ("AWS_SESSION_TOKEN", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
    os.environ.setdefault(_key, _value)
os.environ.pop("AWS_ENDPOINT_URL", None)
os.environ["WANDB_MODE"] = "offline"


def command_line(script: str, argv: Sequence[str]) -> str:
    """The exact command that reproduces this run, relative to the repository root."""
    return " ".join(["python", f"benchmarks/{Path(script).name}", *map(shlex.quote, argv)])


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.system()}"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; numbers are right-aligned."""
    rows = [[_cell(v) for v in row] for row in rows]
    align = ["---:" if rows and all(_numeric(r[i]) for r in rows) else ":---" for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value).replace("|", "\\|")


def _numeric(text: str) -> bool:
    stripped = text.replace(",", "").replace("×", "").replace("—", "0").replace("%", "").strip()
    try:
        float(stripped)
        return True
    except ValueError:
        return False


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __enter__(self) -> "Stopwatch":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.started


def header(title: str, script: str, argv: Sequence[str]) -> str:
    return f"## {title}\n\nCommand: `{command_line(script, argv)}`  \nMachine: {machine()}\n"


class AwsCalls:
    """Counts and times every boto3 call of the clients it is attached to, by operation."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self.seconds = 0.0

    def attach(self, client: Any) -> Any:
        client.meta.events.register("before-call", self._before)
        client.meta.events.register("after-call", self._after)
        return client

    def _before(self, model: Any, context: dict[str, Any], **_: Any) -> None:
        self.calls[f"{model.service_model.endpoint_prefix}.{model.name}"] += 1
        context["benchmark_started"] = time.perf_counter()

    def _after(self, context: dict[str, Any], **_: Any) -> None:
        self.seconds += time.perf_counter() - context.pop("benchmark_started", time.perf_counter())

    def reset(self) -> None:
        self.calls.clear()
        self.seconds = 0.0


class CountingSession:
    """A boto3 session whose clients report to :class:`AwsCalls` (and talk to ``endpoint`` if given)."""

    def __init__(self, endpoint: str | None, counter: AwsCalls) -> None:
        import boto3

        self._session = boto3.session.Session(region_name="us-east-1")
        self.endpoint, self.counter = endpoint, counter

    def client(self, service: str, **kwargs: Any) -> Any:
        return self.counter.attach(self._session.client(service, endpoint_url=self.endpoint, **kwargs))


def fast_moto_transactions() -> None:
    """Make moto's ``TransactWriteItems`` cost independent of the table size (a harness fix).

    moto 5 deep-copies *every table* a transaction names, once per operation, so that it can roll
    back on failure: each call costs O(items in the table) — 0.2 s at 1,000 items on this machine,
    where real DynamoDB's cost does not depend on the table size. Here the copy is replaced by a
    snapshot of the items the transaction touches, restored on the same failures; moto's checks,
    conditions and errors are unchanged. Idempotent.
    """
    import copy as real_copy
    import types

    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    backend_class = models.DynamoDBBackend
    if getattr(backend_class, "_sweepq_fast_transactions", False):
        return

    def deepcopy(obj: Any, memo: Any = None) -> Any:
        return obj if isinstance(obj, Table) else real_copy.deepcopy(obj, memo)

    models.copy = types.SimpleNamespace(deepcopy=deepcopy, copy=real_copy.copy)  # type: ignore[assignment]
    original = backend_class.transact_write_items

    def key_of(table: Any, op: dict[str, Any]) -> tuple[Any, Any]:
        raw = op.get("Key") or op.get("Item") or {}
        hash_key = DynamoType(raw[table.hash_key_attr])
        range_key = DynamoType(raw[table.range_key_attr]) if table.range_key_attr else None
        return hash_key, range_key

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshot = []
        for entry in transact_items:
            op = next(iter(entry.values()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            try:
                hash_key, range_key = key_of(table, op)
            except KeyError:
                continue  # moto itself reports the malformed operation
            snapshot.append((table, hash_key, range_key, real_copy.deepcopy(table.get_item(hash_key, range_key))))
        try:
            original(self, transact_items)
        except Exception:
            for table, hash_key, range_key, item in reversed(snapshot):
                if range_key is None:
                    table.items.pop(hash_key, None) if item is None else table.items.__setitem__(hash_key, item)
                elif item is None:
                    table.items.get(hash_key, {}).pop(range_key, None)
                else:
                    table.items[hash_key][range_key] = item
            raise

    backend_class.transact_write_items = transact_write_items
    backend_class._sweepq_fast_transactions = True
