"""Claim, then create: the launch half of the tick, for :class:`dispatcher.tick.Dispatcher` (a mixin).

* The planner (pure, :func:`dispatcher.core.planner.make_plan`) shares the free job slots and GPUs
  among the operator policy's teams (their weights and ``quota``), then submitters, then sweeps,
  under ``SWEEPQ_MAX_RUNNING`` / ``SWEEPQ_MAX_GPUS`` / ``SWEEPQ_MAX_WAITING`` and the per-tick launch
  limit; paused, held and cancelling sweeps count but launch nothing. Each launch carries the size it
  was counted at (an elastic ``nodes: MIN:MAX`` shrunk to what the GPU limits allow): the claim
  stores that node count and the job — created now or re-created after a crash — is rendered with
  it (``sharing.sized_launch`` of ``sharing.claim_shape``).
* Each launch *claims* its trial (one
  transaction: cursor or WAITING-attempt condition + the lease check) before its job is created
  under the attempt's deterministic name (409 AlreadyExists = already launched = success).
* Kubernetes calls are not fenced by DynamoDB, so right before each create the lease is renewed
  once half of it is gone (:meth:`Launching._ensure_lease`): no create starts within the skew
  margin of our deadline, and a lease we lost stops the tick.
* Every tick admits each sweep's launch settings *as its sender asked for them* again, under the
  operator policy **as it is now** (:meth:`Launching.apply_policy`): what the tick renders is what
  the policy fills and forces today (a lowered limit clamps; the sender's team is looked up
  again). A sweep the policy no longer allows (a Secret, image or ServiceAccount withdrawn, its
  sender removed from its team, its team deleted) creates nothing — no fresh claim, no retry, no
  re-creation of a claimed trial — and says why (``policy_hold`` on its item, judged again every
  tick: restoring the grant resumes it); its running trials go on. A policy that cannot be read
  stops every launch of the tick (fail closed) and blames no sweep; cancels, completions and
  leak deletion go on.
* A create whose LAUNCHED write is refused withdraws its job when the attempt is no longer live
  (a tick that took over cancelled the sweep meanwhile); the next tick's leak check is the
  guarantee.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any, Mapping

from dispatcher.adapters.store import LeaseLost
from dispatcher.core.errors import Conflict, PermanentError, SweepqError, TransientError
from dispatcher.core.identity import job_name, trial_id
from dispatcher.core.jobs import JobStatus
from dispatcher.core.planner import Launch, make_plan
from dispatcher.core.policy import Policy
from dispatcher.core.policy_checks import violations_reason
from dispatcher.core.reconcile import Relaunch, Transition, fail_attempt
from dispatcher.core.records import LiveTrial, SweepRecord, TrialState, planning_view
from dispatcher.core.sharing import Caps, SharePolicy, TrialShape, claim_shape, sized_launch
from dispatcher.report import TickReport
from dispatcher.trials import launch_request

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dispatcher.tick_host import DispatcherHost

log = logging.getLogger("dispatcher.tick")


class Launching:
    def _ensure_lease(self: DispatcherHost) -> None:
        """Right before a job create (Kubernetes calls are not fenced by DynamoDB): renew when half
        the lease is gone, so no create starts within ``skew_s`` of our deadline; a lease we no
        longer hold raises :class:`LeaseLost`."""
        if self.clock() > self._lease_until - self.settings.lease_seconds / 2:
            self._renew()

    def apply_policy(self: DispatcherHost, records: list[SweepRecord], report: TickReport) -> set[str]:
        """Each record's launch settings as the current policy admits them (in place), and the ids
        of the sweeps that may launch nothing this tick. See the module docstring."""
        try:
            policy = self.policy()
        except SweepqError as exc:  # the deployment's problem (an invalid or unreadable policy), no sweep's
            report.errors.append(f"policy: {exc} — launching nothing until it is fixed")
            return {r.sweep_id for r in records}
        holds: set[str] = set()
        for i, record in enumerate(records):
            try:
                records[i], reason = _admitted(policy, record)
                if reason != record.policy_hold:
                    self.store.note_policy_hold(record.sweep_id, reason=reason or None, owner=self.owner,
                                                now=self.clock())
            except LeaseLost:
                raise
            except (Conflict, TransientError) as exc:
                holds.add(record.sweep_id)
                report.errors.append(f"sweep {record.sweep_id}: {exc} — re-planned next tick")
                continue
            except Exception as exc:  # noqa: BLE001 - contained per sweep
                holds.add(record.sweep_id)
                self._sweep_failed(record, exc, report)
                continue
            if reason:
                holds.add(record.sweep_id)
                report.errors.append(f"sweep {record.sweep_id}: the operator policy refuses its launches now — "
                                     f"{reason}")
                log.warning(json.dumps({"event": "policy-hold", "sweep_id": record.sweep_id, "reason": reason}))
        return holds

    def _sharing(self: DispatcherHost) -> tuple[SharePolicy, Caps]:
        """The share policy (the current operator policy's teams: weight, quota, kueue_queue) and the
        dispatcher's caps, as the planner and the job sizes use them."""
        s = self.settings
        try:
            teams = self.policy().teams
        except SweepqError:  # unreadable policy: every sweep is held this tick (apply_policy); count alike
            teams = {}
        return (SharePolicy.from_teams(teams),
                Caps(max_jobs=s.max_running, max_gpus=s.max_gpus, max_waiting=s.max_waiting))

    def _claimed_shape(self: DispatcherHost, record: SweepRecord, index: int) -> TrialShape:
        """The size trial ``index``'s claimed job is rendered with: the node count stored with its
        claim; for a claim from before that was stored, what the caps and quotas give now."""
        trial = record.live.get(index)
        if trial is not None and trial.nodes is not None:
            return TrialShape(trial.nodes, trial.nodes * record.launch.gpus_per_node)
        shares, caps = self._sharing()  # reads the policy: only for such old claims
        return claim_shape(record, trial, policy=shares, caps=caps)

    def _submit(self: DispatcherHost, record: SweepRecord, index: int, attempt: int,
                params: Mapping[str, Any] | None = None) -> None:
        """Create the attempt's job. ``params``: the ones its claim just stored; without them a
        bayes trial's are read from its trial item (a re-create, a retry), never suggested again."""
        sweep = self.specs.get(record.sweep_id)
        if params is None and sweep.method == "bayes":
            params = self.stored_trial_params(record, index)
        launch = sized_launch(record.launch, self._claimed_shape(record, index)).model_copy(update={"kind": record.kind})
        request = launch_request(self.settings, sweep, record.sweep_id, launch, index, attempt,
                                 self.settings.wake_queue_url, params=params)
        backend = self.backends[record.kind]
        dryrun = backend.dryrun(request)
        self._ensure_lease()
        backend.submit(dryrun)

    def relaunch(self: DispatcherHost, record: SweepRecord, r: Relaunch, report: TickReport) -> SweepRecord:
        """A claimed trial whose job is missing (a crash between claim and create): create it now —
        unless the policy holds the sweep (the claim waits for the grant to come back)."""
        if record.sweep_id in self._policy_holds:
            return record
        return self._create_and_mark(record, r.index, r.attempt, report)

    def _create_and_mark(self: DispatcherHost, record: SweepRecord, index: int, attempt: int, report: TickReport,
                         params: Mapping[str, Any] | None = None) -> SweepRecord:
        t = record.live[index]
        try:
            self._submit(record, index, attempt, params)
        except PermanentError as exc:
            return self.write_transition(record, fail_attempt(record, t, TrialState.FAILED, f"could not create job: {exc}"),
                                         self.clock(), report)
        launched = dataclasses.replace(t, state=TrialState.LAUNCHED)  # keeps the node count and what carries over attempts
        report.launched += 1
        try:
            return self.write_transition(record, Transition(record.sweep_id, index, attempt, launched,
                                                            TrialState.LAUNCHED), self.clock(), report)
        except Conflict:
            self._withdraw_if_not_live(record, index, attempt, report)
            raise

    def _withdraw_if_not_live(self: DispatcherHost, record: SweepRecord, index: int, attempt: int, report: TickReport) -> None:
        """Our create succeeded but recording it did not: if meanwhile the attempt stopped being
        live (a tick that took over our lease cancelled the sweep, or gave the trial up), the job
        we just made must not run. Judged on the item read strongly now; the next tick's leak
        check is the guarantee, this only shortens the job's life."""
        name = job_name(record.sweep_id, index, attempt)
        try:
            meta = self.store.get_sweep(record.sweep_id)
            entry = ((meta or {}).get("live") or {}).get(str(index)) or {}
            if meta is not None and meta.get("list_pk") == f"ACTIVE#{self.scope}" and \
                    int(entry.get("attempt", 0)) == attempt and entry.get("state") != TrialState.WAITING.value:
                return
            self.backends[record.kind].cancel(name)
        except SweepqError as exc:
            report.errors.append(f"withdraw {name}: {exc} — the next tick's leak check deletes it")
            return
        report.leaked += 1
        log.warning(json.dumps({"event": "cancel-job", "job": name, "reason": "created after its attempt ended"}))

    def claim(self: DispatcherHost, record: SweepRecord, launch: Launch, now: float,
              params: Mapping[str, Any] | None = None) -> SweepRecord:
        """Reserve the trial (one transaction). A fresh claim writes the trial item with its
        parameters: ``params`` (a bayes suggestion, persisted here and nowhere before) or the
        expansion's ``trial(index)``; a retry keeps the stored ones."""
        name = job_name(record.sweep_id, launch.index, launch.attempt)
        live = LiveTrial(launch.index, launch.attempt, TrialState.PENDING, name, now, nodes=launch.nodes)
        if launch.retry:
            ended = record.live[launch.index]  # the retry carries its trial's uncounted attempts and last fingerprint
            live = dataclasses.replace(live, uncounted=ended.uncounted, fingerprint=ended.fingerprint)
            self.store.claim_retry(record.sweep_id, index=launch.index, prev_attempt=record.live[launch.index].attempt,
                                   live=live.to_item(), attempt=launch.attempt, job=name, owner=self.owner, now=now)
        else:
            if params is None:
                params = self.specs.get(record.sweep_id).trial(launch.index)
            trial = {"type": "trial", "sweep_id": record.sweep_id, "trial_id": trial_id(record.sweep_id, launch.index),
                     "index": launch.index, "params": json.dumps(params, sort_keys=True),
                     "state": TrialState.PENDING.value, "attempt": launch.attempt, "job": name, "claimed_at": now,
                     "updated_at": now}
            self.store.claim_fresh(record.sweep_id, index=launch.index, live=live.to_item(), trial=trial,
                                   owner=self.owner, now=now)
        return dataclasses.replace(
            record, live={**record.live, launch.index: live},
            cursor=record.cursor if launch.retry else launch.index + 1,
        )

    def launch(self: DispatcherHost, records: list[SweepRecord], jobs: Mapping[str, JobStatus], report: TickReport, *,
               held: set[str] | frozenset[str] = frozenset()) -> None:
        """Claim, then create, what the planner gives the free capacity (see the module docstring).
        Every record counts for the caps and shares; ``held`` sweeps (see :meth:`reconcile`) get no
        launch this tick."""
        s = self.settings
        shares, caps = self._sharing()
        alive = {j.name for j in jobs.values() if not j.phase.terminal}
        by_id = {r.sweep_id: r for r in records}
        views = [planning_view(r, alive_jobs=alive) for r in records]
        planned = make_plan(sweeps=views, jobs=jobs, caps=caps, policy=shares, limit=s.max_launches_per_tick,
                            held=set(held) | self._policy_holds)
        report.capacity = planned.free_before.jobs
        stale: set[str] = set()
        planned_launches = self.bound_suggestions(planned.launches, by_id)
        suggested: dict[str, dict[int, dict[str, Any]]] = {}  # bayes: this tick's suggestions, per sweep
        for item in planned_launches:
            if item.sweep_id in stale:
                continue
            try:
                params = None
                if not item.retry and self.is_bayes(by_id[item.sweep_id]):
                    if item.sweep_id not in suggested:  # one engine call for the sweep's fresh claims this tick
                        fresh = [i.index for i in planned_launches if i.sweep_id == item.sweep_id and not i.retry]
                        suggested[item.sweep_id] = self.suggest_fresh(by_id[item.sweep_id], fresh)
                    params = suggested[item.sweep_id][item.index]
                record = self.claim(by_id[item.sweep_id], item, self.clock(), params)
                by_id[item.sweep_id] = record
                by_id[item.sweep_id] = self._create_and_mark(record, item.index, item.attempt, report, params)
            except LeaseLost:
                raise
            except (Conflict, TransientError) as exc:
                # A lost condition means our view of this sweep is stale: nothing more for it this
                # tick. Claim precedes create, so no job exists without a committed claim.
                stale.add(item.sweep_id)
                report.errors.append(f"launch {item.sweep_id}/{item.index}: {exc} — re-planned next tick")
            except Exception as exc:  # noqa: BLE001 - contained per sweep, like reconcile
                stale.add(item.sweep_id)
                self._sweep_failed(by_id[item.sweep_id], exc, report)
        for i, r in enumerate(records):
            records[i] = by_id[r.sweep_id]


def _admitted(policy: Policy, record: SweepRecord) -> tuple[SweepRecord, str]:
    """``record`` with the launch settings the policy admits now, and why it refuses them ("": it does
    not). A record stored before intake kept the request is judged on its stored settings."""
    if record.requested is None:
        violations = policy.check_launch(record.launch, team=record.team, sender=record.submitter,
                                         default_kind=record.kind)
        return record, violations_reason(violations)
    admission = policy.admit(record.requested, sender=record.submitter, default_kind=record.kind)
    if admission.violations:
        return record, admission.reason
    launch = admission.launch.model_copy(update={"kind": record.kind})
    return dataclasses.replace(record, launch=launch, team=admission.team), ""
