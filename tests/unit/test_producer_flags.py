"""Every ``sweepq:`` key is settable by a ``producer submit`` flag, generated from the launch model."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import pytest
import typer
import yaml
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from dispatcher.core.launch import LaunchSettings
from producer import launch_flags
from producer.cli import app

ROOT = Path(__file__).resolve().parents[2]
EKS = ROOT / "examples" / "sweep-eks.yaml"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("SWEEPQ_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SWEEPQ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NO_COLOR", "1")


def launch_of(*args: str, path: Path = EKS) -> dict:
    result = CliRunner().invoke(app, ["submit", str(path), "--dry-run", "-o", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["body"]["launch"]


def test_every_key_of_the_model_has_a_flag() -> None:
    keys = {flag.key for flag in launch_flags.FLAGS}
    for name in LaunchSettings.model_fields:
        covered = name in keys or any(k.startswith(name + ".") for k in keys) or (
            name in launch_flags.NODE_FIELDS and "nodes" in keys)
        assert covered, f"sweepq.{name} has no producer submit flag"
    help_text = " ".join(CliRunner().invoke(app, ["submit", "-h"]).stdout.split())
    for flag in launch_flags.FLAGS:
        assert flag.option in help_text and f"[sweepq: {flag.key}]" in help_text


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--kind", "job", "--nodes", "1"], {"kind": "job", "min_nodes": 1, "max_nodes": 1}),
        (["--image", "reg.example/t:2", "--gpus-per-node", "4", "--nproc-per-node", "2"],
         {"image": "reg.example/t:2", "gpus_per_node": 4, "nproc_per_node": 2}),
        (["--nodes", "1:3"], {"min_nodes": 1, "max_nodes": 3}),
        (["--max-concurrent", "3", "--max-retries", "0", "--max-restarts", "1", "--max-failed-trials", "2"],
         {"max_concurrent": 3, "max_retries": 0, "max_restarts": 1, "max_failed_trials": 2}),
        (["--max-runtime", "2h", "--start-timeout", "10m"], {"max_runtime": 7200, "start_timeout": 600}),
        (["--priority", "-5", "--team", "vision", "--kueue-queue", "vision-q"],
         {"priority": -5, "team": "vision", "kueue_queue": "vision-q"}),
        (["--cpu", "16"], {"resources": {"cpu": "16", "memory": "480Gi"}}),  # the file's memory is kept
        (["--env", "OMP_NUM_THREADS=4", "--env", "HF_HOME=/tmp/hf"], {"env": {"OMP_NUM_THREADS": "4", "HF_HOME": "/tmp/hf"}}),
        (["--wandb-secret", "none"], {"wandb_secret": None}),
        (["--wandb-secret", "team-wandb", "--service-account", "trainer", "--output-pvc", "ckpt"],
         {"wandb_secret": "team-wandb", "service_account": "trainer", "output_pvc": "ckpt"}),
    ],
    ids=["kind", "image-gpus-procs", "nodes-range", "caps", "durations", "priority-team-queue", "resources-merge",
         "env", "no-wandb-secret", "names"],
)
def test_each_flag_sets_its_key(args: list[str], expected: dict) -> None:
    launch = launch_of(*args)
    assert {key: launch.get(key) for key in expected} == expected


def test_template_flag_follows_the_models_type(tmp_path: Path) -> None:
    annotation = launch_flags._inner(LaunchSettings.model_fields["template"].annotation)[0]
    if annotation is str:  # a template is the name of an operator-owned one
        assert launch_flags.overrides({"launch__template": "jobset"}, lower=[]) == {"template": "jobset"}
        return
    manifest = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "{{job_name}}"},
                "spec": {"template": {"spec": {"containers": [{"name": "t", "image": "{{image}}", "args": ["{{args}}"]}],
                                               "restartPolicy": "Never"}}}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(manifest))
    launch = launch_of("--kind", "template", "--nodes", "1", "--template", f"@{path}")
    assert launch["kind"] == "template" and launch["template"] == manifest


def test_a_structured_key_reads_yaml_text_or_a_file(tmp_path: Path) -> None:
    convert = launch_flags._yaml_value("--thing")
    path = tmp_path / "t.yaml"
    path.write_text("a: [1, 2]\n")
    assert convert(f"@{path}") == {"a": [1, 2]} and convert("{b: 3}") == {"b": 3} and convert(None) is None
    for bad, fragment in ((f"@{tmp_path / 'none.yaml'}", "cannot read"), ("{a: [1", "not valid YAML")):
        with pytest.raises(typer.BadParameter, match=fragment):
            convert(bad)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--env", "NOEQUALS"], "'NOEQUALS' is not NAME=VALUE"),
        (["--start-timeout", "soon"], "--start-timeout: 'soon' is not a duration"),
        (["--max-restarts", "101"], "Invalid value for '--max-restarts'"),
    ],
    ids=["env-pair", "duration", "range"],
)
def test_bad_flag_values_are_usage_errors(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, ["submit", str(EKS), "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output


def test_a_new_key_gets_its_flag_from_the_model() -> None:
    # GIVEN a model key added later (say, a canary switch), with its description
    class Future(BaseModel):
        canary: bool = Field(default=False, description="Trial 0 must succeed before the others launch.")
        label: str | None = Field(default=None, description="A free label.")

    flags = [f for name, field in Future.model_fields.items() for f in launch_flags._field_flags(name, field, durations=set())]
    # THEN it becomes a flag of a real command, with the description as help, and sets the key
    seen: dict = {}

    def command(**kwargs: object) -> None:
        seen.update(kwargs)

    command.__signature__ = inspect.Signature([f.param for f in flags])  # type: ignore[attr-defined]
    command.__annotations__ = {f.param.name: f.param.annotation for f in flags}
    probe = typer.Typer(rich_markup_mode=None)
    probe.command()(command)
    probe.command("other")(lambda: None)
    help_text = " ".join(CliRunner().invoke(probe, ["command", "--help"]).stdout.split())
    assert "--canary / --no-canary" in help_text and "Trial 0 must succeed before the others launch [sweepq: canary]" in help_text
    assert CliRunner().invoke(probe, ["command", "--canary", "--label", "x"]).exit_code == 0
    assert {f.key: f.convert(seen[f.param.name]) for f in flags} == {"canary": True, "label": "x"}
