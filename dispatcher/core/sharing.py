"""What the planner shares and with whom: caps, team shares and quotas, the size of a trial, and
what every sweep holds now. Purely computational, no side effects.

* :class:`Caps` — the dispatcher-wide caps (``SWEEPQ_MAX_RUNNING``, ``SWEEPQ_MAX_GPUS``,
  ``SWEEPQ_MAX_WAITING``).
* :class:`SharePolicy` / :class:`TeamShare` — per team: a weight (equal by default), a quota
  (maximum jobs and GPUs) and optionally a Kueue queue. The operator policy (``core/policy.py``,
  CONTRACTS C3) maps onto it with :meth:`SharePolicy.from_teams`.
* :func:`trial_shape` — how many nodes and GPUs one trial of a sweep is launched with, and so
  counted with. An elastic range ``nodes: MIN:MAX`` is launched at the widest size the caps allow,
  ``min(MAX, ⌊GPU cap / gpus_per_node⌋)`` nodes (GPU cap = the smaller of ``SWEEPQ_MAX_GPUS`` and the
  team's ``max_gpus``), and the job is rendered with exactly that many replicas
  (:func:`sized_launch`): it can never grow past what it was counted for, and a range wider than
  the cluster no longer waits forever for ``MAX`` nodes. The size depends only on the sweep and
  the caps, so a job re-created after a crash (same deterministic name) has the same size.
  Why not count ``MIN``: the job is created with all its replicas and grows as their pods are
  scheduled, past what was counted. Why not start at whatever is free now: the size would have to
  be stored with the claim for a re-create to match, sweepq never resizes a running job (a trial
  started small stays small), and Kueue admits a job's whole pod set at once anyway. What the
  range still buys: torchrun keeps the trial going down to ``MIN`` nodes when a node is lost.
  A sweep whose ``MIN`` nodes exceed the caps can never run: :func:`fit_problems` says so with the
  numbers, for intake to reject it.
* :func:`claim_shape` — the size a claimed trial's job is (re-)created and counted at: the node
  count stored with its claim once the tick stores one (``LiveTrial.nodes``), else :func:`shape_for`
  now. With the count stored, caps changed between the claim and a re-create no longer change the
  job a deterministic name stands for.
* :func:`measure_usage` — the jobs, GPUs and Kueue-waiting jobs each sweep (and each team) holds,
  from the tick's records and observed jobs.

Teams: a sweep counts for the team the operator policy assigned at intake (``SweepRecord.team``),
else the default team — never for the ``team`` a sender wrote in its sweep file: under the default
policy (no teams) that is only a label, and counting it would let a sender take a team's share per
made-up name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from dispatcher.core.jobs import JobStatus
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.records import SweepRecord

DEFAULT_TEAM = "default"
# Team weights are bounded so that shares divided by weights stay finite and comparable (a weight of
# 5e-324 made every share of that team infinite); the operator policy's ``weight`` has the same range.
MIN_WEIGHT, MAX_WEIGHT = 0.001, 1000.0
# CONTRACTS C7: JobStatus.admission — a job Kueue has not admitted (yet, or again) waits for quota.
WAITING_ADMISSIONS = frozenset({"QUEUED", "EVICTED"})


def _check_limit(name: str, value: int | None, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{where}.{name}: {value!r} is not a non-negative whole number — write e.g. {name}: 8, "
                         "or leave it out for no limit")


@dataclass(frozen=True)
class Caps:
    """Dispatcher-wide limits; ``None`` = unlimited.

    ``max_waiting`` bounds, per Kueue queue, the jobs created and not (yet) admitted by Kueue: enough
    pending demand for Kueue to fill its quota, never the whole backlog. Waiting jobs still count
    against ``max_jobs``/``max_gpus`` (and team quotas): Kueue may admit any of them at any moment, and
    a cap sweepq could not enforce after admission would be no cap."""

    max_jobs: int | None = None
    max_gpus: int | None = None
    max_waiting: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_jobs", "max_gpus", "max_waiting"):
            _check_limit(name, getattr(self, name), "caps")


@dataclass(frozen=True)
class TeamShare:
    """One team's part of the cluster. ``weight`` sets its fair share (relative to the other teams
    with work); ``max_jobs``/``max_gpus`` are a hard quota (never borrowed past); ``kueue_queue`` is the
    LocalQueue its sweeps use when their launch settings name none; ``max_waiting`` overrides
    :attr:`Caps.max_waiting` for that queue."""

    weight: float = 1.0
    max_jobs: int | None = None
    max_gpus: int | None = None
    kueue_queue: str | None = None
    max_waiting: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.weight, bool) or not isinstance(self.weight, (int, float)) or not (
            math.isfinite(self.weight) and MIN_WEIGHT <= self.weight <= MAX_WEIGHT
        ):
            raise ValueError(f"team.weight: {self.weight!r} must be a positive number from {MIN_WEIGHT:g} to "
                             f"{MAX_WEIGHT:g} — write e.g. weight: 2")
        for name in ("max_jobs", "max_gpus", "max_waiting"):
            _check_limit(name, getattr(self, name), "team")


@dataclass(frozen=True)
class SharePolicy:
    """Teams by name; a team the policy does not name gets :attr:`default_share`.

    ``reserve_gpus``: when the sweep first in line needs more GPUs than are free, hold freed GPUs for
    it instead of handing them to narrower trials (see ``core/planner.py``). On by default; off
    trades the no-starvation bound for a little utilization."""

    teams: Mapping[str, TeamShare] = field(default_factory=dict)
    default_team: str = DEFAULT_TEAM
    default_share: TeamShare = TeamShare()
    reserve_gpus: bool = True

    @classmethod
    def from_teams(cls, teams: Mapping[str, Any], **kwargs: Any) -> "SharePolicy":
        """Build from the operator policy's team entries: anything with ``weight``, ``max_jobs``,
        ``max_gpus``, ``kueue_queue`` and ``max_waiting`` attributes or mapping keys (the quota may
        sit under ``quota``); missing ones take defaults."""
        def get(entry: Any, name: str) -> Any:
            value = entry.get(name) if isinstance(entry, Mapping) else getattr(entry, name, None)
            if value is None and name in ("max_jobs", "max_gpus"):
                quota = entry.get("quota") if isinstance(entry, Mapping) else getattr(entry, "quota", None)
                if quota is not None:
                    value = quota.get(name) if isinstance(quota, Mapping) else getattr(quota, name, None)
            return value

        out = {}
        for name, entry in teams.items():
            weight = get(entry, "weight")
            out[name] = TeamShare(
                weight=1.0 if weight is None else weight, max_jobs=get(entry, "max_jobs"),
                max_gpus=get(entry, "max_gpus"), kueue_queue=get(entry, "kueue_queue"),
                max_waiting=get(entry, "max_waiting"),
            )
        return cls(teams=out, **kwargs)

    def team_of(self, record: SweepRecord) -> str:
        """The team a sweep's trials count for: the one the operator policy assigned at intake
        (``record.team``), else the default team. The sweep file's own ``launch.team`` never counts:
        see the module docstring."""
        return record.team or self.default_team

    def team_of_label(self, label: str | None) -> str | None:
        """The team a job's ``sweepq.io/team`` label (:attr:`JobStatus.team`) counts for, for a job
        whose sweep the planner is not given (cancelled or finished, its jobs still terminating): a
        team the policy names, else the default team; None (the cluster only) for a job without one."""
        if not label:
            return None
        return label if label in self.teams else self.default_team

    def share(self, team: str) -> TeamShare:
        return self.teams.get(team, self.default_share)

    def kueue_queue(self, record: SweepRecord) -> str | None:
        return record.launch.kueue_queue or self.share(self.team_of(record)).kueue_queue

    def max_waiting(self, queue: str, team: str, caps: Caps) -> int | None:
        override = self.share(team).max_waiting
        return caps.max_waiting if override is None else override


def submitter_key(record: SweepRecord) -> str:
    """Fair share within a team is per submitter (the SQS SenderId). A record without one (accepted
    before the sender was stored) is its own submitter, so old sweeps keep a share each."""
    return f"sender:{record.submitter}" if record.submitter else f"sweep:{record.sweep_id}"


# --------------------------------------------------------------------------- the size of a trial


@dataclass(frozen=True)
class TrialShape:
    """What one trial is launched with and counted as: ``nodes`` replicas, ``gpus`` in all, one job."""

    nodes: int
    gpus: int


def gpu_limit(caps: Caps, team: TeamShare) -> int | None:
    limits = [v for v in (caps.max_gpus, team.max_gpus) if v is not None]
    return min(limits) if limits else None


def trial_shape(launch: LaunchSettings, *, gpus: int | None) -> TrialShape | None:
    """The size a trial is launched at under a GPU limit ``gpus`` (None = unlimited), or None when
    even ``min_nodes`` nodes exceed it (the sweep can never run). See the module docstring."""
    per_node = launch.gpus_per_node
    if per_node == 0 or gpus is None:
        return TrialShape(launch.max_nodes, per_node * launch.max_nodes)
    nodes = min(launch.max_nodes, gpus // per_node)
    if nodes < launch.min_nodes:
        return None
    return TrialShape(nodes, nodes * per_node)


def shape_for(record: SweepRecord, policy: SharePolicy, caps: Caps) -> TrialShape | None:
    return trial_shape(record.launch, gpus=gpu_limit(caps, policy.share(policy.team_of(record))))


def sized_launch(launch: LaunchSettings, shape: TrialShape) -> LaunchSettings:
    """The launch settings the backend renders for a trial of this shape: ``max_nodes`` becomes the
    shape's nodes (elastic range ``MIN:nodes``), so the job asks for exactly what was counted."""
    if shape.nodes == launch.max_nodes:
        return launch
    return launch.model_copy(update={"max_nodes": shape.nodes})


def claim_shape(record: SweepRecord, trial: Any, *, policy: SharePolicy, caps: Caps) -> TrialShape:
    """The size a claimed trial's job is created — and re-created after a crash, under the same
    deterministic name — and counted at: the node count stored with its claim (``trial.nodes``, a
    positive whole number; the tick stores ``Launch.nodes`` there), else the size the caps give
    now (:func:`shape_for`), else ``max_nodes`` (the caps were lowered below the sweep's ``MIN``)."""
    nodes = getattr(trial, "nodes", None)
    if isinstance(nodes, int) and not isinstance(nodes, bool) and nodes > 0:
        return TrialShape(nodes, nodes * record.launch.gpus_per_node)
    shape = shape_for(record, policy, caps) or trial_shape(record.launch, gpus=None)
    assert shape is not None  # unlimited GPUs always give a shape
    return shape


def fit_problems(launch: LaunchSettings, *, team: str, policy: SharePolicy, caps: Caps) -> list[str]:
    """Why no trial of a sweep with these settings could ever start under these caps and this team's
    quota — one line per problem, each with the numbers and the fix. Empty: the smallest trial fits.
    Intake rejects a sweep with problems (``SpecError(problems)``)."""
    share = policy.share(team)
    problems = []
    for where, value, setting in (("the dispatcher", caps.max_jobs, "SWEEPQ_MAX_RUNNING"),
                                  (f"team {team!r}", share.max_jobs, "its max_jobs quota")):
        if value == 0:
            problems.append(f"{where} allows 0 jobs ({setting} is 0) — no trial can start; ask the operator "
                            "to raise it")
    per_node, nodes = launch.gpus_per_node, launch.min_nodes
    smallest = per_node * nodes
    for where, value, setting in (("SWEEPQ_MAX_GPUS", caps.max_gpus, "the dispatcher's GPU cap"),
                                  (f"team {team!r} max_gpus", share.max_gpus, "the team's GPU quota")):
        if value is not None and smallest > value:
            fix = f"nodes: '{value // per_node}:…' or fewer" if value >= per_node else \
                f"gpus_per_node: {value} or fewer"
            problems.append(
                f"nodes: the smallest trial needs {nodes} node(s) × gpus_per_node {per_node} = {smallest} GPUs, but "
                f"{where} is {value} ({setting}) — it could never start; use {fix}, or ask the operator to raise it"
            )
    queue = launch.kueue_queue or share.kueue_queue
    if queue is not None and policy.max_waiting(queue, team, caps) == 0:
        problems.append(f"kueue_queue: {queue!r} allows 0 jobs waiting for Kueue quota (max_waiting 0), and every "
                        "job of a Kueue queue waits until admitted — set SWEEPQ_MAX_WAITING ≥ 1 or drop kueue_queue")
    return problems


# --------------------------------------------------------------------------- what is held now


@dataclass(frozen=True)
class Usage:
    """Held resources: ``jobs`` and ``gpus`` count against caps and quotas; ``queued`` of those jobs
    wait for Kueue admission (count against ``max_waiting`` as well)."""

    jobs: int = 0
    gpus: int = 0
    queued: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(self.jobs + other.jobs, self.gpus + other.gpus, self.queued + other.queued)


def waits_for_quota(job: JobStatus) -> bool:
    """CONTRACTS C7: ``job.admission`` QUEUED or EVICTED (an enum member or its name/value, any case).
    A job whose backend reports no admission (None, or a JobStatus before C7) counts as admitted."""
    admission = getattr(job, "admission", None)
    if admission is None:
        return False
    names = {str(getattr(admission, "name", "")).upper(), str(getattr(admission, "value", admission)).upper()}
    return bool(names & WAITING_ADMISSIONS)


@dataclass(frozen=True)
class Measured:
    by_sweep: Mapping[str, Usage]
    cluster: Usage  # every non-terminal managed job, also those of sweeps not in the records
    # jobs of sweeps not in the records (cancelled or finished, still terminating), by their team label
    by_team: Mapping[str, Usage] = field(default_factory=dict)
    # per team: the fewest GPUs one of its held jobs holds, and the fewest of those holding any (None:
    # none does) — what a job of the team ending gives back at least (see ``Allocator.reserve``)
    narrowest: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)


def job_gpus(job: JobStatus, record: SweepRecord | None, *, policy: SharePolicy, caps: Caps) -> int:
    """The GPUs an observed job counts for: what its backend reports, or — when that is garbage (a
    negative number, e.g. an edited ``sweepq.io/gpus`` annotation) — the size its claim was made at
    (:func:`claim_shape`) for a sweep the planner knows, else 0."""
    gpus = job.gpus
    if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus >= 0:
        return gpus
    if record is None:
        return 0
    trial = record.live.get(job.trial_index)
    return claim_shape(record, trial if trial is not None and trial.attempt == job.attempt else None,
                       policy=policy, caps=caps).gpus


def measure_usage(records: Iterable[SweepRecord], jobs: Mapping[str, JobStatus], *, policy: SharePolicy,
                  caps: Caps) -> Measured:
    """What each sweep holds: its observed non-terminal jobs (superseded attempts still being deleted
    included: they hold GPUs), plus each live trial holding a slot whose job is not observed running
    (claimed, not yet created or not yet listed), counted at its :func:`claim_shape`. A sweep in a
    Kueue queue counts as waiting its jobs Kueue reports QUEUED or EVICTED, and every unobserved one
    (Kueue creates them suspended). A job of a sweep not in ``records`` counts for the cluster, and
    for the team its label names (:meth:`SharePolicy.team_of_label`), so a team's quota still holds
    while a cancelled sweep's jobs terminate. ``records`` must name each sweep once."""
    by_id = {r.sweep_id: r for r in records}
    busy = {name: job for name, job in jobs.items() if not job.phase.terminal}
    by_sweep: dict[str, Usage] = {sid: Usage() for sid in by_id}
    by_team: dict[str, Usage] = {}
    widths: dict[str, set[int]] = {}
    other = Usage()
    for job in busy.values():
        record = by_id.get(job.sweep_id)
        held = Usage(1, job_gpus(job, record, policy=policy, caps=caps), 1 if waits_for_quota(job) else 0)
        if record is not None:
            by_sweep[job.sweep_id] += held
            team: str | None = policy.team_of(record)
        else:
            team = policy.team_of_label(getattr(job, "team", None))
            if team is None:
                other += held
            else:
                by_team[team] = by_team.get(team, Usage()) + held
        if team is not None:
            widths.setdefault(team, set()).add(held.gpus)
    for r in by_id.values():
        queued = 1 if policy.kueue_queue(r) else 0
        for t in r.live.values():
            if t.state.holds_slot and t.job_name not in busy:
                gpus = claim_shape(r, t, policy=policy, caps=caps).gpus
                by_sweep[r.sweep_id] += Usage(1, gpus, queued)
                widths.setdefault(policy.team_of(r), set()).add(gpus)
    cluster = other
    for usage in (*by_sweep.values(), *by_team.values()):
        cluster += usage
    narrowest = {team: (min(w), min((g for g in w if g > 0), default=None)) for team, w in widths.items()}
    return Measured(by_sweep, cluster, by_team, narrowest)
