"""``producer validate / expand / schema / submit --dry-run``: outputs, laziness and exit codes.

No AWS here (dry-run and the file commands never touch it); the queue and table round trips are
in tests/integration/test_producer_aws.py.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dispatcher.core.identity import sweep_id_for
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.message import decode
from dispatcher.core.spec import validate_sweep
from producer.cli import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sweep.yaml"
SPECS = ROOT / "tests" / "data" / "specs"
HUGE = SPECS / "good" / "huge-grid.yaml"
PROGRAM_HINT = ("program: missing — the command uses ${program}; write e.g. program: train.py — a script that exists "
                "where the trials run (the local backend's working directory, or the image's); or run the reference "
                'trainer with command: ["${env}", "${interpreter}", "-m", "trainer", "${args}"] as examples/sweep.yaml does')


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer setting leaks in; AWS is unreachable so an accidental call fails loudly."""
    for name in list(os.environ):
        if name.startswith(("SWEEPQ_", "AWS_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SWEEPQ_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SWEEPQ_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard port: nothing answers
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("NO_COLOR", "1")


def run(*args: str, input: str | None = None):
    return CliRunner().invoke(app, list(args), input=input)


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# -- validate -------------------------------------------------------------------------------------

def test_validate_text_shows_breakdown_and_first_trials() -> None:
    result = run("validate", str(EXAMPLE))
    assert result.exit_code == 0, result.output
    assert "sweep.yaml: valid" in result.stdout
    assert "batch_size (2) × learning_rate (2) = 4 trials" in result.stdout
    assert '{"batch_size": 16, "data": "synthetic", "epochs": 2, "learning_rate": 0.001, "model": "tiny"}' in result.stdout


def test_validate_json() -> None:
    result = run("validate", str(EXAMPLE), "--output", "json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["valid"] is True and doc["trials"] == 4 and doc["errors"] == []
    assert doc["breakdown"] == [{"name": "batch_size", "values": 2}, {"name": "learning_rate", "values": 2}]
    assert doc["first"][3] == {"batch_size": 32, "data": "synthetic", "epochs": 2, "learning_rate": 0.0003, "model": "tiny"}


def test_validate_invalid_lists_every_problem_one_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, "method: grid\nparameters:\n  lr: {values: []}\n  bs: {min: 5, max: 1}\n")
    result = run("validate", path)
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "✗ sweep.yaml: invalid — 2 problems"
    assert lines[1:] == [  # no program is fine for validate (W&B files for wandb.agent(function=...)); submit asks
        "  - parameters.bs: min 5 is not less than max 1 — swap them or widen the range",
        "  - parameters.lr.values: is empty — give at least one value",
    ]
    doc = json.loads(run("validate", path, "-o", "json").stdout)
    assert doc == {"valid": False, "trials": 0, "breakdown": [], "first": [], "errors": [line[4:] for line in lines[1:]]}


def test_validate_reads_stdin() -> None:
    result = run("validate", "-", "-o", "json", input=EXAMPLE.read_text())
    assert result.exit_code == 0 and json.loads(result.stdout)["trials"] == 4


def test_validate_random_and_capped_grid(tmp_path: Path) -> None:
    result = run("validate", str(ROOT / "examples" / "random.yaml"))
    assert result.exit_code == 0 and "random: 20 trials (run_cap)" in result.stdout
    capped = write(tmp_path, HUGE.read_text() + "run_cap: 10\n")
    result = run("validate", capped)
    assert "depth (1,000) × seed (1,000) × width (1,000) = 1,000,000,000 trials, capped by run_cap 10" in result.stdout


def test_missing_file_is_a_usage_error() -> None:
    result = run("validate", "does-not-exist.yaml")
    assert result.exit_code == 2
    assert "does-not-exist.yaml: no such file" in result.stderr


def test_grid_limit_from_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run("validate", str(HUGE))
    assert result.exit_code == 1 and "over the limit of 10,000,000" in result.stdout
    assert run("validate", str(HUGE), "--max-grid-size", str(10**9)).exit_code == 0
    monkeypatch.setenv("SWEEPQ_MAX_GRID_SIZE", str(10**9))
    assert run("validate", str(HUGE)).exit_code == 0
    monkeypatch.setenv("SWEEPQ_MAX_GRID_SIZE", "lots")
    result = run("validate", str(HUGE))
    assert result.exit_code == 3 and "SWEEPQ_MAX_GRID_SIZE: 'lots' is not a valid int" in result.stderr


# -- expand ---------------------------------------------------------------------------------------

def test_expand_jsonl_in_launch_order() -> None:
    result = run("expand", str(EXAMPLE))
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3]
    assert [(r["params"]["batch_size"], r["params"]["learning_rate"]) for r in rows] == [
        (16, 0.001), (16, 0.0003), (32, 0.001), (32, 0.0003)]


def test_expand_keeps_the_file_nesting() -> None:
    result = run("expand", str(SPECS / "good" / "nested.yaml"), "--limit", "1")
    [row] = [json.loads(line) for line in result.stdout.splitlines()]
    assert row == {"index": 0, "params": {"dropout": 0.0, "layers": 1, "optimizer": {"momentum": 0.9, "name": "adamw"}}}


def test_expand_json_and_text_outputs() -> None:
    doc = json.loads(run("expand", str(EXAMPLE), "-o", "json", "--limit", "2").stdout)
    assert [d["index"] for d in doc] == [0, 1]
    assert json.loads(run("expand", str(EXAMPLE), "-o", "json", "--limit", "0").stdout) == []
    text = run("expand", str(EXAMPLE), "-o", "text", "--start", "3").stdout
    assert text.splitlines() == ['     3  {"batch_size": 32, "data": "synthetic", "epochs": 2, "learning_rate": 0.0003, "model": "tiny"}']


def test_expand_billion_point_grid_is_lazy() -> None:
    # GIVEN a 10^9-point grid, allowed by the limit flag
    started = time.perf_counter()
    first = run("expand", str(HUGE), "--max-grid-size", str(10**9), "--limit", "3")
    last = run("expand", str(HUGE), "--max-grid-size", str(10**9), "--start", "-1")
    elapsed = time.perf_counter() - started
    # THEN the first and last trials come back at once (the product is never materialised)
    assert first.exit_code == 0 and last.exit_code == 0
    rows = [json.loads(line) for line in first.stdout.splitlines()]
    assert rows == [
        {"index": 0, "params": {"depth": 1, "seed": 1, "width": 1}},
        {"index": 1, "params": {"depth": 1, "seed": 1, "width": 2}},
        {"index": 2, "params": {"depth": 1, "seed": 1, "width": 3}},
    ]
    assert json.loads(last.stdout) == {"index": 10**9 - 1, "params": {"depth": 1000, "seed": 1000, "width": 1000}}
    assert elapsed < 5


def test_random_is_reproducible_and_bounded_by_run_cap(tmp_path: Path) -> None:
    path = str(ROOT / "examples" / "random.yaml")
    one, two = run("expand", path).stdout, run("expand", path).stdout
    assert one == two
    rows = [json.loads(line) for line in one.splitlines()]
    assert len(rows) == 20  # run_cap
    assert len({json.dumps(r["params"], sort_keys=True) for r in rows}) == 20
    assert all(1e-5 <= r["params"]["learning_rate"] <= 1e-3 for r in rows)
    # a copy of the file elsewhere, with a bigger cap, starts with the same trials
    raised = write(tmp_path, Path(path).read_text().replace("run_cap: 20", "run_cap: 30"))
    more = run("expand", raised).stdout.splitlines()
    assert len(more) == 30 and more[:20] == one.splitlines()


def test_expand_invalid_file_exits_1_with_one_line_per_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "method: random\nprogram: t.py\nparameters: {lr: {min: 0.1, max: 0.01}}\n")
    result = run("expand", path)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: sweep.yaml: parameters.lr: min 0.1 is not less than max 0.01 — swap them or widen the range",
        "error: sweep.yaml: run_cap: missing — a random sweep never ends by itself; add e.g. run_cap: 50",
    ]


# -- schema ---------------------------------------------------------------------------------------

def test_schema_is_json_with_the_sweepq_block() -> None:
    result = run("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "sweepq sweep file"
    assert {"method", "parameters", "sweepq"} <= set(schema["properties"])
    assert "gpus_per_node" in schema["properties"]["sweepq"]["properties"]


# -- submit --dry-run -----------------------------------------------------------------------------

def test_dry_run_prints_body_and_local_argv_and_sends_nothing() -> None:
    result = run("submit", str(EXAMPLE), "--dry-run", "--idempotency-key", "demo-key-0001")
    assert result.exit_code == 0, result.output
    sweep_id = sweep_id_for("demo-lr-bs", "demo-key-0001")
    assert f"Dry run: nothing was sent. Sweep {sweep_id}, 4 trials." in result.stdout
    assert f"# trial 0 of 4, attempt 1: local job {sweep_id}-0-a1" in result.stdout
    assert "- --learning_rate=0.001" in result.stdout and "- --batch_size=16" in result.stdout


def test_dry_run_json_body_decodes_and_revalidates() -> None:
    result = run("submit", str(EXAMPLE), "--dry-run", "-o", "json", "--max-concurrent", "1", "--max-runtime", "90m")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    msg = decode(json.dumps(doc["body"]))
    assert msg.sweep_id == doc["sweep_id"] and doc["trials"] == 4
    assert msg.spec == yaml.safe_load(EXAMPLE.read_text())  # the file, unchanged
    assert validate_sweep(msg.spec).total == 4
    launch = LaunchSettings.model_validate(msg.launch)
    assert (launch.kind, launch.max_concurrent, launch.max_runtime, launch.gpus_per_node) == ("local", 1, 5400, 0)
    assert msg.source == "sweep.yaml" and msg.submitted_at.endswith("Z")
    assert doc["kind"] == "local" and doc["job_name"] == f"{msg.sweep_id}-0-a1"


def test_each_submit_gets_a_fresh_token_unless_a_key_is_given() -> None:
    def sweep_id(*extra: str) -> str:
        return json.loads(run("submit", str(EXAMPLE), "--dry-run", "-o", "json", *extra).stdout)["sweep_id"]

    assert sweep_id() != sweep_id()
    assert sweep_id("--idempotency-key", "ci-run-12345") == sweep_id("--idempotency-key", "ci-run-12345")


def test_dry_run_pytorchjob_manifest() -> None:
    result = run("submit", str(ROOT / "examples" / "sweep-eks.yaml"), "--dry-run", "-o", "json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    manifest = yaml.safe_load(doc["manifest"])
    assert manifest["kind"] == "PyTorchJob"
    assert manifest["metadata"]["name"] == f"{doc['sweep_id']}-0-a1"
    assert manifest["spec"]["elasticPolicy"]["minReplicas"] == 1
    assert manifest["spec"]["elasticPolicy"]["maxReplicas"] == 2
    assert "--learning_rate=5e-05" in manifest["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["args"]


def test_launch_layers_defaults_env_file_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN team defaults in a file and in the environment, a file block, and flags
    defaults = write(tmp_path, "image: team/base:1\nmax_retries: 5\npriority: 3\nkueue_queue: team-a\n", "defaults.yaml")
    monkeypatch.setenv("SWEEPQ_DEFAULTS", defaults)
    monkeypatch.setenv("SWEEPQ_IMAGE", "team/env:2")
    sweep = write(tmp_path, EXAMPLE.read_text().replace("  max_concurrent: 2\n", "  max_concurrent: 2\n  priority: 7\n"))

    def launch(*flags: str) -> dict:
        result = run("submit", sweep, "--dry-run", "-o", "json", *flags)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["body"]["launch"]

    got = launch()
    # THEN defaults file < env < file block < flags, field by field
    assert (got["image"], got["max_retries"], got["priority"], got["kueue_queue"]) == ("team/env:2", 5, 7, "team-a")
    got = launch("--priority", "9", "--image", "mine:3", "--kind", "job", "--max-failed-trials", "4")
    assert (got["image"], got["priority"], got["kind"], got["max_failed_trials"]) == ("mine:3", 9, "job", 4)
    assert launch("--defaults", write(tmp_path, "max_retries: 0\n", "other.yaml"))["max_retries"] == 0


def test_explicit_null_wandb_secret_survives_the_body(tmp_path: Path) -> None:
    path = write(tmp_path, EXAMPLE.read_text() + "  wandb_secret: null\n")
    body = json.loads(run("submit", path, "--dry-run", "-o", "json").stdout)["body"]
    assert body["launch"]["wandb_secret"] is None
    assert LaunchSettings.model_validate(body["launch"]).wandb_secret is None


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--nodes", "1:x"], 2, "'1:x' is not N or MIN:MAX"),
        (["--max-runtime", "2 hours"], 2, "--max-runtime: '2 hours' is not a duration"),
        (["--gpus-per-node", "-1"], 2, "Invalid value for '--gpus-per-node'"),
        (["--kind", "pytorchjobs"], 2, "'pytorchjobs' is not one of"),
        (["--idempotency-key", "short"], 2, "must be 8 to 128 characters"),
        (["--nodes", "1:2"], 1, "sweepq.nodes: kind 'local' runs on one node"),
        (["--team", "NLP"], 1, "sweepq.team: 'NLP' is not a DNS-1123 label"),
    ],
    ids=["nodes-syntax", "runtime-syntax", "gpus-range", "kind-choice", "short-key", "local-multinode", "team-label"],
)
def test_submit_flag_errors(args: list[str], code: int, fragment: str) -> None:
    result = run("submit", str(EXAMPLE), "--dry-run", *args)
    assert result.exit_code == code, result.output
    assert fragment in result.stderr


def test_bad_team_defaults_are_a_configuration_error(tmp_path: Path) -> None:
    result = run("submit", str(EXAMPLE), "--dry-run", "--defaults", write(tmp_path, "gpus_per_nod: 1\n", "d.yaml"))
    assert result.exit_code == 3
    assert "team defaults" in result.stderr and "gpus_per_nod" in result.stderr
    result = run("submit", str(EXAMPLE), "--dry-run", "--defaults", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 3 and "cannot read the team defaults" in result.stderr


def test_body_over_256_kib_is_refused(tmp_path: Path) -> None:
    # GIVEN a file under the YAML size limit whose JSON body is over SQS's 256 KiB (escaping inflates it)
    quotes = '"' * 1000
    values = ", ".join(f"'{quotes}{i}'" for i in range(190))
    path = write(tmp_path, f"method: grid\nprogram: t.py\nparameters:\n  s:\n    values: [{values}]\n")
    result = run("submit", path, "--dry-run")
    assert result.exit_code == 1
    assert "over SQS's limit of 262,144" in result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.slow  # > 2 s: not in `scripts/test.sh --fast`
def test_unreachable_aws_is_exit_3_without_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    result = run("submit", str(EXAMPLE), "--queue-url", "http://127.0.0.1:9/123456789012/sweepq")
    assert result.exit_code == 3
    assert result.stderr.startswith("error: send to the sweep queue:") and "Traceback" not in result.output


def test_no_region_is_exit_3() -> None:
    for args in (["submit", str(EXAMPLE)], ["status"], ["list"], ["cancel", "demo-abcdefgh"]):
        result = run(*args)
        assert result.exit_code == 3, (args, result.output)
        assert "no AWS region: set AWS_REGION" in result.stderr


def test_malformed_sweep_ids_are_usage_errors() -> None:
    for args in (["status", "Not_An_Id"], ["cancel", "demo"]):
        result = run(*args)
        assert result.exit_code == 2 and "is not a sweep id" in result.stderr


def test_no_args_prints_help() -> None:
    result = run()
    assert "validate" in result.output and "submit" in result.output


def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("FORCE_COLOR", "1")  # as if on a terminal
    assert "\x1b[32m" in run("validate", str(EXAMPLE)).stdout  # the green check mark
    monkeypatch.setenv("NO_COLOR", "1")
    coloured = run("validate", str(EXAMPLE)).stdout
    assert "\x1b[32m" not in coloured and "sweep.yaml: valid" in coloured  # bold may stay: NO_COLOR is about colour
    assert "\x1b[" not in run("validate", str(EXAMPLE), "-o", "json").stdout  # JSON is never styled


def test_dry_run_previews_the_kind_the_dispatcher_will_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a plain W&B file that names no kind
    plain = write(tmp_path, "method: grid\nprogram: train.py\nparameters: {lr: {values: [0.1]}}\n")
    (tmp_path / "train.py").write_text("")
    monkeypatch.chdir(tmp_path)
    # WHEN nothing says which kind: the preview says the dispatcher's SWEEPQ_BACKEND decides
    doc = json.loads(run("submit", plain, "--dry-run", "-o", "json").stdout)
    assert (doc["kind"], doc["kind_source"]) == ("pytorchjob", None)
    text = run("submit", plain, "--dry-run").stdout
    assert "# kind: pytorchjob — the file names no kind, so the dispatcher's own $SWEEPQ_BACKEND decides" in text
    # THEN with SWEEPQ_BACKEND=local (as the local stack exports it), the preview is the local job it will run
    monkeypatch.setenv("SWEEPQ_BACKEND", "local")
    doc = json.loads(run("submit", plain, "--dry-run", "-o", "json").stdout)
    assert (doc["kind"], doc["kind_source"]) == ("local", "$SWEEPQ_BACKEND")
    assert "torch.distributed.run" in doc["manifest"]
    assert json.loads(run("submit", plain, "--dry-run", "-o", "json", "--kind", "job").stdout)["kind_source"] == "--kind"


def test_version_and_short_help() -> None:
    assert run("--version").stdout.startswith("producer (sweepq) ")
    assert run("status", "-h").stdout == run("status", "--help").stdout
