"""Review (rev13) of issue 13: how a real API server answers when an operator's *validating webhook*
(Trainer v2.3, Training Operator v1.9, Kueue v0.19 — all controller-runtime) refuses a job, and what
sweepq tells the operator to do about it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.backends import make_backend
from dispatcher.backends.kube_resource import api_error
from dispatcher.backends.trainjob import RESOURCE as TRAINJOB
from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings

SWEEP = "rev-sweep-abcdefgh"
DENIAL = ('admission webhook "validator.trainjob.trainer.kubeflow.org" denied the request: spec.runtimeRef: '
          'Invalid value: {"name":"sweepq-torch-distributed"}: clustertrainingruntimes.trainer.kubeflow.org '
          '"sweepq-torch-distributed" not found: specified clusterTrainingRuntime must be created before the '
          'TrainJob is created')


class _Response:
    """The urllib3 response the official client wraps in ApiException (status, reason, body, headers)."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        self.status, self.reason, self.data = status, "Forbidden", json.dumps(body).encode()

    def getheaders(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}


def test_review_a_webhook_denial_is_not_reported_as_missing_rbac() -> None:
    """Attack: Trainer's validating webhook refuses a TrainJob (here: its ClusterTrainingRuntime is not
    installed). controller-runtime's validator turns a non-APIStatus error (``field.ErrorList.
    ToAggregate()``, what Trainer, the Training Operator and Kueue return) into ``admission.Denied``,
    whose status code is **403 Forbidden**; the API server passes it to the client as is.

    Expected: a PermanentError that says the webhook refused the manifest (and why).
    Actual: ``api_error`` maps every 403 to "forbidden … grant the dispatcher's identity 'create' on
    trainjobs… (Role + RoleBinding)" — the operator is sent to fix RBAC that is fine.
    """
    from kubernetes.client.exceptions import ApiException

    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": DENIAL,
            "reason": "Forbidden", "code": 403}
    exc = ApiException(http_resp=_Response(403, body))
    error = api_error(exc, ref=TRAINJOB, verb="create", namespace="sweepq", name=f"{SWEEP}-0-a1")
    assert isinstance(error, PermanentError)
    assert "Role + RoleBinding" not in str(error), str(error)


def test_review_the_emulator_answers_webhook_denials_as_the_api_server_does(kube) -> None:
    """Attack: the same refusal through the emulator (runtime not installed).

    Expected: the emulator answers like the API server with a controller-runtime webhook: HTTP 403
    ``Forbidden`` carrying 'admission webhook "…" denied the request: …'.
    Actual: the emulator answers 422 ``Invalid`` — so no test can see how sweepq handles the 403 a real
    cluster sends (see the test above).
    """
    from kubernetes.client.exceptions import ApiException

    backend = make_backend("trainjob", api_client=kube.api_client, namespace="sweepq", runtime="no-such-runtime")
    launch = LaunchSettings(kind="trainjob", image="trainer:1", gpus_per_node=1)
    request = LaunchRequest(sweep_id=SWEEP, trial_index=0, trial_id=f"{SWEEP}-0", attempt=1, job_name=f"{SWEEP}-0-a1",
                            namespace="sweepq", params={}, command=TrialCommand(argv=("train.py",)), launch=launch,
                            env={"SWEEP_ID": SWEEP})
    with pytest.raises(PermanentError) as raised:
        backend.submit(backend.dryrun(request))
    cause = raised.value.__cause__
    assert isinstance(cause, ApiException)
    assert cause.status == 403, (cause.status, cause.reason)
