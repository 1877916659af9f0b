"""What a tick must list so that it can never miss its own jobs.

A fresh dispatcher process (every CronJob run, every cold Lambda) knows only its settings. The
jobs it must observe follow from the **stored active sweeps**: their kinds, and for kind
``template`` the API resource each sweep's template creates. :func:`prepare_observation`
registers those resources with the template backend before the tick lists, and returns the
sweeps that cannot be observed here, with the reason — the tick holds those (never reconciles
them: a job that was not listed must never be called LOST).

Intake uses :func:`template_resource` to refuse a template whose resource this deployment would
not list, and records the resource on the sweep (``template_resource``): a later process lists it
even after the operator removed the template from the policy or narrowed ``SWEEPQ_TEMPLATE_RESOURCES``.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from dispatcher.core.errors import PermanentError
from dispatcher.core.jobs import Backend
from dispatcher.core.records import SweepRecord


def resource_name(ref: Any) -> str:
    """``plural.group/version``, the form of ``SWEEPQ_TEMPLATE_RESOURCES``."""
    return f"{ref.plural}.{ref.group}/{ref.version}"


def template_resource(backend: Backend, template: Mapping[str, Any]) -> Any:
    """The API resource ``template`` creates, resolved like the template backend does (its
    ``plurals`` table included). Raises :class:`PermanentError` when it cannot be derived."""
    from dispatcher.backends.template import resource_of_template

    return resource_of_template(template, getattr(backend, "plurals", None))


def listed_resources(backend: Backend) -> set[str]:
    """What ``backend.observe()`` lists, as ``plural.group/version`` (multi-resource kinds)."""
    resources = getattr(backend, "resources", None)
    return {resource_name(ref) for ref in resources()} if callable(resources) else set()


def _template_ref(backend: Backend, record: SweepRecord) -> Any:
    """The resource a template sweep's jobs are: recorded at intake (``template_resource``), else
    (a sweep stored before it was recorded) its template's as the policy has it now."""
    from dispatcher.backends.template import parse_resource

    listing = getattr(backend, "list_resource", None)
    if not callable(listing):
        raise PermanentError("its backend cannot list templates")
    if record.template_resource:
        return listing(parse_resource(record.template_resource))
    resource_of_name = getattr(backend, "resource_of_name", None)
    if not record.launch.template or not callable(resource_of_name):
        raise PermanentError("the sweep names no template")
    return listing(resource_of_name(record.launch.template))


def prepare_observation(backends: Mapping[str, Backend], records: Iterable[SweepRecord], *,
                        namespace: str) -> dict[str, str]:
    """Make each backend list what the stored sweeps need; return ``{sweep_id: reason}`` for the
    sweeps this tick cannot observe, which it must hold untouched."""
    unobservable: dict[str, str] = {}
    for record in records:
        if record.namespace is not None and record.namespace != namespace:
            unobservable[record.sweep_id] = (
                f"accepted for namespace {record.namespace!r}, but this dispatcher runs in {namespace!r}: two "
                f"deployments share SWEEPQ_SCOPE {record.scope!r} — give each deployment its own scope")
            continue
        backend = backends.get(record.kind)
        if backend is None:
            unobservable[record.sweep_id] = (
                f"kind {record.kind!r} is not enabled on this dispatcher (SWEEPQ_KINDS: "
                f"{', '.join(sorted(backends)) or 'none'}): its jobs are not listed here, so the sweep is left as "
                f"it is — enable {record.kind!r} again to resume it or to carry out a cancel")
            continue
        if record.kind != "template":
            continue
        try:
            ref = _template_ref(backend, record)  # remembered: observe() lists it from now on
        except PermanentError as exc:
            unobservable[record.sweep_id] = f"its template's resource cannot be listed: {exc}"
            continue
        if resource_name(ref) not in listed_resources(backend):
            unobservable[record.sweep_id] = f"{resource_name(ref)} is not listed by the template backend"
    return unobservable
