"""Turn a sweep's ``command`` (W&B macros) and one trial's parameters into an argv. Pure.

* ``${env}`` is dropped and ``${interpreter}`` becomes the launcher: the backend prepends its
  torchrun invocation (``torchrun --nnodes=... --nproc-per-node=...``), so a plain W&B command
  ``[${env}, ${interpreter}, ${program}, ${args}]`` runs ``torchrun ... train.py --lr=0.1``.
* ``${program}`` is the sweep's ``program``.
* ``${args}`` → ``--name=value`` per parameter; ``${args_no_hyphens}`` → ``name=value``;
  ``${args_json}`` → one JSON object. Nested parameters are dotted: ``--optimizer.lr=0.1``.
* Values: strings verbatim, booleans ``True``/``False`` and numbers as Python prints them
  (what W&B's agent passes), lists and dicts as JSON.
* A command without ``${interpreter}`` is run verbatim (launcher ``None``).

The result is an argument list: it never goes through a shell, so a value like ``"; rm -rf /"``
is one harmless argument.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping

from dispatcher.core.jobs import TrialCommand
from dispatcher.core.spec import DEFAULT_COMMAND, Sweep


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


def render_command(sweep: Sweep, params: Mapping[str, Any]) -> TrialCommand:
    spec = sweep.spec
    command = list(spec.command or DEFAULT_COMMAND)
    flat = flatten(params, (p.path for p in sweep.params))
    argv: list[str] = []
    launcher: str | None = None
    for part in command:
        if part == "${env}":
            continue
        if part == "${interpreter}":
            launcher = "torchrun"
            continue
        if part == "${program}":
            argv.append(spec.program or "")
        elif part == "${args}":
            argv.extend(f"--{name}={format_value(v)}" for name, v in flat)
        elif part == "${args_no_hyphens}":
            argv.extend(f"{name}={format_value(v)}" for name, v in flat)
        elif part == "${args_json}":
            argv.append(json.dumps(dict(params), sort_keys=True))
        else:
            argv.append(part.replace("${program}", spec.program or ""))
    return TrialCommand(argv=tuple(argv), launcher=launcher)
