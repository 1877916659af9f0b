"""The spec error matrix: every bad sweep file under tests/data/specs/bad/ is refused with a message
that names the field (or line/column) and says how to fix it.

Each case lists the salient fragments of every problem reported for that file, in order; the
test fails if a problem is missing, extra, or reworded so that the path or the fix disappears.
Files are parsed the way ``producer validate`` parses them (:func:`producer.sweepfile.parse_sweep`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.command import render_command
from dispatcher.core.errors import SpecError
from dispatcher.core.expand import SuggestedTrial
from dispatcher.core.spec import resolve_launch, validate_sweep
from dispatcher.core.yamlsafe import MAX_SPEC_BYTES
from producer.sweepfile import load_sweep_file, parse_sweep

BAD = Path(__file__).resolve().parents[1] / "data" / "specs" / "bad"
GOOD = Path(__file__).resolve().parents[1] / "data" / "specs" / "good"
LIMIT = 10**7

# file -> one tuple of fragments per expected problem (all fragments must occur in that problem)
CASES: dict[str, list[tuple[str, ...]]] = {
    "yaml-syntax.yaml": [("line 6, column 5", "YAML syntax error", "expected ',' or ']'", "fix the YAML syntax")],
    "alias-bomb.yaml": [("line 9, column 30", "more than 64 YAML aliases", "write the values out")],
    "wrong-type-run-cap.yaml": [("run_cap:", "'ten' is not a whole number", "run_cap: 50")],
    "empty-values.yaml": [("parameters.lr.values: is empty", "give at least one value")],
    "values-not-a-list.yaml": [("parameters.lr.values: 0.1 is not a list", "write values: [a, b, c]")],
    "grid-continuous.yaml": [("parameters.lr:", "continuous and cannot be gridded", "give `values:`", "method: random")],
    "bayes.yaml": [("run_cap: missing", "method: 'bayes' never ends by itself", "run_cap: 30")],
    "bayes-no-metric.yaml": [("metric: missing", "method: 'bayes' models the metric", "goal: minimize")],
    "bayes-constants-only.yaml": [("parameters: method: 'bayes' needs at least one parameter to search",)],
    "method-missing.yaml": [("method: missing", "write method: grid, method: random or method: bayes")],
    "unknown-top-key.yaml": [
        ("paramters: unknown key", "did you mean 'parameters'?"),
        ("parameters: missing", "define the parameters to sweep"),
    ],
    "unknown-param-key.yaml": [("parameters.lr.valuez: unknown key", "did you mean 'values'?")],
    "unknown-distribution.yaml": [("parameters.lr.distribution: unknown distribution 'log_uniformm'",
                                   "did you mean 'log_uniform'?")],
    "random-no-run-cap.yaml": [("run_cap: missing", "add e.g. run_cap: 50")],
    "grid-too-large.yaml": [(
        "parameters: the grid has 1,000,000,000 trials, over the limit of 10,000,000",
        "depth (1,000) × seed (1,000) × width (1,000)",
        "set run_cap, or raise SWEEPQ_MAX_GRID_SIZE",
    )],
    "sweepq-bad-fields.yaml": [
        ("sweepq.gpus_per_node:", "-1 must be ≥ 0", "0 for CPU-only"),
        ("sweepq.max_retry: unknown key", "did you mean 'max_retries'?"),
    ],
    "sweepq-bad-kind.yaml": [("sweepq.kind:", "'pytorchjobs' is not one of", "did you mean 'pytorchjob'?")],
    "sweepq-bad-nodes.yaml": [("sweepq.nodes: '2-4' is not N or MIN:MAX", "nodes: '1:4'")],
    "sweepq-nodes-reversed.yaml": [("sweepq.nodes: max_nodes 2 < min_nodes 4",)],
    "sweepq-local-multinode.yaml": [("sweepq.nodes: kind 'local' runs on one node", "use kind pytorchjob")],
    "sweepq-bad-duration.yaml": [("sweepq.max_runtime: '2 hours' is not a duration", "'90m', '2h'")],
    "sweepq-bad-team.yaml": [("sweepq.team: 'NLP_Team' is not a DNS-1123 label", "lower-case letters")],
    "sweepq-secret-env.yaml": [("sweepq.env.WANDB_API_KEY: looks like a secret", "Kubernetes Secret")],
    "sweepq-not-a-mapping.yaml": [("sweepq: must be a mapping of launch settings", "got str")],
    "min-not-less-than-max.yaml": [("parameters.lr: min 0.1 is not less than max 0.001", "swap them")],
    "min-without-max.yaml": [("parameters.lr: has min but no max", "give both")],
    "int-uniform-floats.yaml": [("parameters.layers: int_uniform needs integer min/max", "distribution: uniform")],
    "probabilities-sum.yaml": [("parameters.optimizer.probabilities: sum to 0.9, not 1", "normalise")],
    "parameter-not-a-mapping.yaml": [("parameters.lr: 0.1 is not a definition", "`lr: {value: 0.1}`")],
    "duplicate-keys.yaml": [("line 6, column 3: duplicate key 'lr'", "(first at line 4)", "keep only one")],
    "command-without-args.yaml": [("command: has none of ${args}", "add ${args}")],
    "unknown-macro.yaml": [
        ("command[3]: unknown macro ${argz}", "W&B macros are", "${args_no_boolean_flags}", "${args_json_file}"),
        ("command: has none of ${args}", "add ${args}"),
    ],
    "command-bad-element.yaml": [
        ("command[2]: None is not a string or a number", "quote it", "'None'"),
        ("command[3]: ['--lr'] is not a string or a number", "quote it"),
    ],
    "command-envvar.yaml": [("command[3]: ${envvar:DATA_DIR}", "is not supported", "sweepq.env")],
    "command-macro-in-text.yaml": [
        ("command[2]: '--config=${args_json_file}'", "a macro must be a whole element", "own list item"),
        ("command: has none of ${args}", "add ${args}"),
    ],
    "grid-probabilities.yaml": [("parameters.optimizer: weighted `probabilities`", "W&B's grid refuses them too",
                                 "method: random")],
    "categorical-with-probabilities.yaml": [("parameters.optimizer: distribution categorical takes no probabilities",
                                             "categorical_w_probabilities")],
    "probabilities-length.yaml": [("parameters.optimizer.probabilities: [0.5, 0.5] must be 3 non-negative numbers",)],
    "param-name-pattern.yaml": [
        ("parameters.1cycle: '1cycle' is not a usable argument name", "^[A-Za-z_][A-Za-z0-9_.-]*$"),
        ("parameters.lr/decay: 'lr/decay' is not a usable argument name", "start with a letter or '_'"),
    ],
    "run-cap-quoted.yaml": [("run_cap: '10' is not a whole number", "(unquoted)")],
    "run-cap-bool.yaml": [("run_cap: True is not a whole number", "run_cap: 50")],
    "run-cap-too-large.yaml": [("run_cap: 1000000000000000000000000000", "must be ≤ 1000000000")],
    "metrics-without-custom.yaml": [
        ("metrics: multi-objective `metrics` needs method: custom", "write metric: {name: ..., goal: ...}"),
        ("metric: missing", "method: 'bayes'"),
    ],
    "metric-and-metrics.yaml": [("metrics: `metric` and `metrics` cannot both be set",)],
    "impute-bad.yaml": [
        ("metric.impute: 'mean' is not one of latest, best, worst",),
        ("metric.impute_while_running: false (a YAML boolean)", "impute_while_running: 'false'"),
    ],
    "early-terminate-type.yaml": [("early_terminate.type: 'envelope' is not a type", "type: hyperband")],
    "early-terminate-eta.yaml": [("early_terminate.eta: 1 must be > 1", "top 1/eta")],
    "early-terminate-no-iter.yaml": [("early_terminate: give min_iter", "or max_iter with s")],
    "early-terminate-no-bands.yaml": [("early_terminate: max_iter 2 / eta 3 is below 1, so there are no bands",
                                       "raise max_iter or lower eta")],
    "early-terminate-no-metric.yaml": [("metric: missing", "early_terminate compares the metric")],
    "early-terminate-fields.yaml": [
        ("early_terminate.s: 2.5 is not a whole number",),
        ("early_terminate.strict: 'yes' is not true or false",),
        ("early_terminate.min_itr: unknown key", "min_iter"),
    ],
    "scheduler-optuna.yaml": [("scheduler.engine: 'optuna' needs method: custom", "remove `scheduler`")],
    "controller-bad.yaml": [
        ("kind: 'experiment' is not 'sweep'",),
        ("controller: 'remote'", "controller: {type: local}"),
    ],
    "metric-bad-goal.yaml": [("metric.goal:", "'minimise' is not one of", "did you mean 'minimize'?")],
    "not-a-mapping.yaml": [("the file must be a mapping", "got list", "examples/sweep.yaml")],
    "multiple-documents.yaml": [("line 6, column 1: a second YAML document (---)", "one sweep per file")],
    "empty-file.yaml": [("the file is empty", "examples/sweep.yaml")],
    "not-utf8.yaml": [("byte 67: not valid UTF-8", "save the file as UTF-8")],
    "yaml-timestamp.yaml": [
        ("parameters.data_snapshot.values[0]: 2024-01-01 is a YAML timestamp", "quote it: '2024-01-01'"),
        ("parameters.data_snapshot.values[1]: 2024-06-01 is a YAML timestamp", "quote it: '2024-06-01'"),
    ],
}


def _problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_sweep_file(str(path), max_grid_size=LIMIT)
    assert info.value.source == path.name  # messages name the file
    return info.value.problems


# Valid files that cannot be *submitted*: `producer validate`/`expand` accept them, `producer submit`
# (resolve_launch) and the dispatcher (rendering the command) refuse them with this message.
SUBMIT_CASES: dict[str, tuple[str, ...]] = {
    "program-missing.yaml": ("program: missing", "runs ${program}", "program: train.py", "wandb.agent(function=...)"),
}


def test_matrix_covers_every_bad_file() -> None:
    on_disk = sorted(p.name for p in BAD.glob("*.yaml"))
    assert on_disk == sorted([*CASES, *SUBMIT_CASES]), "add the new bad file to CASES (or remove the stale case)"
    assert len(on_disk) >= 20


@pytest.mark.parametrize("name", sorted(CASES), ids=lambda n: n.removesuffix(".yaml"))
def test_bad_file_message_names_field_and_fix(name: str) -> None:
    problems = _problems(BAD / name)
    expected = CASES[name]
    assert len(problems) == len(expected), problems
    for problem, fragments in zip(problems, expected, strict=True):
        for fragment in fragments:
            assert fragment in problem, f"{fragment!r} not in {problem!r}"


@pytest.mark.parametrize("name", sorted(SUBMIT_CASES), ids=lambda n: n.removesuffix(".yaml"))
def test_valid_but_not_launchable_file_is_refused_at_submit(name: str) -> None:
    # GIVEN a file that validates (W&B accepts it) WHEN its launch settings are resolved (submit)
    sweep = load_sweep_file(str(BAD / name), max_grid_size=LIMIT)
    assert sweep.trial(0)
    with pytest.raises(SpecError) as info:
        resolve_launch(sweep)
    # THEN one problem naming the field and the fix; rendering a trial's command refuses it too
    [problem] = info.value.problems
    for fragment in SUBMIT_CASES[name]:
        assert fragment in problem
    with pytest.raises(SpecError, match="program: missing"):
        render_command(sweep, sweep.trial(0))


def test_a_launchable_validation_lists_the_missing_program_with_every_other_problem() -> None:
    raw = {"method": "grid", "parameters": {"lr": {"values": []}}}
    with pytest.raises(SpecError) as info:
        validate_sweep(raw, launchable=True)
    assert [p.split(":")[0] for p in info.value.problems] == ["parameters.lr.values", "program"]
    with pytest.raises(SpecError) as info:
        validate_sweep(raw)
    assert [p.split(":")[0] for p in info.value.problems] == ["parameters.lr.values"]


def test_oversize_file_is_refused_before_parsing(tmp_path: Path) -> None:
    # GIVEN a file just over the size limit (generated: no 200 KiB fixture in the repo)
    big = tmp_path / "big.yaml"
    values = ", ".join(str(i) for i in range(40_000))
    big.write_text(f"method: grid\nprogram: train.py\nparameters:\n  seed:\n    values: [{values}]\n")
    assert big.stat().st_size > MAX_SPEC_BYTES
    # WHEN / THEN
    [problem] = _problems(big)
    assert "file is 2" in problem and f"the limit is {MAX_SPEC_BYTES // 1024} KiB" in problem
    assert "use min/max or fewer values" in problem


def test_grid_limit_is_a_parameter() -> None:
    data = (BAD / "grid-too-large.yaml").read_bytes()
    sweep = parse_sweep(data, source="grid-too-large.yaml", max_grid_size=10**9)
    assert sweep.total == 10**9


def test_run_cap_bounds_an_oversize_grid() -> None:
    data = (BAD / "grid-too-large.yaml").read_bytes() + b"run_cap: 100\n"
    sweep = parse_sweep(data, source="capped.yaml", max_grid_size=LIMIT)
    assert sweep.total == 100


@pytest.mark.parametrize("name", sorted(p.name for p in GOOD.glob("*.yaml")), ids=lambda n: n.removesuffix(".yaml"))
def test_good_files_are_valid(name: str) -> None:
    sweep = load_sweep_file(str(GOOD / name), max_grid_size=10**9)
    assert sweep.total >= 1
    if sweep.method == "bayes":  # parameters come from W&B's engine at claim time
        assert sweep.preview(5) == []
        with pytest.raises(SuggestedTrial, match="method bayes"):
            sweep.trial(0)
        return
    assert sweep.trial(sweep.total - 1)  # the last trial exists and is a non-empty dict
    assert sweep.preview(3) == [sweep.trial(i) for i in range(min(3, sweep.total))]


def test_deprecated_distribution_is_a_warning_not_an_error() -> None:
    sweep = load_sweep_file(str(GOOD / "deprecated-log-uniform.yaml"), max_grid_size=LIMIT)
    [warning] = sweep.warnings
    assert "parameters.lr: distribution log_uniform takes min/max as base-e exponents" in warning
    assert "log_uniform_values" in warning
    assert load_sweep_file(str(GOOD / "bayes.yaml"), max_grid_size=LIMIT).warnings == ()


def test_name_longer_than_128_characters_is_accepted() -> None:
    sweep = load_sweep_file(str(GOOD / "macros.yaml"), max_grid_size=LIMIT)
    assert len(sweep.spec.name or "") > 128
