"""The trial metrics channel (CONTRACTS C1), reader side. Purely computational, no side effects.

Trials never write the sweep table. On every pod, the trainer process with LOCAL_RANK 0 writes
one item of the metrics table, keyed by its own pod name (``POD_NAME``)::

    {"pod": "<pod>", "job": "<job name>", "trial_id": "...", "attempt": 2, "world_size": 8,
     "metrics": {"eval/accuracy": 0.91, ...},            # latest values (W&B summary keys)
     "history": {"0": {"eval/accuracy": 0.80}, ...},      # position → values; position = index
                                                          # of the evaluation in the trial's life
     "status": "running", "final": {...}, "updated_at": 1767225600}

The trainer's IAM policy lets a pod write only the item whose key is its own pod name
(``dynamodb:LeadingKeys`` = the EKS Pod Identity session tag ``kubernetes-pod-name``) and only
the attributes in :data:`ATTRIBUTES`. Everything else in the item is the pod's word, so the
dispatcher trusts an item for job ``J`` (kind ``K``, attempt ``a``) only when

* ``item.job == J``, ``item.attempt == a`` and ``item.trial_id`` is the trial id of ``J``
  (``<sweep id>-<index>``, read from the job name: :func:`expected_trial_id`), and
* ``item.pod`` fully matches the pod-name grammar of ``K`` for ``J`` (:func:`pod_belongs_to`).

A succeeded trial's final metrics (:func:`final_values`) are copied by the dispatcher onto its
trial item; only finite numbers, at most :data:`MAX_RECORDED` names of at most
:data:`MAX_RECORDED_NAME` characters, the sweep's metric first.

Why no other job's pod can pass the grammar: every job name ends in a segment ``a<digits>``
(``<sweep id>-<index>-a<attempt>``, :func:`dispatcher.core.identity.job_name`). If a pod name
``p`` were ``J-s`` and ``K-t`` for jobs ``J`` shorter than ``K``, then ``K = J-u`` and ``s =
u-t``, so the suffix ``s`` of ``J``'s grammar would hold a dash-separated segment ``a<digits>``
that is followed by more segments. No grammar here has one: its only segment that can start
with ``a`` is a 5-character random suffix, and that one is always last. The exhaustive test in
``tests/unit/test_metrics_core.py`` checks the same thing by construction.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from dispatcher.core.identity import parse_job_name
from dispatcher.core.identity import trial_id as make_trial_id

# The only attributes a metrics item may have; the trainer policy's `dynamodb:Attributes` list
# (infra/aws/sweepq.yaml) is checked against this tuple.
ATTRIBUTES: tuple[str, ...] = (
    "pod", "job", "trial_id", "attempt", "world_size", "metrics", "history", "status", "final", "updated_at",
)
REQUIRED: tuple[str, ...] = ("pod", "job", "attempt", "status", "updated_at")
STATUSES: tuple[str, ...] = ("running", "finished", "stopped", "preempted", "failed")
TERMINAL_STATUSES: frozenset[str] = frozenset({"finished", "stopped", "preempted", "failed"})
KEY = "pod"
INDEX = "by_job"  # GSI: hash `job`, range `pod`, projection ALL

# Bounds that keep one hostile item from costing the dispatcher more than a normal one.
MAX_METRICS = 256
MAX_NAME = 256
MAX_POSITIONS = 100_000
# Positions at or past this are not read (the item stays valid): every series is built dense up to
# the last position, so one entry at position 999,999,999 would otherwise cost the tick a list that
# long. 10,000 evaluations is far past any Hyperband band a sweep uses; a band beyond it never stops.
MAX_POSITION = 10_000
# What a succeeded trial's trial item gets (it also holds params and the attempt history, 400 KB in all).
MAX_RECORDED = 64
MAX_RECORDED_NAME = 128

_N = "(?:0|[1-9][0-9]*)"  # a decimal index as Kubernetes writes it (strconv.Itoa: no leading zeros)
_RANDOM = "[a-z0-9]{5}"  # the apiserver's generateName suffix (utilrand.String(5))
# kind → pod-name suffix after "<job>-" (full match, ASCII only).
POD_SUFFIX: dict[str, str] = {
    "pytorchjob": rf"(?:worker|master)-{_N}",
    "elasticjob": rf"worker-{_N}",
    "trainjob": rf"node-{_N}-{_N}-{_RANDOM}",  # JobSet: <jobset>-<replicated job>-<job index>-<pod index>-<rand>
    "job": rf"(?:{_N}-)?{_RANDOM}",  # batch Job: <job>-<rand>, indexed: <job>-<index>-<rand>
    "local": rf"local-{_N}",
}
# Kinds whose first pod has a name known in advance: one BatchGetItem reads them all.
_PREDICTABLE = {"pytorchjob": "worker-0", "elasticjob": "worker-0", "local": "local-0"}
_POSITION = re.compile(r"0|[1-9][0-9]{0,8}", re.ASCII)


class UnverifiedItem(ValueError):
    """A metrics item the dispatcher must not trust; the message says why (never a value dump)."""


Number = float | int | None


@dataclass(frozen=True)
class MetricsItem:
    """A verified metrics item. ``history`` maps position → metric values; ``None`` = NaN/inf."""

    pod: str
    job: str
    attempt: int
    status: str
    updated_at: float
    trial_id: str | None = None
    world_size: int | None = None
    metrics: Mapping[str, Number] = field(default_factory=dict)
    history: Mapping[int, Mapping[str, Number]] = field(default_factory=dict)
    final: Mapping[str, Number] | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


# --------------------------------------------------------------------------- pod names


def pod_pattern(kind: str, job: str, *, template_pattern: str | None = None) -> re.Pattern[str] | None:
    """The compiled full-match pattern of ``kind``'s pod names for ``job``; ``None`` when no pod
    of that kind can be trusted (kind ``template`` without an operator pattern, unknown kinds,
    or a ``job`` that is not a sweepq job name)."""
    if parse_job_name(job) is None:
        return None
    suffix = POD_SUFFIX.get(kind)
    if kind == "template" and template_pattern:
        suffix = template_pattern
    if suffix is None:
        return None
    return re.compile(rf"{re.escape(job)}-(?:{suffix})", re.ASCII)


def pod_belongs_to(kind: str, job: str, pod: str, *, template_pattern: str | None = None) -> bool:
    """True when ``pod`` is a name the ``kind`` controller gives to a pod of ``job``.

    Kind ``template`` is never trusted unless the operator's policy gives ``template_pattern``,
    a regular expression for the part after ``<job>-`` (the operator vouches that it cannot
    match another job's pods: it must not contain a segment ``a<digits>`` followed by more)."""
    if not isinstance(pod, str) or not isinstance(job, str):
        return False
    pattern = pod_pattern(kind, job, template_pattern=template_pattern)
    return pattern is not None and pattern.fullmatch(pod) is not None


def predictable_pod(kind: str, job: str) -> str | None:
    """The pod name that every job of ``kind`` has (its first worker), or ``None``."""
    suffix = _PREDICTABLE.get(kind)
    return f"{job}-{suffix}" if suffix else None


# --------------------------------------------------------------------------- items


def _number(value: Any, *, where: str) -> Number:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnverifiedItem(f"{where}: a {type(value).__name__}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _values(raw: Any, *, where: str) -> dict[str, Number]:
    if not isinstance(raw, Mapping):
        raise UnverifiedItem(f"{where}: a {type(raw).__name__}, not a map of metric values")
    if len(raw) > MAX_METRICS:
        raise UnverifiedItem(f"{where}: {len(raw)} metrics, more than {MAX_METRICS}")
    out: dict[str, Number] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME:
            raise UnverifiedItem(f"{where}: a metric name that is not a string of 1..{MAX_NAME} characters")
        out[name] = _number(value, where=f"{where}.{name[:60]}")
    return out


def _history(raw: Any) -> dict[int, dict[str, Number]]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise UnverifiedItem(f"history: a {type(raw).__name__}, not a map of positions")
    if len(raw) > MAX_POSITIONS:
        raise UnverifiedItem(f"history: {len(raw)} positions, more than {MAX_POSITIONS}")
    out: dict[int, dict[str, Number]] = {}
    for position, values in raw.items():
        if not isinstance(position, str) or not _POSITION.fullmatch(position):
            raise UnverifiedItem(f"history: position {str(position)[:20]!r} is not a decimal index")
        values_there = _values(values, where=f"history.{position}")  # checked wherever it is
        if int(position) < MAX_POSITION:  # series are dense up to the last position: bound the position too
            out[int(position)] = values_there
    return dict(sorted(out.items()))


def _integer(raw: Mapping[str, Any], name: str, *, minimum: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UnverifiedItem(f"{name}: {str(value)[:20]!r} is not an integer ≥ {minimum}")
    return value


def parse_item(raw: Mapping[str, Any]) -> MetricsItem:
    """Check the shape of a deserialised item (numbers as int/float, NULL as None). Raises
    :class:`UnverifiedItem` for unknown or missing attributes and wrongly typed values."""
    if not isinstance(raw, Mapping):
        raise UnverifiedItem(f"item: a {type(raw).__name__}, not a map")
    unknown = sorted(str(k)[:40] for k in raw if k not in ATTRIBUTES)
    if unknown:
        raise UnverifiedItem(f"attributes {unknown} are not metrics attributes (allowed: {', '.join(ATTRIBUTES)})")
    missing = [k for k in REQUIRED if raw.get(k) is None]
    if missing:
        raise UnverifiedItem(f"attributes {missing} are missing")
    for name in ("pod", "job", "status", "trial_id"):
        if name in raw and raw[name] is not None and not isinstance(raw[name], str):
            raise UnverifiedItem(f"{name}: a {type(raw[name]).__name__}, not a string")
    if raw["status"] not in STATUSES:
        raise UnverifiedItem(f"status: {str(raw['status'])[:20]!r} is not one of {', '.join(STATUSES)}")
    updated_at = _number(raw["updated_at"], where="updated_at")
    attempt = _integer(raw, "attempt", minimum=1)
    if updated_at is None or attempt is None:  # NaN/inf, or a NULL that REQUIRED let through
        raise UnverifiedItem("updated_at and attempt must be numbers")
    final = raw.get("final")
    return MetricsItem(
        pod=raw["pod"],
        job=raw["job"],
        attempt=attempt,
        status=raw["status"],
        updated_at=float(updated_at),
        trial_id=raw.get("trial_id"),
        world_size=_integer(raw, "world_size", minimum=1),
        metrics=_values(raw.get("metrics") or {}, where="metrics"),
        history=_history(raw.get("history")),
        final=None if final is None else _values(final, where="final"),
    )


def expected_trial_id(job: str) -> str | None:
    """The trial id (``TRIAL_ID``) that sweepq gives the trials of ``job``; ``None`` for a name
    sweepq did not make."""
    parsed = parse_job_name(job)
    return None if parsed is None else make_trial_id(parsed[0], parsed[1])


def verify(raw: Mapping[str, Any], *, kind: str, job: str, attempt: int,
           template_pattern: str | None = None) -> MetricsItem:
    """The item as a :class:`MetricsItem` if the dispatcher may trust it for ``job`` (of ``kind``,
    attempt ``attempt``); raises :class:`UnverifiedItem` naming the failed check otherwise."""
    item = parse_item(raw)
    if item.job != job:
        raise UnverifiedItem(f"job: the item names job {item.job[:64]!r}, not {job!r}")
    if item.attempt != attempt:
        raise UnverifiedItem(f"attempt: the item is of attempt {item.attempt}, not {attempt}")
    expected = expected_trial_id(job)
    if item.trial_id is None or item.trial_id != expected:
        named = "no trial" if item.trial_id is None else f"trial {item.trial_id[:64]!r}"
        raise UnverifiedItem(f"trial_id: the item names {named}, not {expected!r}")
    if not pod_belongs_to(kind, job, item.pod, template_pattern=template_pattern):
        raise UnverifiedItem(f"pod: {item.pod[:80]!r} is not a pod name of {kind} job {job!r}")
    return item


def choose(items: Iterable[MetricsItem]) -> MetricsItem | None:
    """One item per job from several verified pods of it (their values are all-reduced, so any
    will do): the most recently updated, ties broken by the smallest pod name (deterministic)."""
    return min(items, key=lambda item: (-item.updated_at, item.pod), default=None)


# --------------------------------------------------------------------------- final metrics


@dataclass(frozen=True)
class FinalMetrics:
    """What the dispatcher records for a succeeded trial, and why anything was left out."""

    values: Mapping[str, float | int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


def final_values(item: MetricsItem, *, metric: str | None = None) -> FinalMetrics:
    """The final metrics of a verified item whose job succeeded: ``final`` (the trainer's last
    report), else ``metrics``, of an item whose status is ``finished``. Non-finite values, names
    over :data:`MAX_RECORDED_NAME` characters and names beyond the first :data:`MAX_RECORDED`
    (``metric`` first, then by name) are left out, each with a note."""
    if item.status != "finished":
        return FinalMetrics(notes=(f"status: {item.status!r}, not 'finished' — the trial wrote no final metrics",))
    values, notes = recorded(item.final if item.final is not None else item.metrics, metric=metric, where="final")
    return FinalMetrics(values=values, notes=tuple(notes))


def recorded(source: Mapping[str, float | int | None], *, metric: str | None,
             where: str) -> tuple[dict[str, float | int], list[str]]:
    """The values of ``source`` (a verified item's ``final`` or ``metrics``) that go onto a trial
    item: finite ones, :func:`storable`, names up to :data:`MAX_RECORDED_NAME` characters, the
    first :data:`MAX_RECORDED` names (``metric`` first, then by name) — and a note for each left
    out. Used for a success's final metrics and an early-stopped trial's "what it reached" alike:
    whatever its pod wrote, the trial's own write always fits and always serialises."""
    notes: list[str] = []
    values: dict[str, float | int] = {}
    names = sorted(source, key=lambda name: (name != metric, name))
    for position, name in enumerate(names):
        value = source[name]
        if value is None:
            notes.append(f"{where}.{name[:60]}: not a finite number")
        elif len(name) > MAX_RECORDED_NAME:
            notes.append(f"{where}.{name[:60]}…: a name over {MAX_RECORDED_NAME} characters")
        elif len(values) >= MAX_RECORDED:
            notes.append(f"{where}: {len(names) - position} names beyond the first {MAX_RECORDED} left out")
            break
        else:
            values[name] = storable(value)
    return values, notes


def storable(value: float | int) -> float | int:
    """``value`` as DynamoDB can store it again: a whole number read back from a large number
    (``3E+38`` is a 39-digit int in Python) has more than DynamoDB's 38 significant digits, so it
    becomes the float it is (a diverging loss must never make the trial's write fail)."""
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) > 38:
        return float(value)
    return value


def reported_jobs(trials: Iterable[Mapping[str, Any]], *, kind: str) -> list[tuple[str, str, int]]:
    """``(kind, job, attempt)`` of the trial items (as the store returns them) whose latest
    attempt's metrics are only in the metrics table: those not SUCCEEDED (a succeeded trial's
    final metrics are on its trial item) that name a job of their own trial and attempt."""
    refs = []
    for trial in trials:
        job, attempt = trial.get("job"), trial.get("attempt")
        if trial.get("state") == "SUCCEEDED" or not isinstance(job, str) or not isinstance(attempt, int):
            continue
        parsed = parse_job_name(job)
        if parsed is not None and parsed[2] == attempt and parsed[1] == trial.get("index"):
            refs.append((kind, job, attempt))
    return refs


def with_reported(trials: Iterable[Mapping[str, Any]], reported: Mapping[str, MetricsItem]) -> list[dict[str, Any]]:
    """The trial items, each not SUCCEEDED one whose job has a verified item in ``reported``
    (job → item) with ``metrics`` = that item's latest values (non-finite ones left out), for
    the views (``producer status --trials``, the demo): a running, failed or cancelled trial's
    last report, shown as not final."""
    out = []
    for trial in trials:
        item = reported.get(str(trial.get("job"))) if trial.get("state") != "SUCCEEDED" else None
        if item is not None and item.attempt == trial.get("attempt"):
            trial = {**trial, "metrics": {k: v for k, v in item.metrics.items() if v is not None}}
        out.append(dict(trial))
    return out


def template_suffix(pod_name_pattern: str | None) -> str | None:
    """The part after ``<job>-`` of an operator template's ``pod_name_pattern`` (``{job}`` = the
    job name), as :func:`pod_pattern` takes it; ``None`` (no pod of the template trusted) unless
    the pattern is ``{job}-<regex>`` with ``{job}`` once."""
    prefix = "{job}-"
    if not pod_name_pattern or not pod_name_pattern.startswith(prefix) or pod_name_pattern.count("{job}") != 1:
        return None
    suffix = pod_name_pattern[len(prefix):]
    try:
        re.compile(suffix)
    except re.error:
        return None
    return suffix or None


# --------------------------------------------------------------------------- history


def history_series(item: MetricsItem, metric: str) -> list[Number]:
    """``metric`` at positions 0 … last position of the item's history; ``None`` where that
    evaluation did not log it (or logged NaN/inf). Empty when there is no history."""
    if not item.history:
        return []
    last = max(item.history)
    return [item.history.get(position, {}).get(metric) for position in range(last + 1)]


def value_at(item: MetricsItem, metric: str, position: int) -> Number:
    """``metric`` at history ``position`` (Hyperband's band ``b``), or ``None``."""
    return item.history.get(position, {}).get(metric)


def history_rows(item: MetricsItem) -> list[dict[str, float | int]]:
    """The history as W&B's ``sweeps`` engine reads a run's history: one dict per position, in
    position order, gaps as ``{}`` so that list index = position; NaN/inf values left out."""
    if not item.history:
        return []
    rows: list[dict[str, float | int]] = []
    for position in range(max(item.history) + 1):
        values = item.history.get(position, {})
        rows.append({name: value for name, value in values.items() if value is not None})
    return rows
