"""Dispatcher-wide choices every Kubernetes kind renders the same way, and the pod security
settings they imply. Purely computational, no SDK imports."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

from dispatcher.core.errors import ConfigError
from dispatcher.core.policy import KueueRules, Policy, PriorityClass

TRIAL_UID = 10001  # docker/trainer.Dockerfile: USER 10001:10001
DEFAULT_TERMINATION_GRACE_S = 120
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

# (sweep priority, team) → WorkloadPriorityClass or None: :meth:`Policy.priority_class`.
PriorityClassOf = Callable[[int, Union[str, None]], Union[str, None]]
PriorityClasses = Union[Mapping[int, str], Iterable[tuple[int, str]], PriorityClassOf, None]


@dataclass(frozen=True)
class JobOptions:
    """Dispatcher-wide choices every Kubernetes kind renders the same way (backend options).

    * ``termination_grace_s`` — ``terminationGracePeriodSeconds`` of every trial pod: on a cancel,
      timeout or preemption the trainer gets SIGTERM and this long to checkpoint and report before
      SIGKILL (setting ``SWEEPQ_TERMINATION_GRACE_S``, default 120 s; keep it above one checkpoint
      write). TrainJob pods take theirs from the ClusterTrainingRuntime (see ``trainjob``).
    * ``run_as_user`` / ``run_as_group`` — the numeric UID/GID of every trial container
      (``runAsNonRoot`` needs a number the kubelet can check; the trainer image's ``USER`` is
      10001:10001). Also the pod's ``fsGroup``, so the outputs PVC and ``/dev/shm`` are writable.
    * ``kueue_priority_classes`` — which ``kueue.x-k8s.io/priority-class`` a Kueue job gets. One
      mapping, the operator policy's: :meth:`Policy.priority_class` (the entry with the largest
      ``min_priority`` ≤ the sweep's priority, the team's own list first; below every entry, or
      none configured: no label, Kueue's default priority). Given as the policy's bound method
      (``policy.priority_class``: team lists included), or as ``{min_priority: class}`` /
      ``[(min_priority, class), ...]``, which is read as the policy section
      ``kueue.priority_classes`` and looked up by the same method.
    """

    termination_grace_s: int = DEFAULT_TERMINATION_GRACE_S
    run_as_user: int = TRIAL_UID
    run_as_group: int = TRIAL_UID
    kueue_priority_classes: tuple[tuple[int, str], ...] = ()  # the mapping form, when given as one
    priority_class_of: PriorityClassOf | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, *, termination_grace_s: int | None = None, run_as_user: int | None = None,
              run_as_group: int | None = None, kueue_priority_classes: PriorityClasses = None) -> "JobOptions":
        """Checked construction from backend options (``None`` = the default)."""
        grace = DEFAULT_TERMINATION_GRACE_S if termination_grace_s is None else termination_grace_s
        if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 86400:
            raise ConfigError(f"termination_grace_s: {grace!r} — give whole seconds between 0 and 86400 "
                              "(SWEEPQ_TERMINATION_GRACE_S)")
        uid = TRIAL_UID if run_as_user is None else run_as_user
        gid = uid if run_as_group is None else run_as_group
        for name, value in (("run_as_user", uid), ("run_as_group", gid)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
                raise ConfigError(f"{name}: {value!r} — trial pods run as a numeric non-root id (1 .. 2^31-1)")
        if callable(kueue_priority_classes):
            return cls(termination_grace_s=grace, run_as_user=uid, run_as_group=gid,
                       priority_class_of=kueue_priority_classes)
        classes = _priority_classes(kueue_priority_classes)
        policy = Policy(kueue=KueueRules(priority_classes=[PriorityClass(name=name, min_priority=threshold)
                                                           for threshold, name in classes]))
        return cls(termination_grace_s=grace, run_as_user=uid, run_as_group=gid, kueue_priority_classes=classes,
                   priority_class_of=policy.priority_class if classes else None)

    def priority_class(self, priority: int, team: str | None = None) -> str | None:
        """The WorkloadPriorityClass of a sweep of ``priority`` (of ``team``), or ``None``."""
        return self.priority_class_of(priority, team) if self.priority_class_of else None


def _priority_classes(given: Mapping[int, str] | Iterable[tuple[int, str]] | None) -> tuple[tuple[int, str], ...]:
    pairs = list(given.items() if isinstance(given, Mapping) else given or ())
    classes: dict[int, str] = {}
    for threshold, name in pairs:
        if isinstance(threshold, bool) or not isinstance(threshold, int) or not -1000 <= threshold <= 1000:
            raise ConfigError(f"kueue_priority_classes: key {threshold!r} is not a sweep priority (an integer "
                              "from -1000 to 1000)")
        if not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise ConfigError(f"kueue_priority_classes[{threshold}]: {name!r} is not a WorkloadPriorityClass "
                              "name — use lower-case letters, digits, '-' and '.'")
        classes[threshold] = name
    return tuple(sorted(classes.items()))


DEFAULT_OPTIONS = JobOptions()


# Pod Security Standards "restricted" (and what the trainer image needs): non-root with a numeric
# id, no privilege escalation, no capabilities, the runtime's default seccomp profile. Set on the
# pod *and* on each container, so a runtime or operator that replaces one level keeps the other.
def pod_security_context(options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": options.run_as_user,
        "runAsGroup": options.run_as_group,
        "fsGroup": options.run_as_group,
        "fsGroupChangePolicy": "OnRootMismatch",  # no recursive chown of a large outputs volume per pod
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context(options: JobOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """Also a read-only root filesystem: a trial writes only its emptyDirs (``/tmp``, ``/dev/shm``)
    and the outputs PVC (``kube_common.volumes``)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": options.run_as_user,
        "runAsGroup": options.run_as_group,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
