"""No secret value in the template, the manifests, the Dockerfiles or the runbook."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from infra_expected import REPO

SCANNED = sorted(
    p for p in [*(REPO / "infra").rglob("*"), *(REPO / "docker").rglob("*"), REPO / ".dockerignore",
                REPO / "docs" / "DEPLOY.md"]
    if p.is_file() and "__pycache__" not in p.parts
)
PATTERNS = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(r"(?i)aws_secret_access_key\s*[:=]\s*['\"]?[A-Za-z0-9/+]{40}"),
    "W&B API key (40 hex)": re.compile(r"(?<![0-9a-f])[0-9a-f]{40}(?![0-9a-f])"),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "api-key with a value": re.compile(r"api-key\s*:\s*(?!\s*(\"\"|''|$))\S+", re.MULTILINE),
    "WANDB_API_KEY with a value": re.compile(r"WANDB_API_KEY\s*[=:]\s*(?![\"']?\$)[\"']?[A-Za-z0-9]{8,}"),
    "bearer token": re.compile(r"(?i)bearer\s+[A-Za-z0-9._-]{20,}"),
}


def find_secrets(text: str) -> list[str]:
    return [name for name, pattern in PATTERNS.items() if pattern.search(text)]


def test_the_scan_covers_template_manifests_dockerfiles_and_runbook():
    names = {p.relative_to(REPO).as_posix() for p in SCANNED}
    assert {"infra/aws/sweepq.yaml", "docker/trainer.Dockerfile", "docker/dispatcher.Dockerfile",
            "infra/k8s/templates/wandb-secret.yaml", "infra/k8s/base/cronjob.yaml", "docs/DEPLOY.md"} <= names


@pytest.mark.parametrize("path", SCANNED, ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_secret_value(path: Path):
    assert find_secrets(path.read_text(encoding="utf-8", errors="replace")) == []


@pytest.mark.parametrize(
    "text",
    [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "aws_secret_access_key: wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEYab",
        "WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567",
        "stringData:\n  api-key: 0123abcd",
        "-----BEGIN RSA PRIVATE KEY-----",
    ],
    ids=["access-key", "secret-key", "wandb-key", "secret-data", "private-key"],
)
def test_the_scan_finds_planted_secrets(text):
    assert find_secrets(text)


def test_secrets_in_manifests_carry_no_data():
    for path in (REPO / "infra" / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc and doc.get("kind") == "Secret":
                assert not doc.get("data") and all(v == "" for v in (doc.get("stringData") or {}).values()), path
