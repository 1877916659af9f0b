"""The end of a local trial's log as it is copied into a failure reason: bounded, cleaned, redacted."""

from __future__ import annotations

from pathlib import Path

from dispatcher.backends.local_logs import read_tail, redact_line, secret_values

ENV = {"WANDB_API_KEY": "wandb-0123456789abcdef", "AWS_SECRET_ACCESS_KEY": "aws/Secret+Key", "HF_TOKEN": "hf_abc",
       "PATH": "/usr/bin", "SWEEPQ_ATTEMPT": "1", "MY_PASSWORD": "ab"}


def test_secret_values_are_those_of_secret_looking_names_long_enough_to_matter() -> None:
    assert secret_values(ENV) == ["wandb-0123456789abcdef", "aws/Secret+Key", "hf_abc"]


def test_values_of_the_trials_secrets_are_redacted_wherever_they_appear() -> None:
    secrets = secret_values(ENV)
    line = "config: {'key': 'wandb-0123456789abcdef'} token=hf_abc aws/Secret+Key path=/usr/bin"
    assert redact_line(line, secrets) == "config: {'key': '<redacted>'} token=<redacted> <redacted> path=/usr/bin"


def test_named_secret_values_are_redacted_even_when_unknown() -> None:
    line = 'export GITHUB_TOKEN=ghp_zzz DB_PASSWORD: "hunter2" API_KEY=\'k1\' batch_size=32 lr: 0.1'
    assert redact_line(line, []) == 'export GITHUB_TOKEN=<redacted> DB_PASSWORD: "<redacted>" API_KEY=\'<redacted>\' batch_size=32 lr: 0.1'


def test_tail_is_cleaned_bounded_and_redacted(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    lines = [f"step {i}" for i in range(100)]
    lines += ["\x1b[31mred error\x1b[0m", "progress 10%\rprogress 50%\rprogress 100%",
              "[sweepq-supervise 2026-01-01 00:00:00,000] trial finished: exit code 1",
              "WANDB_API_KEY=wandb-0123456789abcdef", "crlf line\r"]
    log.write_text("\n".join(lines) + "\n")
    tail = read_tail(log, env=ENV, max_lines=6)
    assert tail == ["step 98", "step 99", "red error", "progress 100%", "WANDB_API_KEY=<redacted>", "crlf line"]


def test_only_the_end_of_a_large_log_is_read_and_a_cut_line_is_dropped(tmp_path: Path) -> None:
    log = tmp_path / "log.txt"
    log.write_bytes(b"A" * 100_000 + b"\n" + b"B" * 50 + b"\nlast \xff line\n")
    tail = read_tail(log, env={}, max_bytes=100)
    assert tail == ["B" * 50, "last \ufffd line"]


def test_an_absent_log_has_an_empty_tail(tmp_path: Path) -> None:
    assert read_tail(tmp_path / "none.txt", env={}) == []
