"""The team's choice of registering sweeps with W&B: a producer-only key of the team defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.errors import ConfigError
from producer.sweepfile import launch_layers, team_defaults


def test_wandb_sweep_is_the_teams_choice_and_never_a_launch_setting(tmp_path: Path) -> None:
    defaults = tmp_path / "team.yaml"
    defaults.write_text("wandb_sweep: true\nmax_retries: 1\n")
    team = team_defaults(str(defaults), env={})
    assert team.wandb_sweep is True and team.launch == {"max_retries": 1}
    assert launch_layers(str(defaults), env={}) == {"max_retries": 1}  # never sent in the message
    # the environment wins over the file; neither: automatic
    assert team_defaults(str(defaults), env={"SWEEPQ_WANDB_SWEEP": "off"}).wandb_sweep is False
    assert team_defaults(None, env={"SWEEPQ_WANDB_SWEEP": "Yes"}).wandb_sweep is True
    assert team_defaults(None, env={}).wandb_sweep is None


@pytest.mark.parametrize("text, env, message", [
    ("wandb_sweep: 1\n", {}, "wandb_sweep: '1' is not true or false"),
    ("wandb_sweep: auto\n", {}, "wandb_sweep: 'auto' is not true or false"),
    ("", {"SWEEPQ_WANDB_SWEEP": "sometimes"}, "SWEEPQ_WANDB_SWEEP: 'sometimes' is not true or false"),
])
def test_a_wandb_sweep_that_is_no_boolean_is_refused_with_the_fix(tmp_path: Path, text, env, message) -> None:
    defaults = tmp_path / "team.yaml"
    defaults.write_text(text or "max_retries: 1\n")
    with pytest.raises(ConfigError, match=message):
        team_defaults(str(defaults), env=env)
