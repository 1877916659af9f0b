"""The W&B top-level keys of a sweep file that sweepq validates but does not act on, checked the way
W&B's schema (``sweeps/config/schema.json``) and ``schema_violations_from_proposed_config`` do, so a
file sweepq accepts is one W&B accepts too. Purely computational.

Each check returns problems (``<field>: <what is wrong> — <fix>``); none raises.
"""

from __future__ import annotations

from typing import Any, Mapping

STRING_KEYS = ("apiVersion", "job", "image_uri")  # the others are typed fields of SweepSpec
SCHEDULER_ENGINES = ("optuna", "ax", "wandb")
SCHEDULER_KEYS = ("engine", "source", "optimizer", "search_space")


def check_metrics(raw: Mapping[str, Any]) -> list[str]:
    """``metrics`` (multi-objective) is W&B's ``method: custom`` only; never together with ``metric``."""
    if "metrics" not in raw:
        return []
    if "metric" in raw:
        return [
            "metrics: `metric` and `metrics` cannot both be set (W&B refuses this too) — keep metric: {name: ..., "
            "goal: ...} for one objective"
        ]
    return [
        f"metrics: multi-objective `metrics` needs method: custom in W&B (got method: {raw.get('method')}) — "
        "sweepq optimises one metric: write metric: {name: ..., goal: ...}"
    ]


def check_strings(raw: Mapping[str, Any]) -> list[str]:
    """Keys W&B types as strings that sweepq only stores, and ``kind: sweep``."""
    problems = []
    for key in STRING_KEYS:
        if key in raw and raw[key] is not None and not isinstance(raw[key], str):
            problems.append(f"{key}: {raw[key]!r:.40} is not a string — quote it")
    if "kind" in raw and raw["kind"] != "sweep":
        problems.append(f"kind: {raw['kind']!r:.40} is not 'sweep' — W&B's only kind; remove it or write kind: sweep")
    return problems


def check_controller(raw: Mapping[str, Any]) -> list[str]:
    """``controller: {type: local|cloud}``: stored only — sweepq is the controller either way, and it
    registers the sweep in W&B with ``type: local`` so W&B's server schedules nothing."""
    if "controller" not in raw:
        return []
    controller = raw["controller"]
    if not isinstance(controller, Mapping) or controller.get("type") not in ("local", "cloud"):
        shown = controller.get("type") if isinstance(controller, Mapping) else controller
        return [f"controller: {shown!r:.40} — write controller: {{type: local}} or {{type: cloud}} (or remove it)"]
    return []


def check_scheduler(raw: Mapping[str, Any]) -> list[str]:
    """``scheduler`` (W&B's custom-scheduler hook): only ``engine: wandb`` runs W&B's own search,
    which is what sweepq runs; ``optuna``/``ax`` need ``method: custom`` (refused). Stored only."""
    if "scheduler" not in raw:
        return []
    scheduler = raw["scheduler"]
    if not isinstance(scheduler, Mapping):
        return [f"scheduler: must be a mapping like {{engine: wandb}}, got {type(scheduler).__name__}"]
    problems = [f"scheduler.{key}: unknown key — known keys: {', '.join(SCHEDULER_KEYS)}"
                for key in scheduler if key not in SCHEDULER_KEYS]
    engine = scheduler.get("engine")
    if engine != "wandb":
        why = "needs method: custom, which sweepq does not run" if engine in SCHEDULER_ENGINES else "is not an engine"
        problems.append(f"scheduler.engine: {engine!r:.40} {why} — remove `scheduler` (sweepq runs W&B's own "
                        "grid, random and bayes search)")
    for key in ("optimizer", "search_space"):
        if key in scheduler and "source" not in scheduler:
            problems.append(f"scheduler.{key}: needs scheduler.source (W&B's schema) — add source or remove {key}")
    if "early_terminate" in raw:
        problems.append("scheduler: cannot be used with early_terminate (W&B refuses this too) — remove one of them")
    if isinstance(raw.get("controller"), Mapping) and raw["controller"].get("type") == "local":
        problems.append("scheduler: cannot be used with controller: {type: local} (W&B refuses this too) — remove one")
    return problems
