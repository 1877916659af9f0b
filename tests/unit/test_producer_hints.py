"""Problems that come with a fix that works: YAML 1.1 floats, a file without ``program``."""

from __future__ import annotations

import pytest
import yaml

from producer.hints import improve, yaml11_float
from producer.sweepfile import parse_sweep


@pytest.mark.parametrize(
    ("text", "fixed"),
    [("1e-4", "1.0e-4"), ("1e4", "1.0e+4"), ("2.5E-3", "2.5e-3"), ("-3e+2", "-3.0e+2"), (".5e-1", "0.5e-1"),
     ("5.e3", "5.0e+3"), ("0.001", None), ("abc", None)],
)
def test_yaml11_spelling_of_a_float(text: str, fixed: str | None) -> None:
    assert yaml11_float(text) == fixed
    if fixed is not None:
        assert yaml.safe_load(fixed) == pytest.approx(float(text))
    assert isinstance(yaml.safe_load("1e-4"), str)  # why the hint exists


def test_min_1e_minus_4_says_to_write_1_0e_minus_4() -> None:
    # GIVEN the exponent form YAML 1.1 (PyYAML, and W&B's loader) reads as text
    data = b"method: random\nrun_cap: 3\nprogram: t.py\nparameters:\n  lr: {distribution: log_uniform_values, min: 1e-4, max: 1e-2}\n"
    with pytest.raises(Exception) as error:
        parse_sweep(data, source="s.yaml", max_grid_size=10)
    problems = error.value.problems  # type: ignore[attr-defined]
    assert "parameters.lr.min: '1e-4' is not a number — YAML reads 1e-4 as text (a YAML 1.1 float needs a dot and a " \
           "signed exponent): write 1.0e-4" in problems
    assert any(p.endswith("write 1.0e-2") for p in problems)
    # AND the fix really parses
    fixed = data.replace(b"1e-4", b"1.0e-4").replace(b"1e-2", b"1.0e-2")
    assert parse_sweep(fixed, source="s.yaml", max_grid_size=10).total == 3


def test_a_file_without_program_is_pointed_at_something_that_runs() -> None:
    hint = improve("program: missing — the command uses ${program}; write e.g. program: train.py")
    assert "where the trials run" in hint and 'command: ["${env}", "${interpreter}", "-m", "trainer", "${args}"]' in hint
    # the suggested command is valid YAML and a valid sweep as written
    command = hint.split("command: ", 1)[1].split(" as examples", 1)[0]
    sweep = parse_sweep(f"method: grid\ncommand: {command}\nparameters: {{lr: {{value: 0.1}}}}\n".encode(),
                        source="s.yaml", max_grid_size=10)
    assert sweep.total == 1
    assert improve("parameters.lr: something else") == "parameters.lr: something else"


def test_a_suggested_flow_list_gets_the_quotes_yaml_needs() -> None:
    problem = ("program: missing — the command runs ${program} (W&B's default command does); write e.g. program: "
               "train.py, or a full command: [${env}, ${interpreter}, -m, trainer, ${args}]. (A file …)")
    fixed = improve(problem)
    assert 'a full command: ["${env}", "${interpreter}", "-m", "trainer", "${args}"]. (A file …)' in fixed
    assert improve(fixed) == fixed
