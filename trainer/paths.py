"""Where the libraries write, when the trial runs as a non-root user with a read-only home.

The trainer itself writes only under its run directory (``SWEEPQ_OUTPUT_DIR`` or
``--output_dir``). The libraries it uses keep caches and settings under ``$HOME`` by default:
Hugging Face's hub cache (``HF_HOME``), torch hub (``TORCH_HOME``), Triton's kernel cache and
Inductor's (``torch.compile``), W&B's cache, config and staging directories. In the restricted
trial pod the home directory is not writable (read-only root filesystem, an arbitrary UID), so
before any of them is imported each variable that is unset and whose default location is not
writable is pointed at ``<cache root>/<name>``: ``$TMPDIR`` or ``/tmp`` (a memory or disk
``emptyDir`` in the pod), else the output root's ``.cache``. A variable that is set is never
changed; set ``HF_HOME`` to a shared volume to keep downloaded models across attempts.
Inductor's cache is always placed explicitly when unset (its default asks the password database
for a user name, which an arbitrary UID does not have).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path

logger = logging.getLogger(__name__)

# variable -> (its default location relative to $HOME, or None: not under $HOME, always placed when unset;
#              the directory under the cache root it gets)
CACHE_VARIABLES: dict[str, tuple[str | None, str]] = {
    "XDG_CACHE_HOME": (".cache", "xdg"),
    "HF_HOME": (".cache/huggingface", "huggingface"),
    "TORCH_HOME": (".cache/torch", "torch"),
    "TRITON_CACHE_DIR": (".triton/cache", "triton"),
    "WANDB_CACHE_DIR": (".cache/wandb", "wandb-cache"),
    "WANDB_CONFIG_DIR": (".config/wandb", "wandb-config"),
    "WANDB_DATA_DIR": (".local/share/wandb", "wandb-data"),
    "TORCHINDUCTOR_CACHE_DIR": (None, "torchinductor"),
}


def is_writable(directory: Path) -> bool:
    """True if ``directory`` is, or could be created as, a writable directory. Creates nothing: checks its
    nearest existing ancestor (``access(2)`` also reports a read-only filesystem for root)."""
    probe = directory
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def writable_cache_environment(environ: Mapping[str, str], *, output_root: Path,
                               writable: Callable[[Path], bool] = is_writable) -> dict[str, str]:
    """The variables to add so every library cache is writable (see the module docstring). Pure but for
    ``writable``, which probes the filesystem."""
    home = Path(environ["HOME"]) if environ.get("HOME") else None
    root: Path | None = None
    additions: dict[str, str] = {}
    for name, (relative, directory) in CACHE_VARIABLES.items():
        if environ.get(name):
            continue
        if relative is not None and home is not None and writable(home / relative):
            continue
        if root is None:
            root = _cache_root(environ, output_root, writable)
        additions[name] = str(root / directory)
    return additions


def _cache_root(environ: Mapping[str, str], output_root: Path, writable: Callable[[Path], bool]) -> Path:
    uid = os.getuid() if hasattr(os, "getuid") else 0
    for base in (environ.get("TMPDIR"), "/tmp"):
        if base and writable(Path(base) / f"sweepq-cache-{uid}"):
            return Path(base) / f"sweepq-cache-{uid}"
    return output_root / ".cache"


def prepare_writable_paths(environ: MutableMapping[str, str], *, output_root: Path) -> dict[str, str]:
    """Apply ``writable_cache_environment`` to ``environ`` (call before importing transformers or wandb)."""
    additions = writable_cache_environment(environ, output_root=output_root)
    environ.update(additions)
    if additions:
        logger.info("library caches placed (unset, and not writable under $HOME): %s",
                    ", ".join(f"{k}={v}" for k, v in additions.items()))
    return additions


def check_output_writable(run_dir: Path) -> None:
    """The run directory must be writable: say which setting fixes it before any training starts."""
    from trainer.config import ConfigError

    if not is_writable(run_dir):
        raise ConfigError(f"the run directory {run_dir} is not writable by this user (uid "
                          f"{os.getuid() if hasattr(os, 'getuid') else '?'}): set SWEEPQ_OUTPUT_DIR or --output_dir "
                          "to a writable volume")
