"""Turn a sweep's ``command`` (W&B macros) and one trial's parameters into an argv. Pure.

* ``${env}`` is dropped and ``${interpreter}`` becomes the launcher: the backend prepends its
  torchrun invocation (``torchrun --nnodes=... --nproc-per-node=...``), so a plain W&B command
  ``[${env}, ${interpreter}, ${program}, ${args}]`` runs ``torchrun ... train.py --lr=0.1``.
* ``${program}`` is the sweep's ``program`` (a sweep without one cannot be rendered:
  :class:`SpecError` naming the fix — see :func:`dispatcher.core.spec.launch_problems`).
* The argument macros, one entry per parameter in W&B (sorted) order, nested names dotted
  (``--optimizer.lr=0.1``):

  ======================== ============================================================
  ``${args}``              ``--name=value``
  ``${args_no_hyphens}``   ``name=value``
  ``${args_no_boolean_flags}`` ``--name=value``, but a boolean is ``--name`` when true and
                           left out when false
  ``${args_no_equals}``    ``--name`` ``value`` (two elements)
  ``${args_append_hydra}`` ``+name=value``; ``${args_override_hydra}``: ``++name=value``
  ``${args_json}``         one element: the parameters as a JSON object
  ``${args_json_file}``    one element: the path of a file holding that JSON object
  ======================== ============================================================

* Values: strings verbatim, booleans ``True``/``False`` and numbers as Python prints them
  (what W&B's agent passes), lists and dicts as JSON.
* Other elements are passed as text (``4`` → ``"4"``, as W&B's agent does ``str()``).
* A command without ``${interpreter}`` is run verbatim (launcher ``None``).

``${args_json_file}`` — where the file lives, and what a backend must do. The argv holds
``args_json_path`` (default :data:`ARGS_JSON_PATH`, ``/etc/sweepq/args.json``); the file's content
is :func:`args_json_text` of the trial's parameters, and :func:`trial_files` gives both. The
backend must make the file exist at that path, read-only, *before* the trial's process starts and
on every node: the Kubernetes kinds put the text in the pod template annotation
:data:`ARGS_JSON_ANNOTATION` and mount it with a ``downwardAPI`` volume (item ``args.json``,
``fieldRef: metadata.annotations['sweepq.io/args-json']``) at :data:`ARGS_JSON_DIR` — created with
the job itself, so there is no extra object to clean up and nothing to race; the local backend
passes its own ``args_json_path`` under the job's directory and writes the file there. W&B's agent
writes the same JSON under ``wandb/sweep-<id>/config-<run>.json``; the script only sees a path.

The result is an argument list: it never goes through a shell, so a value like ``"; rm -rf /"``
is one harmless argument.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from dispatcher.core.errors import SpecError
from dispatcher.core.jobs import TrialCommand
from dispatcher.core.spec import ARG_MACROS, DEFAULT_COMMAND, Sweep, launch_problems

ARGS_JSON_DIR = "/etc/sweepq"
ARGS_JSON_PATH = f"{ARGS_JSON_DIR}/args.json"
ARGS_JSON_ANNOTATION = "sweepq.io/args-json"


def flatten(params: Mapping[str, Any], paths: Iterable[tuple[str, ...]]) -> list[tuple[str, Any]]:
    """``[(dotted name, value)]`` for each parameter path of the sweep, in W&B (sorted) order.

    The sweep's parameter paths decide what is a nested group (dotted) and what is a dict-valued
    parameter (rendered as one JSON argument).
    """
    out: list[tuple[str, Any]] = []
    for path in sorted(paths):
        node: Any = params
        for key in path:
            node = node[key]
        out.append((".".join(path), node))
    return out


def format_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)) or value is None:
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def args_json_text(params: Mapping[str, Any]) -> str:
    """The JSON object of ``${args_json}`` and of the ``${args_json_file}`` file (nested like the file)."""
    return json.dumps(dict(params), sort_keys=True)


def uses_args_json_file(sweep: Sweep) -> bool:
    return "${args_json_file}" in (sweep.spec.command or ())


def trial_files(sweep: Sweep, params: Mapping[str, Any], *, args_json_path: str = ARGS_JSON_PATH) -> dict[str, str]:
    """Files the backend must create for this trial before it starts: ``{path: text}`` (or ``{}``)."""
    return {args_json_path: args_json_text(params)} if uses_args_json_file(sweep) else {}


def _expand(macro: str, flat: list[tuple[str, Any]], params: Mapping[str, Any], args_json_path: str) -> list[str]:
    if macro == "${args}":
        return [f"--{name}={format_value(v)}" for name, v in flat]
    if macro == "${args_no_hyphens}":
        return [f"{name}={format_value(v)}" for name, v in flat]
    if macro == "${args_no_boolean_flags}":
        return [f"--{name}" if v is True else f"--{name}={format_value(v)}" for name, v in flat if v is not False]
    if macro == "${args_no_equals}":
        return [item for name, v in flat for item in (f"--{name}", format_value(v))]
    if macro == "${args_append_hydra}":
        return [f"+{name}={format_value(v)}" for name, v in flat]
    if macro == "${args_override_hydra}":
        return [f"++{name}={format_value(v)}" for name, v in flat]
    if macro == "${args_json}":
        return [args_json_text(params)]
    if macro == "${args_json_file}":
        return [args_json_path]
    raise SpecError(f"command: unknown macro {macro}")  # validate_sweep refuses these first


def render_command(sweep: Sweep, params: Mapping[str, Any], *, args_json_path: str = ARGS_JSON_PATH) -> TrialCommand:
    """The trial's argv. Raises :class:`SpecError` when the sweep cannot be launched (no program)."""
    problems = launch_problems(sweep)
    if problems:
        raise SpecError(problems)
    spec = sweep.spec
    command = list(DEFAULT_COMMAND) if spec.command is None else [str(part) for part in spec.command]
    flat = flatten(params, (p.path for p in sweep.params))
    argv: list[str] = []
    launcher: str | None = None
    for part in command:
        if part == "${env}":
            continue
        if part == "${interpreter}":
            launcher = "torchrun"
        elif part == "${program}":
            argv.append(spec.program or "")
        elif part in ARG_MACROS:
            argv.extend(_expand(part, flat, params, args_json_path))
        else:
            argv.append(part)
    return TrialCommand(argv=tuple(argv), launcher=launcher)
