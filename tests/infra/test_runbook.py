"""docs/DEPLOY.md stays true: its examples parse and the paths it names exist."""

from __future__ import annotations

import re

import yaml
from infra_expected import OVERLAYS, REPO

from dispatcher.core.launch import merge_launch
from dispatcher.core.policy import Policy
from producer.sweepfile import parse_sweep

RUNBOOK = (REPO / "docs" / "DEPLOY.md").read_text(encoding="utf-8")


def test_first_sweep_example_is_a_valid_four_trial_grid():
    [body] = re.findall(r"cat > sweep\.yaml <<'EOF'\n(.*?)\nEOF\n", RUNBOOK, re.DOTALL)
    sweep = parse_sweep(body.encode(), source="sweep.yaml", max_grid_size=1000)
    assert [sweep.trial(i) for i in range(4)][0] == {"batch_size": 16, "learning_rate": 0.001}


def test_outputs_example_is_valid_launch_settings_the_default_policy_admits():
    [block] = [b for b in re.findall(r"```yaml\n(.*?)```", RUNBOOK, re.DOTALL) if b.startswith("sweepq:")]
    launch = merge_launch(yaml.safe_load(block)["sweepq"])
    assert launch.output_pvc == "sweepq-outputs"
    assert Policy.default().admit(launch, sender="AIDAEXAMPLE").ok


def test_paths_and_overlays_named_in_the_runbook_exist():
    paths = set(re.findall(r"\b((?:infra|docker|tests)/[\w./{},-]*[\w}])", RUNBOOK))
    assert paths
    for path in paths:
        match = re.fullmatch(r"(.*)\{(.*)\}(.*)", path)
        for expanded in ([match.group(1) + part + match.group(3) for part in match.group(2).split(",")] if match else [path]):
            assert (REPO / expanded).exists(), expanded
    assert set(re.findall(r"infra/k8s/overlays/([\w-]+)", RUNBOOK)) <= set(OVERLAYS)
