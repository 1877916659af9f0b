"""The trial's argv against W&B's agent (``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``,
what ``wandb agent`` substitutes for each macro), for scalar parameters: the same argument text.

Deliberate differences, kept and tested here too: nested groups are dotted arguments
(``--opt.lr=0.1``; W&B passes ``--opt={'lr': 0.1}``), and list/dict values are JSON (W&B passes
Python's ``repr``), so a trainer can parse them.
"""

from __future__ import annotations

import json

import pytest

from dispatcher.core.command import ARGS_JSON_PATH, args_json_text, render_command, trial_files
from dispatcher.core.spec import validate_sweep

utils = pytest.importorskip("wandb.sdk.launch.sweeps.utils")

PARAMS = {"lr": 0.001, "fp16": True, "compile": False, "layers": 4, "name": "bert base", "warmup": 0, "tag": None}
MACROS = ["args", "args_no_hyphens", "args_no_boolean_flags", "args_no_equals", "args_append_hydra",
          "args_override_hydra"]


def sweep_with(command: list, parameters: dict | None = None):
    parameters = parameters or {k: {"value": v} for k, v in PARAMS.items()}
    return validate_sweep({"method": "grid", "program": "train.py", "command": command, "parameters": parameters})


def wandb_args(params: dict) -> dict:
    # W&B's agent gets the run's args sorted by name, as its controller sends them
    return utils.create_sweep_command_args({"args": {k: {"value": params[k]} for k in sorted(params)}})


@pytest.mark.parametrize("macro", MACROS)
def test_each_argument_macro_gives_w_and_bs_arguments(macro: str) -> None:
    sweep = sweep_with(["python", "train.py", "${" + macro + "}"])
    argv = render_command(sweep, sweep.trial(0)).argv
    assert list(argv[2:]) == wandb_args(PARAMS)[macro]


def test_args_no_boolean_flags_passes_true_as_a_flag_and_drops_false() -> None:
    sweep = sweep_with(["python", "train.py", "${args_no_boolean_flags}"])
    argv = render_command(sweep, sweep.trial(0)).argv
    assert "--fp16" in argv and not any(a.startswith("--compile") for a in argv)
    assert "--layers=4" in argv and "--warmup=0" in argv


def test_args_json_is_the_same_object_as_w_and_bs() -> None:
    sweep = sweep_with(["python", "train.py", "${args_json}"])
    [text] = render_command(sweep, sweep.trial(0)).argv[2:]
    assert json.loads(text) == json.loads(wandb_args(PARAMS)["args_json"][0])


def test_args_json_file_is_a_path_and_the_backend_gets_its_content() -> None:
    sweep = sweep_with(["${env}", "${interpreter}", "${program}", "${args_json_file}"])
    params = sweep.trial(0)
    command = render_command(sweep, params)
    assert command.argv == ("train.py", ARGS_JSON_PATH) and command.launcher == "torchrun"
    assert trial_files(sweep, params) == {ARGS_JSON_PATH: args_json_text(params)}
    assert json.loads(args_json_text(params)) == PARAMS
    # the local backend passes a path of its own
    assert render_command(sweep, params, args_json_path="/state/job/args.json").argv[-1] == "/state/job/args.json"
    assert trial_files(sweep, params, args_json_path="/state/job/args.json") == {"/state/job/args.json": args_json_text(params)}
    # no macro, no file
    plain = sweep_with(["python", "train.py", "${args}"])
    assert trial_files(plain, plain.trial(0)) == {}


def test_numbers_in_the_command_are_passed_as_text_like_w_and_bs_agent() -> None:
    sweep = sweep_with(["python", "train.py", "--workers", 4, "--scale", 0.5, "${args}"])
    argv = render_command(sweep, sweep.trial(0)).argv
    assert argv[:6] == ("python", "train.py", "--workers", "4", "--scale", "0.5")


def test_nested_groups_are_dotted_and_containers_are_json_on_purpose() -> None:
    sweep = sweep_with(["python", "t.py", "${args}"], {"opt": {"parameters": {"lr": {"value": 0.1}}},
                                                        "layers": {"value": [64, 64]}})
    assert render_command(sweep, sweep.trial(0)).argv[2:] == ("--layers=[64,64]", "--opt.lr=0.1")
