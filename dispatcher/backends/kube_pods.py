"""Pod-level failure causes (issue 18): what a researcher needs to act on a failed or stuck job —
OOMKilled, image pull errors, a container that cannot be created, an unschedulable pod, the exit
code of the container that failed first.

Purely computational, no SDK imports: pod dicts (as the API lists them) in, one short line out.
The backends list the pods of a kind at most once per tick, and only when a job needs it (see
``KubeBackend.observe``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, NamedTuple

from dispatcher.backends.kube_common import parse_time, status_of

MESSAGE_LIMIT = 300  # characters of a kubelet/scheduler message kept in a cause
DETAIL_LIMIT = 500

# Container "waiting" reasons that mean the container cannot start as specified (rank 50), and
# the back-off of one that keeps crashing (rank 20, its last exit below it says why).
START_ERRORS = frozenset({
    "ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull", "RegistryUnavailable",
    "CreateContainerConfigError", "CreateContainerError", "RunContainerError", "PreCreateHookError",
})
RANK_OOM, RANK_START, RANK_DISRUPTION, RANK_UNSCHEDULABLE, RANK_POD, RANK_EXIT, RANK_BACKOFF = \
    60, 50, 45, 40, 35, 30, 20
# The pod condition DisruptionTarget (Kubernetes ≥1.26): the pod is being stopped by the cluster,
# not by the trial — its exit (often 143 after SIGTERM) is an echo of this. Reason → what happened.
DISRUPTIONS = {
    "TerminationByKubelet": "the node is shutting down or evicting pods",
    "EvictionByEvictionAPI": "evicted (node drain, PodDisruptionBudget-aware eviction)",
    "PreemptionByScheduler": "preempted by a higher-priority pod",
    "DeletionByTaintManager": "the node got a NoExecute taint",
    "DeletionByPodGC": "its node is gone",
}


class Cause(NamedTuple):
    rank: int  # higher = says more about why the job failed or is stuck
    at: float  # when it happened (earliest first among equal ranks: the root cause, not its echo)
    text: str


def _short(message: Any) -> str:
    text = " ".join(str(message or "").split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT - 1] + "…"


def _terminated_cause(name: str, terminated: Mapping[str, Any]) -> Cause | None:
    code = terminated.get("exitCode")
    reason = str(terminated.get("reason") or "")
    at = parse_time(terminated.get("finishedAt")) or math.inf
    if reason == "OOMKilled":
        return Cause(RANK_OOM, at, f"OOMKilled (container {name}, exit code {code}) — raise resources.memory "
                                   "or lower the per-process batch size")
    if code in (None, 0):
        return None
    what = f"{reason} " if reason and reason not in ("Error", "Completed") else ""
    message = _short(terminated.get("message"))
    return Cause(RANK_EXIT, at, f"{what}exit code {code} (container {name})" + (f": {message}" if message else ""))


def container_causes(statuses: Iterable[Any]) -> list[Cause]:
    causes: list[Cause] = []
    for status in statuses:
        if not isinstance(status, Mapping):
            continue
        name = str(status.get("name") or "?")
        state, last = status.get("state") or {}, status.get("lastState") or {}
        waiting = state.get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        if reason in START_ERRORS:
            message = _short(waiting.get("message"))
            causes.append(Cause(RANK_START, math.inf, f"{reason} (container {name})" + (f": {message}" if message else "")))
        for terminated in (state.get("terminated"), last.get("terminated")):
            if isinstance(terminated, Mapping):
                cause = _terminated_cause(name, terminated)
                if cause:
                    causes.append(cause)
        if reason == "CrashLoopBackOff":
            causes.append(Cause(RANK_BACKOFF, math.inf, f"CrashLoopBackOff (container {name})"))
    return causes


def pod_causes(pod: Mapping[str, Any]) -> list[Cause]:
    """Every cause one pod shows, unranked order."""
    status = status_of(pod)
    causes = container_causes([*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])])
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "PodScheduled" \
                and str(condition.get("status")) == "False" and condition.get("reason") == "Unschedulable":
            causes.append(Cause(RANK_UNSCHEDULABLE, parse_time(condition.get("lastTransitionTime")) or math.inf,
                                f"Unschedulable: {_short(condition.get('message'))}"))
        if isinstance(condition, Mapping) and condition.get("type") == "DisruptionTarget" \
                and str(condition.get("status")) == "True":
            reason = str(condition.get("reason") or "")
            what = DISRUPTIONS.get(reason, "stopped by the cluster")
            message = _short(condition.get("message"))
            causes.append(Cause(RANK_DISRUPTION, parse_time(condition.get("lastTransitionTime")) or math.inf,
                                f"disrupted ({reason or 'DisruptionTarget'}): {what}" + (f" — {message}" if message else "")
                                + "; not the trial's fault"))
    if status.get("phase") == "Failed" and status.get("reason"):  # Evicted, DeadlineExceeded, NodeLost, ...
        causes.append(Cause(RANK_POD, math.inf, f"{status['reason']}: {_short(status.get('message'))}".rstrip(": ")))
    return causes


def job_detail(pods: Iterable[Mapping[str, Any]]) -> str:
    """The most telling cause among a job's pods, e.g. ``"pod j-worker-1: OOMKilled (container
    pytorch, exit code 137) — ...; 1 more pod with problems"``; ``""`` when none shows one."""
    found: list[tuple[Cause, str]] = []
    for pod in pods:
        name = str((pod.get("metadata") or {}).get("name") or "?")
        found += [(cause, name) for cause in pod_causes(pod)]
    if not found:
        return ""
    cause, name = min(found, key=lambda item: (-item[0].rank, item[0].at, item[1]))
    others = len({pod for _, pod in found} - {name})
    text = f"pod {name}: {cause.text}" + (f"; {others} more pod{'s' if others > 1 else ''} with problems"
                                          if others else "")
    return text if len(text) <= DETAIL_LIMIT else text[:DETAIL_LIMIT - 1] + "…"


def pod_started_at(pod: Mapping[str, Any]) -> float | None:
    """When a container of ``pod`` first ran (its ``startedAt``, current or last; the pod's
    ``startTime`` for one that has restarted), or ``None`` if none has run yet — a pod pulling
    its image, unschedulable or failing to create its container never started."""
    status = status_of(pod)
    times: list[float] = []
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        if not isinstance(container, Mapping):
            continue
        state, last = container.get("state") or {}, container.get("lastState") or {}
        for ran in (state.get("running"), state.get("terminated"), last.get("terminated")):
            at = parse_time(ran.get("startedAt")) if isinstance(ran, Mapping) else None
            if at is not None:
                times.append(at)
        if not times and int(container.get("restartCount") or 0) > 0:
            at = parse_time(status.get("startTime"))
            if at is not None:
                times.append(at)
    return min(times) if times else None


def pod_failure(pod: Mapping[str, Any]) -> str:
    """A failed pod's reason in the short form of a job reason: ``"OOMKilled (exit code 137)"``,
    ``"exit code 1"``, or the pod's own reason."""
    status = status_of(pod)
    for container_status in status.get("containerStatuses") or []:
        terminated = ((container_status or {}).get("state") or {}).get("terminated") or {}
        code = terminated.get("exitCode")
        if code not in (None, 0):
            reason = terminated.get("reason") or ""
            return f"{reason} (exit code {code})" if reason and reason != "Error" else f"exit code {code}"
    return str(status.get("reason") or status.get("message") or "pod failed")
