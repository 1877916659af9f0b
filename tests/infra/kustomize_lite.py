"""A small pure-Python kustomize for the subset infra/k8s uses, so tests need no binary.

Supported: ``resources`` (files and kustomization directories), ``components``
(``kind: Component`` directories), ``patches`` with ``path`` (strategic-merge patches of maps:
nested maps merge, lists and scalars replace, ``null`` deletes) and ``labels`` with ``pairs``
(metadata labels only). Any other field raises, so the manifests cannot quietly use a feature the
renderer would get wrong. ``test_k8s_manifests`` checks its output against ``kubectl kustomize``
wherever kubectl is installed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "components", "patches", "labels"}
Object = dict[str, Any]


def load_documents(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def identity(obj: Object) -> tuple[str, str, str, str]:
    meta = obj.get("metadata", {})
    return (obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])


def _kustomization(directory: Path, *, kind: str) -> Object:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    if data.get("kind") != kind:
        raise ValueError(f"{directory}/kustomization.yaml: kind {data.get('kind')!r}, expected {kind}")
    unknown = set(data) - SUPPORTED
    if unknown:
        raise ValueError(f"{directory}/kustomization.yaml: kustomize_lite does not support {sorted(unknown)}")
    return data


def merge(target: Any, patch: Any) -> Any:
    """Strategic merge for maps: maps merge recursively, ``None`` deletes, anything else replaces."""
    if not isinstance(target, dict) or not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge(out.get(key), value)
    return out


def _transform(directory: Path, data: Object, objects: list[Object]) -> list[Object]:
    for component in data.get("components", []):
        objects = _build(directory / component, objects, kind="Component")
    for patch_ref in data.get("patches", []):
        if set(patch_ref) != {"path"}:
            raise ValueError(f"{directory}: only `patches: - path: FILE` is supported, got {patch_ref}")
        for patch in load_documents(directory / patch_ref["path"]):
            matches = [i for i, obj in enumerate(objects) if identity(obj) == identity(patch)]
            if len(matches) != 1:
                raise ValueError(f"{directory}/{patch_ref['path']}: patch target {identity(patch)} matched {len(matches)}")
            objects[matches[0]] = merge(objects[matches[0]], patch)
    for label in data.get("labels", []):
        if set(label) != {"pairs"}:
            raise ValueError(f"{directory}: only `labels: - pairs: {{...}}` is supported, got {label}")
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    return objects


def _build(directory: Path, accumulated: list[Object], *, kind: str) -> list[Object]:
    data = _kustomization(directory, kind=kind)
    objects = [copy.deepcopy(obj) for obj in accumulated]
    for resource in data.get("resources", []):
        path = directory / resource
        objects += render(path) if path.is_dir() else load_documents(path)
    seen: set[tuple[str, str, str, str]] = set()
    for obj in objects:
        if identity(obj) in seen:
            raise ValueError(f"{directory}: {identity(obj)} is defined twice")
        seen.add(identity(obj))
    return _transform(directory, data, objects)


def render(directory: Path) -> list[Object]:
    """The objects ``kubectl kustomize DIRECTORY`` would print (order aside)."""
    return _build(Path(directory), [], kind="Kustomization")
