"""Review (rev13) of issue 13: ``observe()`` against the status shapes the upstream controllers write,
over HTTP through the emulator (official client), and what the existing tick does with them."""

from __future__ import annotations

import time
from typing import Any

import pytest

from dispatcher.backends import make_backend
from dispatcher.core.jobs import JobPhase, LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.reconcile import reconcile_sweep
from dispatcher.core.records import LiveTrial, SweepRecord, SweepState, TrialState

NAMESPACE = "sweepq"
SWEEP = "rev-sweep-abcdefgh"


def request(kind: str, index: int = 0, **launch: Any) -> LaunchRequest:
    settings = LaunchSettings(kind=kind, image="trainer:1", **launch)
    return LaunchRequest(
        sweep_id=SWEEP, trial_index=index, trial_id=f"{SWEEP}-{index}", attempt=1, job_name=f"{SWEEP}-{index}-a1",
        namespace=NAMESPACE, params={"lr": 0.1}, command=TrialCommand(argv=("train.py", "--lr=0.1")),
        launch=settings, env={"SWEEP_ID": SWEEP},
    )


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_review_a_running_trainjob_whose_container_restarts_reads_pending_and_is_cancelled(kube) -> None:
    """Attack: a 2-node TrainJob on the default runtime (``SWEEPQ_TRAINJOB_RUNTIME=torch-distributed``:
    JobSet defaults its pods to ``restartPolicy: OnFailure``, the Job to ``backoffLimit: 6``) has run
    for an hour; one node's container crashes and restarts in place. JobSet counts a child Job as
    ``ready`` only while all its pods are ready, so Trainer writes ``jobsStatus: [{name: node,
    ready: 0, active: 1}]`` until the container is back.

    Expected: still RUNNING (it started; PyTorchJob's table maps ``Restarting`` to RUNNING for the
    same reason), so no start_timeout applies.
    Actual: ``trainjob_progress`` derives the phase from ``ready > 0`` alone and says PENDING; the
    tick (``reconcile._observe_trial``) then compares ``now - claimed_at`` (an hour) with
    ``start_timeout`` (30 min) and cancels the hour-old run as "still pending".
    """
    b = make_backend("trainjob", api_client=kube.api_client, namespace=NAMESPACE)
    name = b.submit(b.dryrun(request("trainjob", gpus_per_node=8, nodes=2)))
    kube.set_job_phase("trainjob", name, JobPhase.RUNNING)
    assert b.observe()[name].phase is JobPhase.RUNNING
    # one node's container restarts in place: the child Job has 2 active pods, 1 ready
    kube.patch_status("trainjob", name, {"jobsStatus": [{"name": "node", "ready": 0, "active": 1, "succeeded": 0,
                                                        "failed": 0, "suspended": 0}]})
    status = b.observe()[name]
    now = time.time()
    sweep = SweepRecord(sweep_id=SWEEP, state=SweepState.ACTIVE, total=1, cursor=1,
                        launch=LaunchSettings(kind="trainjob", image="trainer:1", gpus_per_node=8, nodes=2),
                        kind="trainjob", submitted_at="2024-01-01T00:00:00Z",
                        live={0: LiveTrial(index=0, attempt=1, state=TrialState.RUNNING, job_name=name,
                                           claimed_at=now - 3700, started_at=now - 3600)})
    outcome = reconcile_sweep(sweep, {name: status}, now=now)
    assert outcome.cancels == [], (status.phase, outcome.cancels)
    assert status.phase is JobPhase.RUNNING, status
