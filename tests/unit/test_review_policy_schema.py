"""Adversarial review (rev11p): the published JSON schemas disagree with the models they describe
(issue 11: "JSON schema published like the sweep schema"; README: ``producer schema`` prints it).
Each test fails on the current code."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import yaml

from dispatcher.core.spec import json_schema, load_sweep

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sweep-eks.yaml"


def test_the_shipped_eks_example_validates_against_the_published_sweep_schema() -> None:
    """Defect: ``examples/sweep-eks.yaml`` loads with the model (``load_sweep``) but validating it
    against ``json_schema()`` (what ``producer schema`` prints for editors and CI) does not work:
    the ``sweepq`` sub-schema keeps its own ``$defs`` while its ``$ref: '#/$defs/Resources'`` resolves
    from the document root (PointerToNowhere), and ``nodes: "1:2"`` — the form README and the
    error messages tell researchers to write — is refused as an additional property. Expected: no
    errors. Actual: a referencing error, then "'nodes' was unexpected"."""
    text = EXAMPLE.read_text()
    load_sweep(text)  # the model accepts it
    doc = yaml.safe_load(text)
    try:
        errors = [e.message for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(doc)]
    except Exception as exc:  # referencing.exceptions.Unresolvable, wrapped by jsonschema
        errors = [f"the schema itself is broken: {type(exc).__name__}: {str(exc)[:60]}"]
    assert errors == []
    doc["sweepq"].pop("resources", None)
    assert [e.message for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(doc)] == []
