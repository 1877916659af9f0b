"""The ValidatingAdmissionPolicy of infra/k8s evaluated outside a cluster.

What the API server does, as far as it can be done without one: match the object against the
policy's ``matchConstraints`` and the binding's ``namespaceSelector``, evaluate ``variables`` in
order and every ``validations[].expression`` with a CEL interpreter (cel-python, the CEL spec's
standard macros and functions: the policy uses no Kubernetes extension library), the ConfigMap
params bound as ``params``. A validation that evaluates to false denies with its message; one
that fails to evaluate denies too (``failurePolicy: Fail``) and is reported as an error, so tests
can tell a clean refusal from an expression that breaks on some input.

Not covered (needs an API server): the type check against the OpenAPI schemas (warnings only,
in the policy's status) and the runtime cost budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import celpy
from celpy import celtypes

# kind -> (apiGroup, resource) of the objects the policy's rules name
RESOURCES = {"Pod": ("", "pods"), "Job": ("batch", "jobs"), "PyTorchJob": ("kubeflow.org", "pytorchjobs"),
             "ElasticJob": ("elastic.pytorch.org", "elasticjobs"), "TrainJob": ("trainer.kubeflow.org", "trainjobs"),
             "Deployment": ("apps", "deployments")}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    denials: tuple[str, ...] = ()  # the messages of the validations that returned false
    errors: tuple[str, ...] = ()  # validations or variables that failed to evaluate (also deny)


class AdmissionPolicy:
    def __init__(self, policy: Mapping[str, Any], binding: Mapping[str, Any]) -> None:
        self.policy = policy
        self.binding = binding
        self.env = celpy.Environment()
        spec = policy["spec"]
        self.variables = [(v["name"], self._program(v["expression"])) for v in spec.get("variables", [])]
        self.validations = [(v["message"], self._program(v["expression"])) for v in spec["validations"]]

    def _program(self, expression: str) -> Any:
        return self.env.program(self.env.compile(expression))

    def matches(self, obj: Mapping[str, Any], *, namespace_labels: Mapping[str, str], operation: str = "CREATE") -> bool:
        group, resource = RESOURCES[obj["kind"]]
        rules = self.policy["spec"]["matchConstraints"]["resourceRules"]
        if not any(group in r["apiGroups"] and resource in r["resources"] and operation in r["operations"]
                   for r in rules):
            return False
        selector = self.binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        return all(namespace_labels.get(k) == v for k, v in selector.items())

    def admit(self, obj: Mapping[str, Any], params: Mapping[str, Any]) -> Decision:
        """Evaluate every validation against ``obj`` (assumed matched)."""
        activation: dict[str, Any] = {"object": celpy.json_to_cel(obj), "params": celpy.json_to_cel(params)}
        variables: dict[Any, Any] = {}
        errors = []
        for name, program in self.variables:
            activation["variables"] = celtypes.MapType(variables)
            try:
                value = program.evaluate(activation)
            except celpy.CELEvalError as exc:
                errors.append(f"variable {name}: {exc.args[0] if exc.args else exc}")
                value = None
            variables[celtypes.StringType(name)] = value
        activation["variables"] = celtypes.MapType(variables)
        denials = []
        for message, program in self.validations:
            try:
                result = program.evaluate(activation)
            except celpy.CELEvalError as exc:
                errors.append(f"{message}: {exc.args[0] if exc.args else exc}")
                continue
            if not isinstance(result, celtypes.BoolType):
                errors.append(f"{message}: evaluated to {type(result).__name__}, not a bool")
            elif not result:
                denials.append(message)
        return Decision(allowed=not denials and not errors, denials=tuple(denials), errors=tuple(errors))
