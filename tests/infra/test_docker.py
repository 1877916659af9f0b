"""The Dockerfiles, checked without a Docker daemon (there is none on these machines): pinned
bases, non-root users, COPY sources that exist and survive .dockerignore, entrypoints that import,
and dependency lists without torch where torch must not be."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from infra_expected import DOCKERFILES, REPO

_spec = importlib.util.spec_from_file_location("sweepq_docker_requirements", REPO / "docker" / "requirements.py")
_requirements = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_requirements)
requirement_name, requirements = _requirements.requirement_name, _requirements.requirements

PYPROJECT = REPO / "pyproject.toml"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    argument: str


def instructions(path: Path) -> list[Instruction]:
    """Dockerfile instructions with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, argument = line.partition(" ")
            out.append(Instruction(keyword.upper(), argument.strip()))
    return out


def base_images(path: Path) -> list[str]:
    args = {}
    images = []
    for ins in instructions(path):
        if ins.keyword == "ARG" and "=" in ins.argument:
            name, _, default = ins.argument.partition("=")
            args[name] = default
        if ins.keyword == "FROM":
            image = ins.argument.split()[0]
            images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image))
    return images


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob(pattern.lstrip("!").rstrip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negate
    return ignored


def _glob(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def ignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfiles_exist():
    assert {p.name for p in DOCKERFILES} == {"trainer.Dockerfile", "dispatcher.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile):
    for image in base_images(dockerfile):
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and tag and "/" not in tag and tag != "latest"), image
        assert re.search(r"\d", tag), f"{image}: pin a versioned tag"


def test_trainer_base_is_a_cuda_pytorch_runtime_and_dispatcher_base_is_slim_python():
    trainer, dispatcher = (REPO / "docker" / f"{n}.Dockerfile" for n in ("trainer", "dispatcher"))
    assert re.fullmatch(r"pytorch/pytorch:\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", base_images(trainer)[0])
    assert re.fullmatch(r"python:3\.12\.\d+-slim-\w+", base_images(dispatcher)[0])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_runs_as_a_non_root_user(dockerfile):
    users = [ins.argument for ins in instructions(dockerfile) if ins.keyword == "USER"]
    assert users, "no USER: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0") and (not user.isdigit() or int(user) >= 1000)
    last_user = max(i for i, ins in enumerate(instructions(dockerfile)) if ins.keyword == "USER")
    assert not [ins for ins in instructions(dockerfile)[last_user:] if ins.keyword == "RUN"], "RUN as the final user"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_every_copy_source_exists_and_is_in_the_build_context(dockerfile):
    patterns = ignore_patterns()
    copies = [ins for ins in instructions(dockerfile) if ins.keyword in ("COPY", "ADD")]
    assert copies
    for ins in copies:
        assert ins.keyword == "COPY" and "--from" not in ins.argument
        *sources, _ = ins.argument.split()
        for source in sources:
            path = REPO / source
            assert path.exists(), f"{dockerfile.name}: COPY {source}: missing"
            files = [path] if path.is_file() else [p for p in path.rglob("*.py")]
            assert files, source
            for file in files:
                relative = file.relative_to(REPO).as_posix()
                if "__pycache__" not in relative:
                    assert not dockerignored(relative, patterns), f"{relative} is excluded by .dockerignore"


def test_dockerignore_keeps_tests_state_and_credentials_out():
    patterns = ignore_patterns()
    for path in ("tests/infra/conftest.py", ".venv/bin/python", ".git/config", ".sweepq/jobs/x", "outputs/a.pt",
                 "dispatcher/__pycache__/tick.cpython-312.pyc", ".aws/credentials", ".env", "wandb/run/x"):
        assert dockerignored(path, patterns), path
    assert not dockerignored("dispatcher/tick.py", patterns)


def _pyproject():
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def test_dispatcher_image_entrypoint_is_the_console_script_and_it_imports():
    dockerfile = REPO / "docker" / "dispatcher.Dockerfile"
    entry = [ins.argument for ins in instructions(dockerfile) if ins.keyword == "ENTRYPOINT"][-1]
    assert entry == '["dispatcher"]'
    module, _, function = _pyproject()["scripts"]["dispatcher"].partition(":")
    assert callable(getattr(importlib.import_module(module), function))
    deps = {requirement_name(r) for r in requirements(PYPROJECT, extras=[], exclude=[])}
    assert not deps & {"torch", "transformers", "wandb"}, "the dispatcher image must stay small"


def test_trainer_image_runs_torchrun_on_the_trainer_module():
    dockerfile = REPO / "docker" / "trainer.Dockerfile"
    assert [ins.argument for ins in instructions(dockerfile) if ins.keyword == "ENTRYPOINT"][-1] == '["torchrun"]'
    assert importlib.util.find_spec("torch.distributed.run") is not None
    assert importlib.util.find_spec("trainer.__main__") is not None
    # torch stays the base image's: never in the requirement list the image installs.
    deps = [requirement_name(r) for r in requirements(PYPROJECT, extras=["trainer"], exclude=["torch"])]
    assert "torch" not in deps and "transformers" in deps and "boto3" in deps
    trainer_extra = {requirement_name(r) for r in _pyproject()["optional-dependencies"]["trainer"]}
    assert trainer_extra - {"torch"} <= set(deps)


def test_requirement_names_are_normalised():
    assert requirement_name("Torch==2.1") == "torch"
    assert requirement_name("python_etcd>=0.4") == "python-etcd"
    with pytest.raises(SystemExit):
        requirements(PYPROJECT, extras=["no-such-extra"], exclude=[])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_no_secret_is_baked_into_the_image(dockerfile):
    for ins in instructions(dockerfile):
        if ins.keyword in ("ENV", "ARG"):
            assert not re.search(r"(KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL)", ins.argument, re.IGNORECASE), ins


# ---------------------------------------------------------------------------- the trainer runs non-root

TRAINER = REPO / "docker" / "trainer.Dockerfile"
# The runAsUser/runAsGroup trial pods get (dispatcher/backends/kube_options.py TRIAL_UID, from the
# upstream branch) and the admission tests' restricted pod: the image's USER must be the same.
TRIAL_UID = 10001
WRITABLE = ("/tmp", "/outputs")  # the image's only writable paths (and /dev/shm, a pod volume)


def _env(dockerfile: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions(dockerfile):
        if ins.keyword == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", ins.argument):
                env[name] = value
    return env


def test_trainer_image_runs_as_uid_10001_and_writes_only_under_tmp_and_outputs():
    ins = instructions(TRAINER)
    assert [i.argument for i in ins if i.keyword == "USER"][-1] == f"{TRIAL_UID}:{TRIAL_UID}"
    setup = " ".join(i.argument for i in ins if i.keyword == "RUN")
    assert f"--uid {TRIAL_UID}" in setup and f"--gid {TRIAL_UID}" in setup and "chmod 1777 /outputs /tmp" in setup
    env = _env(TRAINER)
    # every path the image points a tool at is writable; the caches the trainer's stack uses are set
    paths = {name: value for name, value in env.items() if value.startswith("/")}
    assert paths and all(value.startswith(WRITABLE) for value in paths.values()), paths
    assert {"HOME", "TMPDIR", "HF_HOME", "TORCH_HOME", "TRITON_CACHE_DIR", "MPLCONFIGDIR", "XDG_CACHE_HOME",
            "WANDB_DIR"} <= set(paths)
    assert env["HOME"] == "/tmp" and env["SWEEPQ_OUTPUT_DIR"] == "/outputs"
    assert [i.argument for i in ins if i.keyword == "WORKDIR"][-1] in WRITABLE


def test_the_outputs_path_is_where_the_backends_mount_the_outputs_volume():
    from dispatcher.backends.kube_common import DEFAULT_OUTPUT_DIR

    assert _env(TRAINER)["SWEEPQ_OUTPUT_DIR"] == DEFAULT_OUTPUT_DIR


@pytest.mark.slow
def test_under_the_images_environment_the_trainer_writes_nowhere_else(tmp_path):
    # GIVEN the image's environment with /tmp and /outputs mapped to fresh directories, and a
    # working directory that must stay untouched (the image's root filesystem may be read-only)
    import subprocess
    import sys

    roots = {"/tmp": tmp_path / "tmp", "/outputs": tmp_path / "outputs"}
    for root in roots.values():
        root.mkdir()
    cwd = tmp_path / "readonly-cwd"
    cwd.mkdir()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    for name, value in _env(TRAINER).items():
        for prefix, root in roots.items():
            if value == prefix or value.startswith(prefix + "/"):
                value = str(root) + value[len(prefix):]
        env[name] = value
    # WHEN one tiny trial runs under torchrun
    result = subprocess.run(
        [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node=1", "-m", "trainer",
         "--model=tiny", "--data=synthetic", "--synthetic_samples=200", "--max_length=32", "--epochs=1"],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    # THEN its results are under /outputs, its caches under /tmp, and nothing anywhere else
    assert (roots["/outputs"] / "standalone" / "result.json").is_file()
    assert list(cwd.iterdir()) == []
    assert any(roots["/tmp"].iterdir())
