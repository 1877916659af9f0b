"""How the Kubernetes backends translate API errors (dispatcher/backends/kube_resource.py: api_error).
Pure: the official client's ApiException built from the bodies real API servers send."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dispatcher.backends.batchjob import RESOURCE as JOBS
from dispatcher.backends.kube_resource import api_error
from dispatcher.core.errors import PermanentError, TransientError


class _Response:
    def __init__(self, status: int, message: str) -> None:
        body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": status,
                "reason": "Forbidden"}
        self.status, self.reason, self.data = status, "Forbidden", json.dumps(body).encode()

    def getheaders(self) -> dict[str, Any]:
        return {}


def translate(status: int, message: str) -> Exception:
    from kubernetes.client.exceptions import ApiException

    return api_error(ApiException(http_resp=_Response(status, message)), ref=JOBS, verb="create",
                     namespace="sweepq", name="j-0-a1")


@pytest.mark.parametrize("message, error, says", [
    ('jobs.batch is forbidden: User "system:serviceaccount:sweepq-system:sweepq-dispatcher" cannot create resource '
     '"jobs" in API group "batch" in the namespace "sweepq"', PermanentError, "(Role + RoleBinding)"),
    ('admission webhook "vjob.kb.io" denied the request: spec.template: Invalid value', PermanentError,
     "refused by admission (admission webhook \"vjob.kb.io\" denied the request"),
    ("jobs.batch \"j-0-a1\" is forbidden: ValidatingAdmissionPolicy 'no-gpus' with binding 'no-gpus' denied request: "
     "GPUs are not allowed here", PermanentError, "refused by admission"),
    ('jobs.batch "j-0-a1" is forbidden: exceeded quota: jobs, requested: count/jobs.batch=1, used: '
     'count/jobs.batch=50, limited: count/jobs.batch=50', TransientError, "ResourceQuota in namespace 'sweepq' is full"),
    ('jobs.batch "j-0-a1" is forbidden: unable to create new content in namespace sweepq because it is being '
     "terminated", PermanentError, "namespace is being deleted"),
], ids=["rbac", "webhook", "admission-policy", "resource-quota", "namespace-terminating"])
def test_a_403_says_which_of_rbac_admission_or_quota_refused(message: str, error: type, says: str) -> None:
    translated = translate(403, message)
    assert type(translated) is error and says in str(translated), str(translated)
    assert ("Role + RoleBinding" in str(translated)) == (says == "(Role + RoleBinding)")
