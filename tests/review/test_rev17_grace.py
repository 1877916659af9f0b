"""rev17 — the graceful stop's real time limit in deployed pods (issue 17: "documented grace
period (terminationGracePeriodSeconds on every kind, longer than a checkpoint write)").

The trial pod's first process is torchrun. On SIGTERM it forwards the signal to the trainer
processes and SIGKILLs them after its *shutdown timeout*: ``--shutdown-timeout`` /
``PET_SHUTDOWN_TIMEOUT`` / ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT``, else 30 s
(torch/distributed/run.py; trainer/README.md says the same). The manifests set
``terminationGracePeriodSeconds`` from ``SWEEPQ_TERMINATION_GRACE_S`` but never torchrun's
timeout, so raising the setting for a checkpoint that takes longer than ~30 s (bert-base with
AdamW state is 1.3 GB; "tens of seconds on a network volume", README) changes nothing: the
trainer is SIGKILLed mid-stop (no stop checkpoint, no `stopped` marker, W&B *Crashed*).
"""

from __future__ import annotations

import pytest

from dispatcher.backends import make_backend
from dispatcher.backends.kube_common import walk_pod_templates
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

SHUTDOWN = ("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "PET_SHUTDOWN_TIMEOUT")
SWEEP_ID = "bert-lr-1a2b3c4d"


def request(kind: str) -> LaunchRequest:
    """A torchrun trial as the dispatcher launches it (the shape of tests/unit/test_manifests.py's)."""
    return LaunchRequest(
        sweep_id=SWEEP_ID, trial_index=3, trial_id=f"{SWEEP_ID}-3", attempt=1, job_name=f"{SWEEP_ID}-3-a1",
        namespace="sweepq", params={"lr": 0.1}, command=TrialCommand(argv=("-m", "trainer", "--lr=0.1"),
                                                                     launcher="torchrun"),
        launch=LaunchSettings(kind=kind, image="registry.example/sweepq-trainer:1.2"),
        env={"SWEEP_ID": SWEEP_ID, "TRIAL_INDEX": "3"})


@pytest.mark.parametrize("kind", ["pytorchjob", "job"])
def test_rev17_torchrun_in_the_pod_waits_for_the_stopping_trainer_as_long_as_the_grace_period(kind):
    backend = make_backend(kind, namespace="sweepq", termination_grace_s=600)
    pod = list(walk_pod_templates(backend.dryrun(request(kind)).request["spec"]))[0]
    assert pod["spec"]["terminationGracePeriodSeconds"] == 600
    main = pod["spec"]["containers"][0]
    argv = [*(main.get("command") or []), *(main.get("args") or [])]
    env = {e["name"]: e.get("value") for e in main.get("env", [])}
    told = [name for name in SHUTDOWN if name in env] + [a for a in argv if a.startswith(("--shutdown-timeout",
                                                                                        "--shutdown_timeout"))]
    assert told, (f"{kind}: terminationGracePeriodSeconds 600, but torchrun gets no shutdown timeout (env "
                  f"{sorted(env)}, argv {argv[:1] + argv[-4:]}): it SIGKILLs the stopping trainer after 30 s")
