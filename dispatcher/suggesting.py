"""``method: bayes`` in the tick: W&B's engine suggests the parameters of the trials the planner
gave slots, for :class:`dispatcher.tick.Dispatcher` (a mixin, used by :mod:`dispatcher.launching`).

Exactly once, whatever crashes or overlaps (the contract of :mod:`dispatcher.core.search`):

* suggestions are made only for the fresh indices this tick claims (at most
  :data:`MAX_SUGGESTIONS_PER_SWEEP` per sweep and :data:`MAX_SUGGESTIONS_PER_TICK` in all: one
  engine call per sweep, the rest of its planned launches wait for the next tick);
* each suggestion is written as the trial's ``params`` **in the claim transaction** that reserves
  its index (cursor condition + ``attribute_not_exists`` on the trial item + the lease), so a
  suggestion exists only in memory until its claim commits: a crash before the claim leaves
  nothing, a claim that loses (another tick took the index) drops its suggestion;
* every create of a bayes trial — the first, a re-create after a crash between claim and create,
  every retried attempt — reads the parameters from the trial item (:meth:`Suggesting.stored_trial_params`),
  never from a new suggestion.

The observations are rebuilt from the sweep's trial items (one Query, at most once per sweep and
tick, only when the sweep launches a fresh trial): the ended ones (finished, failed, cancelled,
early-stopped) with the summary of their metric's history kept on their item when they ended
(``metric_summary``, :mod:`dispatcher.core.history`), so W&B's y — the extremum of history and
summary — and ``metric.impute`` (``latest``: the last reported value) come out as in W&B; and
the live ones (claimed, launched, running, waiting for a retry) as pending or running, which the
engine fantasises so it does not suggest their points again. A trial that ended in this very
tick (its transition is committed with these claims, in the same unit of work) is observed as its
transition says — the result that freed the slot is fitted. An ended trial without a summary and
without final metrics (failed, cancelled or lost while its history could not be read, or stored
before summaries existed) has its metrics item read (one batched read, only then), so it is fitted
on its history as W&B fits it, never on nothing. With ``metric.impute_while_running``
(W&B then fits running runs too) the running trials' metrics items are read as well: **one
batched read** per suggesting sweep and tick, only then (no reader wired: as pending).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from dispatcher.core import history
from dispatcher.core.changes import SweepChange, TrialTransition
from dispatcher.core.errors import Conflict, TransientError
from dispatcher.core.identity import job_name
from dispatcher.core.metrics import MetricsItem, reported_jobs
from dispatcher.core.planner import Launch
from dispatcher.core.records import SweepRecord, TrialState
from dispatcher.core.search import Observation, default_seed, observation, outcome_of, suggest
from dispatcher.core.spec import Sweep
from dispatcher.trials import stored_params

if TYPE_CHECKING:  # pragma: no cover - typing only
    from dispatcher.tick_host import DispatcherHost

log = logging.getLogger("dispatcher.tick")
MAX_SUGGESTIONS_PER_SWEEP = 4  # one engine call per sweep and tick suggests at most this many
MAX_SUGGESTIONS_PER_TICK = 8  # ≈ 2–25 s of GP fitting on a shared core (benchmarks/bayes.py)


class Suggesting:
    def is_bayes(self: DispatcherHost, record: SweepRecord) -> bool:
        """Whether the sweep's trials get suggested parameters. A spec that cannot be read says
        no here: its claim then fails with the reason, inside the sweep's own fault isolation."""
        try:
            return self.specs.get(record.sweep_id).method == "bayes"
        except Exception:  # noqa: BLE001 - reported by the claim that reads the spec again
            return False

    def bound_suggestions(self: DispatcherHost, planned: Sequence[Launch], records: Mapping[str, SweepRecord]) -> list[Launch]:
        """The plan without the fresh bayes launches beyond this tick's suggestion budget (a sweep's
        fresh launches are claimed in cursor order, so all of a sweep's after the first one cut)."""
        kept: list[Launch] = []
        per_sweep: dict[str, int] = {}
        total = 0
        cut: set[str] = set()
        for item in planned:
            if item.retry or not self.is_bayes(records[item.sweep_id]):
                kept.append(item)
                continue
            if item.sweep_id in cut or per_sweep.get(item.sweep_id, 0) >= MAX_SUGGESTIONS_PER_SWEEP \
                    or total >= MAX_SUGGESTIONS_PER_TICK:
                cut.add(item.sweep_id)
                continue
            per_sweep[item.sweep_id] = per_sweep.get(item.sweep_id, 0) + 1
            total += 1
            kept.append(item)
        return kept

    def suggest_fresh(self: DispatcherHost, record: SweepRecord, indices: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Suggested parameters for the fresh ``indices`` (this tick's claims of the sweep), from W&B's
        engine over the sweep's stored trials. Pure of side effects: nothing is written here."""
        sweep = self.specs.get(record.sweep_id)
        # this tick's transitions of the sweep are not committed yet (they go in the same unit of
        # work as these claims): a trial that finished this tick — whose slot these claims fill —
        # is observed as it ended, not as its trial item still says (rev18 finding 4)
        observations = self.observations(record, pending=self._changes.get(record.sweep_id, ()))
        taken = sorted({o.index for o in observations} & set(indices))
        if taken:
            raise Conflict(f"sweep {record.sweep_id}: trial {taken[0]} was claimed by another tick meanwhile")
        suggestions = suggest(sweep, observations=observations, indices=list(indices),
                              seed=default_seed(sweep, indices[0]))
        log.info(json.dumps({"event": "bayes-suggested", "sweep_id": record.sweep_id, "trials": list(indices),
                             "observed": len(observations)}))
        return {s.index: s.params for s in suggestions}

    def observations(self: DispatcherHost, record: SweepRecord, *,
                     pending: Sequence[SweepChange] = ()) -> list[Observation]:
        """The sweep's trials as W&B's engine sees them, from their trial items (live state from
        the sweep's record, which is newer than a trial item's) and ``pending``, the sweep's
        changes of this tick not committed yet: a trial that left the live set this tick is
        observed with the state, final metrics and summary of its transition."""
        metric = record.metric_name or ""
        sweep = self.specs.get(record.sweep_id)
        running = self.running_reports(record, sweep)
        ended_now = {c.index: c for c in pending if isinstance(c, TrialTransition) and c.live is None}
        items = []
        for item in self.store.trials(record.sweep_id):
            index = int(item["index"])
            change = ended_now.get(index) if index not in record.live else None
            if change is not None:
                item = {**item, "state": change.trial_state, "attempt": change.attempt,
                        "job": job_name(record.sweep_id, index, change.attempt)}
                if change.metrics is not None:
                    item["metrics"] = change.metrics
                if change.summary is not None:
                    item[history.FIELD] = history.dump(change.summary)
            items.append(item)
        unsummarised = _ended_histories(self, record, sweep, items)
        out = []
        for item in items:
            index = int(item["index"])
            live = record.live.get(index)
            state = live.state.value if live is not None else str(item.get("state", ""))
            try:
                outcome = outcome_of(state)
            except ValueError as exc:
                log.warning("sweep %s trial %d: %s — left out of the bayes observations", record.sweep_id, index, exc)
                continue
            params = stored_params(item, where=f"trial {record.sweep_id}/{index}")
            metrics = item.get("metrics") if isinstance(item.get("metrics"), Mapping) else None
            if live is None:
                stored = unsummarised.get(index, item.get(history.FIELD))
                out.append(history.ended_observation(index, params, outcome, metric=metric, metrics=metrics,
                                                     stored=stored))
            elif index in running:
                out.append(history.running_observation(index, params, outcome, metric=metric, item=running[index]))
            else:
                out.append(observation(index, params, outcome, metric_name=metric, metrics=metrics))
        return out

    def running_reports(self: DispatcherHost, record: SweepRecord, sweep: Sweep) -> dict[int, MetricsItem]:
        """The verified metrics items of the sweep's RUNNING trials, by index — read (one batched
        read) only when W&B's engine fits running runs (``metric.impute_while_running`` set and not
        ``'false'``) and a reader is wired. A read DynamoDB did not serve raises
        :class:`TransientError`: the sweep's claims wait a tick rather than fit on a guess."""
        metric = sweep.spec.metric
        if metric is None or metric.impute_while_running in (None, "false") or self.metrics is None:
            return {}
        running = {t.index: t for t in record.live.values() if t.state is TrialState.RUNNING
                   and t.job_name == job_name(record.sweep_id, t.index, t.attempt)}
        if not running:
            return {}
        patterns: dict[str, str] = {}
        if record.kind == "template":
            for index, t in list(running.items()):
                suffix = self._template_pattern(record, index, t.job_name)
                if isinstance(suffix, TransientError):
                    raise suffix
                if suffix is None:
                    running.pop(index)
                else:
                    patterns[t.job_name] = suffix
        read = self.metrics.read([(record.kind, t.job_name, t.attempt) for t in running.values()],
                                 template_patterns=patterns)
        if read.unread:
            raise TransientError(f"sweep {record.sweep_id}: the metrics of running trials {', '.join(read.unread)} "
                                 "were left unprocessed by DynamoDB — suggested next tick")
        return {index: read[t.job_name] for index, t in running.items() if t.job_name in read}

    def stored_trial_params(self: DispatcherHost, record: SweepRecord, index: int) -> dict[str, Any]:
        """A claimed trial's parameters as its claim stored them (every create of a bayes trial)."""
        return stored_params(self.store.get_trial(record.sweep_id, index), where=f"trial {record.sweep_id}/{index}")


def _ended_histories(host: DispatcherHost, record: SweepRecord, sweep: Sweep,
                     items: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """The summaries (:data:`history.FIELD` text, by index) of the sweep's ended trials that
    have none and no final metrics — failed, cancelled or lost ones whose history could not
    be read when they ended (an unserved read then), or stored before summaries existed — from
    their metrics items, **one batched read**, only when there are such trials: W&B's engine
    sees their whole history, so the GP must not fit them on nothing (rev18 finding 3). A read
    DynamoDB did not serve raises :class:`TransientError` (suggested next tick)."""
    if host.metrics is None or not record.metric_name:
        return {}
    wanted = [i for i in items if int(i["index"]) not in record.live and i.get("state") != "SUCCEEDED"
              and history.load(i.get(history.FIELD), metric=record.metric_name) is None]
    refs = reported_jobs(wanted, kind=record.kind) if wanted else []
    if not refs:
        return {}
    patterns: dict[str, str] = {}
    if record.kind == "template":
        suffix = host.template_pods(record)
        if isinstance(suffix, TransientError):
            raise suffix
        if suffix is None:
            return {}
        patterns = {job: suffix for _, job, _ in refs}
    read = host.metrics.read(refs, template_patterns=patterns)
    if read.unread:
        raise TransientError(f"sweep {record.sweep_id}: the metrics of ended trials {', '.join(read.unread)} "
                             "were left unprocessed by DynamoDB — suggested next tick")
    index_of = {str(i.get("job")): int(i["index"]) for i in wanted}
    hyperband = sweep.hyperband
    return {index_of[job]: history.dump(history.summarize_item(read.get(job), metric=record.metric_name,
                                                                hyperband=hyperband))
            for _, job, _ in refs if job in read}
