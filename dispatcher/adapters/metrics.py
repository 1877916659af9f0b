"""The metrics table (CONTRACTS C1): what trials report, read by the dispatcher. ``client`` is an
injected ``boto3.client("dynamodb")``.

One item per pod, key ``pod`` (hash only), GSI ``by_job`` (hash ``job``, range ``pod``,
projection ALL). The trainer writes; the dispatcher only reads:

* kinds whose first pod has a predictable name (pytorchjob, elasticjob, local): one consistent
  ``BatchGetItem`` of ``<job>-worker-0`` / ``<job>-local-0`` for up to 100 jobs at a time;
* the others (trainjob, job, template): one ``Query`` of the ``by_job`` index per job.

Reads project the contract's attributes only (the trainer policy cannot write others; were one
there, it is never read). Every item is checked with :func:`dispatcher.core.metrics.verify`
before it is trusted; an item that fails (another job's pod claiming this job, a stale attempt, a
wrong type or status) is left out and reported in :attr:`MetricsRead.ignored` with the reason,
and logged. Nothing a trial writes can fail a read.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from botocore.exceptions import BotoCoreError, ClientError

from dispatcher.adapters.dynamo import des, translate
from dispatcher.core.errors import ConfigError, SweepqError
from dispatcher.core.metrics import (
    ATTRIBUTES,
    INDEX,
    KEY,
    MetricsItem,
    UnverifiedItem,
    choose,
    predictable_pod,
    reported_jobs,
    verify,
    with_reported,
)

log = logging.getLogger(__name__)

BATCH_GET_LIMIT = 100  # DynamoDB's BatchGetItem maximum
MAX_BATCH_ROUNDS = 5  # rounds of UnprocessedKeys retries before a job is reported unread
MAX_QUERY_PAGES = 10  # index pages per job; a job has one item per pod
_PROJECTION = ", ".join(f"#a{i}" for i in range(len(ATTRIBUTES)))
_PROJECTION_NAMES = {f"#a{i}": name for i, name in enumerate(ATTRIBUTES)}

JobRef = tuple[str, str, int]  # (kind, job name, attempt)


@dataclass(frozen=True)
class Ignored:
    """An item that was read and not trusted."""

    job: str
    pod: str
    reason: str


@dataclass(frozen=True)
class MetricsRead(Mapping[str, MetricsItem]):
    """``{job: verified item}`` for the jobs that have one, plus what was left out: ``ignored``
    items (with the reason) and ``unread`` jobs (DynamoDB kept returning them unprocessed; read
    them again next tick)."""

    verified: Mapping[str, MetricsItem] = field(default_factory=dict)
    ignored: tuple[Ignored, ...] = ()
    unread: tuple[str, ...] = ()

    def __getitem__(self, job: str) -> MetricsItem:
        return self.verified[job]

    def __iter__(self) -> Iterator[str]:
        return iter(self.verified)

    def __len__(self) -> int:
        return len(self.verified)


class MetricsStore:
    """Reader of the metrics table. ``sleep`` spaces the UnprocessedKeys retries (injectable)."""

    def __init__(self, table: str, client: Any, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.table = table
        self.client = client
        self.sleep = sleep

    # -- table -------------------------------------------------------------------------------
    def create_table(self) -> bool:
        """Idempotent (``dispatcher bootstrap``). True when created now; an existing table with
        another key schema is a :class:`ConfigError` (the reader would find nothing in it)."""
        try:
            self.client.create_table(
                TableName=self.table,
                BillingMode="PAY_PER_REQUEST",
                AttributeDefinitions=[{"AttributeName": "pod", "AttributeType": "S"},
                                      {"AttributeName": "job", "AttributeType": "S"}],
                KeySchema=[{"AttributeName": KEY, "KeyType": "HASH"}],
                GlobalSecondaryIndexes=[{
                    "IndexName": INDEX,
                    "KeySchema": [{"AttributeName": "job", "KeyType": "HASH"},
                                  {"AttributeName": "pod", "KeyType": "RANGE"}],
                    "Projection": {"ProjectionType": "ALL"},
                }],
                SSESpecification={"Enabled": True},
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ResourceInUseException", "TableAlreadyExistsException"):
                raise translate(exc, f"create metrics table {self.table}") from exc
            self._check_existing()
            return False
        except BotoCoreError as exc:
            raise translate(exc, f"create metrics table {self.table}") from exc
        self.client.get_waiter("table_exists").wait(TableName=self.table, WaiterConfig={"Delay": 1})
        return True

    def _check_existing(self) -> None:
        try:
            table = self.client.describe_table(TableName=self.table)["Table"]
        except (ClientError, BotoCoreError) as exc:
            raise translate(exc, f"describe metrics table {self.table}") from exc
        keys = [(k["AttributeName"], k["KeyType"]) for k in table["KeySchema"]]
        indexes = {g["IndexName"]: [(k["AttributeName"], k["KeyType"]) for k in g["KeySchema"]]
                   for g in table.get("GlobalSecondaryIndexes", [])}
        if keys != [(KEY, "HASH")] or indexes.get(INDEX) != [("job", "HASH"), ("pod", "RANGE")]:
            raise ConfigError(
                f"SWEEPQ_METRICS_TABLE: table {self.table!r} exists with key {keys} and indexes {sorted(indexes)}, "
                f"not key pod and index {INDEX} (job, pod) — point SWEEPQ_METRICS_TABLE at the metrics table"
            )

    # -- reads -------------------------------------------------------------------------------
    def read(self, jobs: Iterable[JobRef], *, template_patterns: Mapping[str, str] | None = None) -> MetricsRead:
        """The verified item of each job in ``jobs`` that has one. ``template_patterns``: job →
        pod-name pattern from the operator's template entry (kind ``template`` only)."""
        refs = {job: (kind, attempt) for kind, job, attempt in jobs}
        patterns = dict(template_patterns or {})
        first_pods = {job: predictable_pod(kind, job) for job, (kind, _) in refs.items()}
        job_of = {pod: job for job, pod in first_pods.items() if pod is not None}
        found: dict[str, list[dict[str, Any]]] = {}
        unread: list[str] = []
        for key, raw in self._batch_get(list(job_of), unread_out=unread):
            found.setdefault(job_of[key], []).append(raw)
        for job, first in first_pods.items():
            if first is None:
                found[job] = self._query_job(job)
        items: dict[str, MetricsItem] = {}
        ignored: list[Ignored] = []
        for job, raws in found.items():
            kind, attempt = refs[job]
            trusted = []
            for raw in raws:
                try:
                    trusted.append(verify(raw, kind=kind, job=job, attempt=attempt,
                                          template_pattern=patterns.get(job)))
                except UnverifiedItem as exc:
                    claimed = str(raw.get("pod", "?"))[:128]
                    ignored.append(Ignored(job=job, pod=claimed, reason=str(exc)))
                    log.warning(json.dumps({"event": "metrics-ignored", "job": job, "pod": claimed,
                                            "reason": str(exc)}))
            best = choose(trusted)
            if best is not None:
                items[job] = best
        return MetricsRead(verified=items, ignored=tuple(ignored), unread=tuple(job_of[key] for key in unread))

    def _read_error(self, exc: ClientError | BotoCoreError, what: str) -> Exception:
        """A missing table is the operator's to fix (the same for every trial): say which setting."""
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return ConfigError(f"{what}: SWEEPQ_METRICS_TABLE: table {self.table!r} does not exist — run "
                               "`dispatcher bootstrap` (it creates the metrics table) or point SWEEPQ_METRICS_TABLE "
                               "at the stack's MetricsTableName")
        return translate(exc, what)

    def _batch_get(self, pods: list[str], *, unread_out: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        for start in range(0, len(pods), BATCH_GET_LIMIT):
            pending = [{KEY: {"S": pod}} for pod in pods[start:start + BATCH_GET_LIMIT]]
            for round_ in range(MAX_BATCH_ROUNDS):
                request = {self.table: {"Keys": pending, "ConsistentRead": True,
                                        "ProjectionExpression": _PROJECTION,
                                        "ExpressionAttributeNames": _PROJECTION_NAMES}}
                try:
                    out = self.client.batch_get_item(RequestItems=request)
                except (ClientError, BotoCoreError) as exc:
                    raise self._read_error(exc, f"read metrics of {len(pending)} jobs from {self.table}") from exc
                for raw in out.get("Responses", {}).get(self.table, []):
                    item = des(raw)
                    yield str(item.get(KEY)), item
                pending = out.get("UnprocessedKeys", {}).get(self.table, {}).get("Keys", [])
                if not pending:
                    break
                self.sleep(0.05 * 2 ** round_)  # DynamoDB's advice: back off before retrying
            unread_out += [key[KEY]["S"] for key in pending]

    def _query_job(self, job: str) -> list[dict[str, Any]]:
        raws: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            # only pods named after the job (its pods' names all start so): a pod of another job that
            # claims this one — any pod may write its own item — is never even paged through
            "TableName": self.table, "IndexName": INDEX,
            "KeyConditionExpression": "#job = :job AND begins_with(#pod, :prefix)",
            "ExpressionAttributeNames": {"#job": "job", "#pod": "pod", **_PROJECTION_NAMES},
            "ExpressionAttributeValues": {":job": {"S": job}, ":prefix": {"S": f"{job}-"}},
            "ProjectionExpression": _PROJECTION,
        }
        for _ in range(MAX_QUERY_PAGES):
            try:
                out = self.client.query(**kwargs)
            except (ClientError, BotoCoreError) as exc:
                raise self._read_error(exc, f"read metrics of job {job} from {self.table}/{INDEX}") from exc
            raws += [des(raw) for raw in out.get("Items", [])]
            if "LastEvaluatedKey" not in out:
                break
            kwargs["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        else:
            log.warning("metrics of job %s: more than %d index pages, the rest is not read", job, MAX_QUERY_PAGES)
        return raws


def trials_with_reported(metrics: MetricsStore, trials: list[dict[str, Any]], *,
                         kind: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """The trial items with the latest reported metrics of those not SUCCEEDED (from the metrics
    table, verified; :func:`dispatcher.core.metrics.with_reported`), and a note when the table
    could not be read (no permission, no table): the items are then returned as they are."""
    refs = reported_jobs(trials, kind=str(kind)) if kind and kind != "template" else []
    if not refs:
        return trials, None
    try:
        read = metrics.read(refs)
    except (SweepqError, ClientError, BotoCoreError) as exc:
        return trials, f"live metrics not shown: {exc}"
    return with_reported(trials, read.verified), None
