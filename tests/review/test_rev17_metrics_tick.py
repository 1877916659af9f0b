"""rev17 — adversarial review of the metrics channel the dispatcher now reads (issue 17, CONTRACTS C1).

Every test drives the real path: the trainer's own writer (``trainer.channel.MetricsTableWriter``)
puts the item into moto's metrics table exactly as a pod would, the Kubernetes API emulator says
the job succeeded, and ``Dispatcher.tick`` records the transition. Each test asserts what the
README / the module docstrings promise; a failing test is a finding (see
/work/coord/reports/rev17.md).
"""

from __future__ import annotations

from typing import Any

import pytest
from helpers import Clock, bootstrap, grid_spec, make_dispatcher, submit

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase
from dispatcher.settings import Settings
from trainer.channel import MetricsTableWriter, Snapshot
from trainer.context import TrialContext


class World:
    """One sweep of two trials, both launched as pytorchjobs (attempt 1), on moto + the emulator."""

    def __init__(self, aws: Any, kube: Any, kind: str = "pytorchjob", **settings: Any) -> None:
        self.aws, self.kube, self.kind = aws, kube, kind
        self.settings = Settings.load({}, backend=kind, max_running=2, namespace="sweepq", **settings)
        self.store, queue = bootstrap(aws, self.settings)
        self.dispatcher = make_dispatcher(aws, self.settings, {kind: make_backend(
            kind, api_client=kube.api_client, namespace="sweepq")}, Clock(), queue)
        self.sweep_id = submit(queue, grid_spec("rev17", 1, 2))
        report = self.dispatcher.tick()
        assert not report.errors, report.errors
        self.jobs = [f"{self.sweep_id}-{index}-a1" for index in (0, 1)]

    def trainer_writes(self, index: int, status: str, values: dict[str, float], *, pod_suffix: str = "worker-0",
                       now: float = 1_800_000_000.0) -> str:
        """What the trainer on the job's first pod writes (``Channel`` → ``MetricsTableWriter.write``)."""
        job = self.jobs[index]
        context = TrialContext.from_env({
            "SWEEP_ID": self.sweep_id, "TRIAL_INDEX": str(index), "TRIAL_ID": f"{self.sweep_id}-{index}",
            "SWEEPQ_ATTEMPT": "1", "SWEEPQ_JOB_NAME": job, "POD_NAME": f"{job}-{pod_suffix}",
            "SWEEPQ_METRICS_TABLE": str(self.settings.metrics_table)})
        writer = MetricsTableWriter(context, client=self.aws.client("dynamodb"))
        history = [dict(values)]
        return writer.write(Snapshot(status=status, metrics=dict(values), history=history, world_size=2,
                                     final=dict(values) if status == "finished" else None), now=now)

    def succeed(self, *indexes: int) -> None:
        for index in indexes:
            self.kube.set_job_phase(self.kind, self.jobs[index], JobPhase.SUCCEEDED)

    def trials(self) -> dict[int, dict[str, Any]]:
        return {t["index"]: t for t in self.store.trials(self.sweep_id)}


@pytest.fixture
def world(aws, kube):
    return World(aws, kube)


# --------------------------------------------------------------------------- F1


def test_rev17_a_diverged_but_finite_loss_from_the_real_trainer_never_fails_or_parks_the_sweep(world):
    """A diverging run reports a huge but finite loss (3e38 < float32's 3.4e38; NaN/inf would
    be NULL). The trainer writes it as DynamoDB accepts it (``N: 3E+38``). The README/tests
    promise "nothing a trial writes can fail a read / the tick"."""
    w = world
    assert w.trainer_writes(0, "finished", {"eval/accuracy": 0.61, "train/loss": 3.0e38}) == "written"
    assert w.trainer_writes(1, "finished", {"eval/accuracy": 0.55, "train/loss": 0.7}) == "written"
    w.succeed(0, 1)
    reports = [w.dispatcher.tick() for _ in range(4)]
    trials = w.trials()
    # THEN both trials are recorded SUCCEEDED (the absurd value dropped or kept), the sweep is not held
    errors = [e for r in reports for e in r.errors]
    held = [h for r in reports for h in r.held]
    assert [trials[i]["state"] for i in (0, 1)] == ["SUCCEEDED", "SUCCEEDED"], (errors, held)
    assert not errors and not held


# --------------------------------------------------------------------------- F2


def test_rev17_final_metrics_that_land_after_the_success_is_seen_are_never_recorded(world):
    """The job is SUCCEEDED on the cluster but the item the dispatcher reads still says
    ``running`` — a GSI read (trainjob/job/template: ``Query`` of ``by_job`` is eventually
    consistent, GSIs have no ConsistentRead) or a final write still in the trainer's background
    thread when the process exited (``flush`` timed out: see test_rev17_channel.py). The next
    read would find ``finished``; the dispatcher reads once, records SUCCEEDED with no metrics,
    and the sweep's best trial is wrong for ever."""
    w = world
    w.trainer_writes(0, "running", {"eval/accuracy": 0.90}, now=1_800_000_000)  # the last progress write
    w.trainer_writes(1, "finished", {"eval/accuracy": 0.55})
    w.succeed(0, 1)
    first = w.dispatcher.tick()
    assert not first.errors, first.errors
    # WHEN the final write becomes visible a moment later (the same process, same attempt)
    assert w.trainer_writes(0, "finished", {"eval/accuracy": 0.90}, now=1_800_000_001) == "written"
    w.dispatcher.tick()
    trials = w.trials()
    # THEN trial 0 carries its final metrics and is the sweep's best (0.90 > 0.55)
    assert trials[0].get("metrics") == {"eval/accuracy": 0.90}, trials[0]
    assert w.store.get_sweep(w.sweep_id)["best"]["trial_index"] == 0


# --------------------------------------------------------------------------- F4


def test_rev17_pods_of_another_sweep_can_bury_a_batch_jobs_item_in_the_index(aws, kube, caplog):
    """Kind ``job`` (and ``trainjob``, ``template``): the reader queries ``by_job`` for the job and
    stops after ``MAX_QUERY_PAGES`` (10) pages of 1 MB. Which items carry ``job = <victim job>`` is
    the writers' word (IAM limits the key, not the values), and the index is sorted by ``pod``:
    21 pods of *another researcher's* sweep, named to sort first ("0…"), each write their own item
    (as IAM allows: own key, contract attributes only) of ~390 KB claiming the victim's job. The
    victim's real item is on page 11: never read, its trial is recorded without metrics and the
    best trial is wrong. (Every forged item is correctly refused — it is the page cap that loses
    the real one; a key condition ``begins_with(pod, "<job>-")`` would skip the forgeries.)"""
    from dispatcher.adapters.dynamo import ser

    w = World(aws, kube, kind="job")
    victim_job = w.jobs[0]
    victim_pod = f"{victim_job}-k2m4p"
    assert w.trainer_writes(0, "finished", {"eval/accuracy": 0.9}, pod_suffix="k2m4p") == "written"
    assert w.trainer_writes(1, "finished", {"eval/accuracy": 0.5}, pod_suffix="x7q2z") == "written"
    dynamodb = aws.client("dynamodb")
    for i in range(21):
        attacker_pod = f"0evil-1a2b3c4d-{i}-a1-abcde"  # a pod of the attacker's own sweep "0evil-1a2b3c4d"
        assert attacker_pod < victim_pod
        dynamodb.put_item(TableName=str(w.settings.metrics_table), Item=ser({
            "pod": attacker_pod, "job": victim_job, "attempt": 1, "status": "running", "updated_at": 1,
            "metrics": {"pad": "x" * 390_000}}))
    w.succeed(0, 1)
    report = w.dispatcher.tick()
    assert not report.errors, report.errors
    trials = w.trials()
    # THEN the victim's trial has its own final metrics and is the best
    assert trials[0].get("metrics") == {"eval/accuracy": 0.9}, [r.getMessage()[:200] for r in caplog.records
                                                                   if "index pages" in r.getMessage()]
    assert w.store.get_sweep(w.sweep_id)["best"]["trial_index"] == 0
