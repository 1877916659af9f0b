"""What the infrastructure must grant, declared once so the lead can compare it with the code.

``DISPATCHER_IAM_GRANTS`` lists each (IAM action, resource) of the dispatcher Lambda's role with
the code that needs it; ``test_least_privilege`` checks that the deployed role grants exactly
these, and that the adapters' boto3 calls need nothing else (bootstrap-only calls aside).
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
TRIALS_NAMESPACE = "sweepq"
DISPATCHER_NAMESPACE = "sweepq-system"
TRAINER_SERVICE_ACCOUNT = "sweepq-trainer"
DISPATCHER_SERVICE_ACCOUNT = "sweepq-dispatcher"

# Settings the stack or the ConfigMap may set before dispatcher/settings.py has them (none today).
# Remove each name once dispatcher.settings.ENV has it (test_cfn_template checks that none is stale).
C6_SETTINGS: frozenset[str] = frozenset()  # every C6 setting has landed in dispatcher/settings.py

# (action, resource name in test_least_privilege._arns) -> the code that needs it.
DISPATCHER_IAM_GRANTS: dict[tuple[str, str], str] = {
    ("dynamodb:GetItem", "table"): "Store.get_sweep / get_spec / get_trial",
    ("dynamodb:PutItem", "table"): "Store.acquire_lease; Put items of TransactWriteItems",
    ("dynamodb:UpdateItem", "table"): "Store.mark_dirty / release_lease / renew_lease; Update items of TransactWriteItems",
    ("dynamodb:DeleteItem", "table"): "Store.release_lease",
    ("dynamodb:ConditionCheckItem", "table"): "the lease ConditionCheck of every TransactWriteItems (Store.transact)",
    ("dynamodb:Query", "table"): "Store.trials",
    ("dynamodb:Query", "index"): "Store._query_index (index by_state)",
    ("dynamodb:BatchGetItem", "table"): "Store.batch_get_sweeps",
    ("dynamodb:BatchGetItem", "metrics"): "MetricsStore.read: first pods of pytorchjob / elasticjob / local jobs",
    ("dynamodb:Query", "metrics-index"): "MetricsStore.read: pods of trainjob / job / template jobs (index by_job)",
    ("sqs:ReceiveMessage", "queue"): "Queue.receive; the SQS event source mapping",
    ("sqs:DeleteMessage", "queue"): "Queue.delete; the SQS event source mapping",
    ("sqs:GetQueueAttributes", "queue"): "the SQS event source mapping; dispatcher run's depth watch",
    ("sqs:GetQueueUrl", "queue"): "resolve_queue_url when only SWEEPQ_QUEUE_NAME is set (the CronJob)",
    ("sqs:ReceiveMessage", "wake"): "WakeQueue.drain; the wake queue's event source mapping",
    ("sqs:DeleteMessage", "wake"): "WakeQueue.drain (DeleteMessageBatch); the event source mapping",
    ("sqs:GetQueueAttributes", "wake"): "WakeQueue.depth; the event source mapping",
    ("sqs:GetQueueUrl", "wake"): "the wake queue by name (SWEEPQ_WAKE_QUEUE_NAME, the CronJob)",
    ("eks:DescribeCluster", "cluster"): "eks_token.describe_cluster (endpoint + CA of SWEEPQ_CLUSTER_NAME)",
    ("logs:CreateLogStream", "logs"): "Lambda runtime logging into the stack's own log group",
    ("logs:PutLogEvents", "logs"): "Lambda runtime logging into the stack's own log group",
}
DISPATCHER_IAM_ACTIONS = frozenset(action for action, _ in DISPATCHER_IAM_GRANTS)
# With PolicyParameterName set: SWEEPQ_POLICY=ssm:<name> (dispatcher/adapters/policy_source.py).
POLICY_PARAMETER_ACTIONS = frozenset({"ssm:GetParameter"})
# Lambda-runtime actions that are not boto3 calls of the dispatcher's code.
RUNTIME_ONLY_ACTIONS = frozenset({"logs:CreateLogStream", "logs:PutLogEvents", "sqs:GetQueueAttributes"})
# Calls the adapters make only in `dispatcher bootstrap` (an admin's credentials, not the role's).
BOOTSTRAP_ONLY_ACTIONS = frozenset({"dynamodb:CreateTable", "dynamodb:UpdateTimeToLive", "dynamodb:DescribeTable",
                                    "sqs:CreateQueue", "sqs:GetQueueAttributes"})
# Queue.send serves `producer submit/cancel` (researchers); the Lambda path never sends.
PRODUCER_ONLY_ACTIONS = frozenset({"sqs:SendMessage"})
LAMBDA_PATH_MODULES = ("dispatcher/lambda_handler.py", "dispatcher/wiring.py", "dispatcher/tick.py", "dispatcher/trials.py")
# TransactWriteItems is not an IAM action: each item kind is authorised as its own action.
TRANSACT_ITEM_ACTIONS = frozenset({"dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem",
                                   "dynamodb:ConditionCheckItem"})
# Batch APIs authorised as their single-message action.
BATCH_API_ACTIONS = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage", "sqs:SendMessageBatch": "sqs:SendMessage",
                     "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility"}
# Presigned locally; STS GetCallerIdentity needs no permission.
NO_PERMISSION_ACTIONS = frozenset({"sts:GetCallerIdentity"})

RESEARCHER_IAM_ACTIONS = frozenset({"sqs:SendMessage", "dynamodb:GetItem", "dynamodb:Query", "dynamodb:BatchGetItem"})
# Trials: their own pod's metrics item, the wake queue. Nothing that steers the dispatcher.
TRAINER_IAM_GRANTS = frozenset({("dynamodb:PutItem", "metrics"), ("dynamodb:UpdateItem", "metrics"),
                                ("sqs:SendMessage", "wake")})
TRAINER_IAM_ACTIONS = frozenset(action for action, _ in TRAINER_IAM_GRANTS)

_JOB_VERBS = ("create", "get", "list", "watch", "delete")
_READ_VERBS = ("get", "list", "watch")
# (apiGroup, resource) -> verbs of the dispatcher's Role in the trials' namespace; exactly this.
DISPATCHER_RBAC_RULES: dict[tuple[str, str], frozenset[str]] = {
    ("kubeflow.org", "pytorchjobs"): frozenset(_JOB_VERBS),
    ("elastic.pytorch.org", "elasticjobs"): frozenset({"get", "list", "watch", "delete"}),  # retired: drained only
    ("trainer.kubeflow.org", "trainjobs"): frozenset(_JOB_VERBS),
    ("batch", "jobs"): frozenset(_JOB_VERBS),
    ("", "pods"): frozenset(_READ_VERBS),  # ElasticJob phases, pod-level failure causes (C7)
    ("kueue.x-k8s.io", "workloads"): frozenset({"get", "list"}),  # admission state of queued jobs (C7): listed, not watched
}
