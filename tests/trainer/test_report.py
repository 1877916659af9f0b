"""The run's files (result.json, the step log) and W&B gating. The metrics channel: test_channel.py."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from trainer.report import append_jsonl, read_jsonl, write_json_atomic
from trainer.tracking import Tracker


def test_result_json_writes_nan_as_null(tmp_path):
    path = tmp_path / "result.json"
    write_json_atomic(path, {"metrics": {"eval/loss": math.nan, "eval/accuracy": 0.5}, "history": [math.inf]})
    assert json.loads(path.read_text()) == {"metrics": {"eval/loss": None, "eval/accuracy": 0.5}, "history": [None]}


def test_step_log_appends_and_writes_nan_as_null(tmp_path):
    path = tmp_path / "run" / "train_log.jsonl"
    append_jsonl(path, {"global_step": 1, "train/loss": math.nan})
    append_jsonl(path, {"global_step": 1, "train/loss": 0.5})  # a restart replays step 1
    assert read_jsonl(path) == [{"global_step": 1, "train/loss": None}, {"global_step": 1, "train/loss": 0.5}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_tracker_is_inert_on_other_ranks_and_when_disabled(tmp_path):
    for is_main, environ in ((False, {"WANDB_MODE": "offline"}), (True, {"WANDB_MODE": "disabled"})):
        tracker = Tracker.start(is_main=is_main, run_id="s-1-3", group="s-1", project=None, config={},
                                run_dir=tmp_path, environ=environ)
        assert tracker.run is None
        tracker.log({"train/loss": 1.0}, global_step=1)
        tracker.finish("completed")
    assert not (tmp_path / "wandb").exists()


def test_trainer_never_sets_the_wandb_key():
    """The seed overwrote the injected key in code; nothing in trainer/ may assign or pass one."""
    source = "\n".join(p.read_text() for p in Path(__file__).resolve().parents[2].joinpath("trainer").glob("*.py"))
    assert not re.search(r"WANDB_API_KEY\"?\]?\s*=[^=]|setdefault\(\"WANDB_API_KEY|putenv|wandb\.login\(", source)
