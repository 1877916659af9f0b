"""What the infrastructure must grant, declared once so the lead can compare it with the code.

``DISPATCHER_IAM_ACTIONS`` maps each IAM action of the dispatcher Lambda's role to the code that
needs it; ``test_least_privilege`` checks that the deployed role grants exactly these, and that
the adapters' boto3 calls need nothing else (bootstrap-only calls aside).
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TEMPLATE = REPO / "infra" / "aws" / "sweepq.yaml"
K8S = REPO / "infra" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
DOCKERFILES = sorted((REPO / "docker").glob("*.Dockerfile"))

# Kubernetes schemas the manifests are validated against (EKS-supported minor).
K8S_VERSION = "1.32.0"
# The group the stack's EKS access entry maps the Lambda role to, bound by infra/k8s RBAC.
DISPATCHER_K8S_GROUP = "sweepq-dispatchers"

DISPATCHER_IAM_ACTIONS: dict[str, str] = {
    "dynamodb:GetItem": "Store.get_sweep / get_spec / get_trial",
    "dynamodb:PutItem": "Store.acquire_lease; Put items of TransactWriteItems",
    "dynamodb:UpdateItem": "Store.mark_dirty / release_lease / renew_lease; Update items of TransactWriteItems",
    "dynamodb:DeleteItem": "Store.release_lease",
    "dynamodb:ConditionCheckItem": "the lease ConditionCheck of every TransactWriteItems (Store.transact)",
    "dynamodb:Query": "Store.trials (table) and Store._query_index (index by_state)",
    "dynamodb:BatchGetItem": "Store.batch_get_sweeps",
    "sqs:ReceiveMessage": "Queue.receive; the SQS event source mapping",
    "sqs:DeleteMessage": "Queue.delete; the SQS event source mapping",
    "sqs:GetQueueAttributes": "the SQS event source mapping (create_queues is bootstrap-only)",
    "sqs:GetQueueUrl": "resolve_queue_url when only SWEEPQ_QUEUE_NAME is set (the CronJob)",
    "eks:DescribeCluster": "eks_token.describe_cluster (endpoint + CA of SWEEPQ_CLUSTER_NAME)",
    "logs:CreateLogStream": "Lambda runtime logging into the stack's own log group",
    "logs:PutLogEvents": "Lambda runtime logging into the stack's own log group",
}
# Lambda-runtime actions that are not boto3 calls of the dispatcher's code.
RUNTIME_ONLY_ACTIONS = frozenset({"logs:CreateLogStream", "logs:PutLogEvents", "sqs:GetQueueAttributes"})
# Calls the adapters make only in `dispatcher bootstrap` (an admin's credentials, not the role's).
BOOTSTRAP_ONLY_ACTIONS = frozenset({"dynamodb:CreateTable", "dynamodb:UpdateTimeToLive", "sqs:CreateQueue",
                                    "sqs:GetQueueAttributes"})
# Queue.send serves `producer submit/cancel` (researchers); the Lambda path never sends.
PRODUCER_ONLY_ACTIONS = frozenset({"sqs:SendMessage"})
LAMBDA_PATH_MODULES = ("dispatcher/lambda_handler.py", "dispatcher/wiring.py", "dispatcher/tick.py", "dispatcher/trials.py")
# TransactWriteItems is not an IAM action: each item kind is authorised as its own action.
TRANSACT_ITEM_ACTIONS = frozenset({"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                   "dynamodb:ConditionCheckItem"})
# Presigned locally; STS GetCallerIdentity needs no permission.
NO_PERMISSION_ACTIONS = frozenset({"sts:GetCallerIdentity"})

RESEARCHER_IAM_ACTIONS = frozenset({"sqs:SendMessage", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"})
TRAINER_IAM_ACTIONS = frozenset({"dynamodb:UpdateItem", "sqs:SendMessage"})

_JOB_VERBS = ("create", "get", "list", "watch", "delete")
# (apiGroup, resource) -> verbs of the dispatcher's Role; exactly this, nothing more.
DISPATCHER_RBAC_RULES: dict[tuple[str, str], frozenset[str]] = {
    ("kubeflow.org", "pytorchjobs"): frozenset(_JOB_VERBS),
    ("elastic.pytorch.org", "elasticjobs"): frozenset(_JOB_VERBS),
    ("trainer.kubeflow.org", "trainjobs"): frozenset(_JOB_VERBS),
    ("batch", "jobs"): frozenset(_JOB_VERBS),
    ("", "pods"): frozenset({"get", "list", "watch"}),
}
