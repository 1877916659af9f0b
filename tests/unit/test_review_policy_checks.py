"""Adversarial review (rev11p) of the operator policy's checks (``Policy.admit`` / ``check_launch``)
and the launch-settings validation they rely on, as a hostile teammate who writes the whole
``launch`` dict of a raw SQS body and as an operator who writes a plausible policy file. Each test
fails on the current code; the docstring says the attack, what should happen and what does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from dispatcher.backends.kube_common import container_env, node_resources
from dispatcher.core.envnames import reserved_reason
from dispatcher.core.jobs import LaunchRequest, TrialCommand
from dispatcher.core.launch import LaunchSettings
from dispatcher.core.policy import Policy

SENDER = "AIDAEXAMPLEALICE"


def admit(policy: Policy, **launch: object):
    return policy.admit(LaunchSettings.model_validate(launch), sender=SENDER)


# ---------------------------------------------------------------- kinds


def test_a_sweep_that_names_no_kind_is_never_checked_against_the_policys_kinds() -> None:
    """Attack: the operator offers only TrainJob (``kinds: [trainjob]``); the dispatcher's
    SWEEPQ_BACKEND is the default ``pytorchjob``. A sweep that simply leaves ``kind`` out runs as the
    dispatcher's default kind (intake: ``kind = launch.kind or settings.backend``). Expected: the
    policy refuses it (or admit resolves the effective kind and checks it), as SECURITY.md's row "a
    kind the operator does not offer → REJECTED" says. Actual: ``_check_kinds`` is skipped for
    ``kind is None``: no violation, so the kind the operator banned is launched."""
    policy = Policy.from_data({"kinds": ["trainjob"]})
    admission = admit(policy)
    assert (not admission.ok) or admission.launch.kind == "trainjob", "admitted with kind None → SWEEPQ_BACKEND"


# ---------------------------------------------------------------- limits


def test_cpu_and_memory_limits_are_bypassed_by_asking_for_nothing() -> None:
    """Attack: the operator caps ``limits: {cpu: '8', memory: 64Gi}`` per node. A sweep that omits
    ``resources`` passes admit, and ``node_resources`` (every built-in kind's requests/limits)
    renders no cpu/memory at all: a BestEffort pod with no memory limit, free to use the whole node.
    Expected: the policy's maxima apply to sweeps that set none (as ``max_concurrent`` and
    ``max_runtime`` do, policy_parts.Limits docstring) — admit fills them in, or refuses. Actual:
    admitted with no request and no limit."""
    policy = Policy.from_data({"limits": {"cpu": "8", "memory": "64Gi"}})
    admission = admit(policy, kind="pytorchjob")
    assert admission.ok
    rendered = node_resources(admission.launch)
    assert rendered.get("limits", {}).get("memory") is not None, rendered


def test_a_stricter_start_timeout_limit_rejects_every_sweep_that_sets_none() -> None:
    """Operator: ``limits: {start_timeout: 15m}`` (a cluster where pods schedule fast). Expected: a
    sweep that leaves start_timeout unset gets the policy's limit (like max_runtime) and is admitted.
    Actual: the model default 1800 s is checked as if the sender asked for it: every sweep that says
    nothing is REJECTED with "start_timeout: 1800 s is refused … at most 900"."""
    policy = Policy.from_data({"limits": {"start_timeout": "15m"}})
    admission = admit(policy, kind="pytorchjob")
    assert admission.ok, admission.reason


# ---------------------------------------------------------------- images


def test_docker_io_single_component_images_are_normalised_like_the_runtime() -> None:
    """Operator: ``images: [ubuntu]`` (docker.io/library/ubuntu). ``docker.io/ubuntu:22.04`` is the
    same image to every runtime (docker/distribution ParseNormalizedNamed adds ``library/`` for
    docker.io). Expected: allowed — the module docstring promises "docker.io/library/ubuntu and
    ubuntu are one image". Actual: ``parse_image`` only adds ``library/`` when no registry is written,
    so ``docker.io/ubuntu`` resolves to ``docker.io/ubuntu`` and is refused (and a policy entry
    ``docker.io/ubuntu`` in turn refuses plain ``ubuntu``)."""
    policy = Policy.from_data({"images": ["ubuntu"]})
    assert admit(policy, kind="pytorchjob", image="docker.io/ubuntu:22.04").ok
    policy = Policy.from_data({"images": ["docker.io/ubuntu"]})
    assert admit(policy, kind="pytorchjob", image="ubuntu:22.04").ok


def test_index_docker_io_in_upper_case_is_not_normalised() -> None:
    """``INDEX.DOCKER.IO/acme/x`` is Docker Hub (hostnames are case-insensitive; the policy's own
    entries are lower-cased before the ``index.docker.io`` → ``docker.io`` mapping). Expected: the
    image resolves to ``docker.io/acme/x`` and ``images: [acme/]`` allows it. Actual: the alias check
    runs before lower-casing, the image resolves to ``index.docker.io/acme/x`` and is refused."""
    policy = Policy.from_data({"images": ["acme/"]})
    assert admit(policy, kind="pytorchjob", image="INDEX.DOCKER.IO/acme/x:1").ok


def test_an_image_with_a_trailing_newline_is_admitted() -> None:
    """Attack: ``image: "ghcr.io/acme/trainer\\n"`` in a raw body. ``_IMAGE`` ends in ``$``, which
    Python's ``re`` also matches before a final newline. Expected: refused at intake like any other
    non-reference (the Kubernetes API refuses an image with leading/trailing whitespace, so every job
    of the sweep fails at create). Actual: LaunchSettings and the policy (images: [ghcr.io/acme/])
    admit it."""
    policy = Policy.from_data({"images": ["ghcr.io/acme/"]})
    with pytest.raises(ValueError):
        admit(policy, kind="pytorchjob", image="ghcr.io/acme/trainer\n")


def test_an_env_name_with_a_trailing_newline_is_admitted() -> None:
    """Same ``$`` defect in ``ENV_NAME`` (envnames.py) and kube_common's ``_ENV_NAME``:
    ``env: {"PATH\\n": "/x"}`` passes LaunchSettings, the policy (``reserved_reason`` matches ``PATH``
    exactly, not ``PATH\\n``) and ``container_env``. Expected: refused as not an environment variable
    name (Kubernetes' IsEnvVarName refuses it: the created job would fail). Actual: admitted."""
    with pytest.raises(ValueError):
        LaunchSettings.model_validate({"env": {"PATH\n": "/tmp/evil"}})


# ---------------------------------------------------------------- env


def test_shellopts_and_ps4_run_code_in_a_fixed_bash_command(tmp_path: Path) -> None:
    """Attack: envnames.py reserves ``BASH_ENV``, ``ENV``, ``BASH_FUNC_*`` because "an operator's
    template may pin the image and command; these would run other code anyway". ``SHELLOPTS=xtrace``
    with ``PS4='$(cmd)'`` does exactly that for every bash a non-root trial runs (trial pods are
    runAsNonRoot, so bash imports PS4). Expected: both names reserved. Actual: LaunchSettings and the
    default policy admit them, ``container_env`` renders them, and a real bash run with that env
    executes the injected command. (Also unreserved: BASHOPTS, PERLLIB, RUBYLIB, NODE_PATH,
    JDK_JAVA_OPTIONS, _JAVA_OPTIONS, LUA_INIT, GCONV_PATH, GIT_SSH_COMMAND.)"""
    user = 65534 if os.geteuid() == 0 else None  # trial pods run as non-root
    env = {"SHELLOPTS": "xtrace", "PS4": "$(touch MARKER)"}
    try:
        launch = LaunchSettings.model_validate({"kind": "pytorchjob", "env": env})
    except ValueError:
        return  # refused as reserved: the expected outcome
    if not Policy.default().admit(launch, sender=SENDER).ok:
        return
    request = LaunchRequest(sweep_id="s-abcdefgh", trial_index=0, trial_id="s-abcdefgh-0", attempt=1,
                            job_name="s-abcdefgh-0-a1", namespace="sweepq", params={},
                            command=TrialCommand(argv=("bash", "-c", "true"), launcher=None), launch=launch,
                            env={"SWEEP_ID": "s-abcdefgh"})
    rendered = {e["name"]: e["value"] for e in container_env(request) if "value" in e}
    where = Path(tempfile.mkdtemp(prefix="rev11p-")) if user is not None else tmp_path  # reachable by that user
    try:
        os.chmod(where, 0o777)
        marker = where / "pwned"
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   **{k: v.replace("MARKER", str(marker)) for k, v in rendered.items()}}
        subprocess.run([shutil.which("bash") or "/bin/bash", "-c", "true"], env=run_env, user=user, check=True,
                       capture_output=True, timeout=30)
        ran = marker.exists()
    finally:
        if where != tmp_path:
            shutil.rmtree(where, ignore_errors=True)
    assert not ran, "the sender's PS4 command ran inside the trial's fixed bash command"


def test_pgpassword_is_not_a_secret_looking_name() -> None:
    """Attack/claim: envnames.py and SECURITY.md say secret-looking names (``*PASSWORD*`` …) are refused
    so secrets never travel through the queue and the table (every researcher reads it). ``SECRET_ENV``
    requires ``_`` or the start before the word, so ``PGPASSWORD`` (libpq's password variable),
    ``DBPASSWORD``, ``APIKEY``, ``MY_SECRETS`` are accepted and their values stored in the sweep item.
    Expected: refused as secret-looking. Actual: ``reserved_reason`` returns None."""
    for name in ("PGPASSWORD", "DBPASSWORD", "APIKEY", "MY_SECRETS"):
        assert reserved_reason(name), name


# ---------------------------------------------------------------- secrets in violations


def test_a_w_and_b_key_pasted_as_wandb_secret_is_echoed_into_the_reason() -> None:
    """Attack/mistake: ``wandb_secret`` is a Secret *name*, but a researcher pastes the W&B key itself
    (a classic key is 40 lower-case hex characters — a valid DNS label, so LaunchSettings accepts it).
    Expected (policy_checks.Violation: "value … never a secret"): the reason names the field and what
    is allowed without copying a value that is plainly a key. Actual: the 40-hex key is in the
    Violation, i.e. in the REJECTED reason every researcher can read and in the dispatcher's log."""
    key = "0123456789abcdef0123456789abcdef01234567"
    admission = admit(Policy.default(), kind="pytorchjob", wandb_secret=key)
    assert not admission.ok
    assert key not in admission.reason


def test_the_example_policy_rejects_a_team_members_sweep_that_names_no_wandb_secret() -> None:
    """Operator: ``infra/policy.example.yaml`` as shipped (``wandb_secrets: []`` shared, each team its
    own). A team-a member's sweep that says nothing about W&B gets the model default
    ``wandb_secret: wandb`` and is REJECTED for a Secret it never asked for ("wandb_secret: 'wandb'
    is refused … allowed: wandb-team-a (or null)"), while ``admit`` does fill the team's Kueue queue
    "whatever they say". Expected: the team's own Secret (or none) is the effective default and the
    sweep is admitted. Actual: rejected."""
    from dispatcher.adapters.policy_source import load_policy

    policy = load_policy(str(Path(__file__).resolve().parents[2] / "infra" / "policy.example.yaml"))
    launch = LaunchSettings.model_validate({"kind": "pytorchjob", "service_account": "sweepq-trainer",
                                            "image": "111122223333.dkr.ecr.us-east-1.amazonaws.com/sweepq-trainer:1"})
    admission = policy.admit(launch, sender=SENDER)
    assert admission.ok, admission.reason
