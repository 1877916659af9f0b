"""sweepq dispatcher: drains the sweep queue and launches trials on a cluster.

Layers (one direction only, checked by import-linter, see pyproject.toml):

* ``dispatcher.core``      pure logic: spec, expansion, identity, planner, state machine.
                           Imports neither boto3 nor kubernetes.
* ``dispatcher.adapters``  AWS (SQS, DynamoDB, EKS token) with injected clients.
* ``dispatcher.backends``  job kinds (Kubernetes CRDs, batch Job, local processes).
* ``dispatcher.tick`` / ``dispatcher.cli`` / ``dispatcher.lambda_handler``  thin entry points.
"""

__version__ = "0.1.0"
