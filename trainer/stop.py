"""Graceful stop: SIGTERM (or SIGINT) becomes a flag that every rank acts on at the same step.

Kubernetes deletes a pod with SIGTERM to its first process (torchrun, which forwards it to its
workers and SIGKILLs them after ``TORCH_ELASTIC_SHUTDOWN_TIMEOUT`` s, default 30) and SIGKILLs
what is left after ``terminationGracePeriodSeconds``; the local backend does the same with its
grace. A cancel, a timeout, an early stop, a Kueue eviction and a node drain all look alike here.

The handler only records the signal. At every optimizer-step boundary each rank contributes its
flag to an all-reduce (max) over a CPU gloo group, started asynchronously at step *k* and read at
step *k+1*, so the check costs neither a GPU synchronisation nor a wait; every rank reads the same
reduced value and stops at the same boundary, at most two steps after the first signal. At epoch
ends and evaluation points the check is synchronous (``agree_now``). Then the caller checkpoints,
flushes metrics with a ``stopped``/``preempted`` marker and exits with 128 + the signal number.

``stopped``: this process was signalled (its pod is going away). ``preempted``: it was not, a
peer rank was — part of the job is lost (the dispatcher only ever deletes whole jobs), this pod's
torchrun restarts at the smaller world size from the checkpoint just written.

Repeated signals change nothing (torchrun forwards the SIGINT a terminal already delivered);
SIGQUIT (Ctrl-\\) or SIGKILL end a run immediately.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

from trainer.distributed import DistInfo, finish_max_reduce, start_max_reduce

logger = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True)
class StopDecision:
    signal_number: int  # the (largest) signal number any rank received
    local: bool  # this process received a signal itself

    @property
    def status(self) -> str:
        return "stopped" if self.local else "preempted"

    @property
    def exit_code(self) -> int:
        return 128 + self.signal_number

    @property
    def signal_name(self) -> str:
        try:
            return signal.Signals(self.signal_number).name
        except ValueError:
            return str(self.signal_number)


class StopRequests:
    """Signal flag + cross-rank agreement. ``install()`` in the main thread, ``uninstall()`` at the end."""

    def __init__(self, dist: DistInfo) -> None:
        self.dist = dist
        self.received = 0  # signal number received by this process, 0 if none
        self._pending: Any = None
        self._previous: dict[int, Any] = {}
        self.decision: StopDecision | None = None

    def install(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("stop signal handlers can only be installed from the main thread")
        for number in STOP_SIGNALS:
            self._previous[number] = signal.signal(number, self._on_signal)
        return self

    def uninstall(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def _on_signal(self, number: int, frame: FrameType | None) -> None:
        if not self.received:
            self.received = number

    def poll(self) -> bool:
        """At an optimizer-step boundary: True when every rank has agreed to stop here."""
        if not self.dist.is_distributed:
            return self._decide(self.received)
        agreed = finish_max_reduce(self._pending) if self._pending is not None else 0
        self._pending = None
        if self._decide(agreed):
            return True
        self._pending = start_max_reduce(self.received, self.dist)
        return False

    def agree_now(self) -> bool:
        """A synchronous agreement (epoch ends, evaluation points); consumes any pending poll first."""
        agreed = finish_max_reduce(self._pending) if self._pending is not None else 0
        self._pending = None
        if not agreed:
            agreed = finish_max_reduce(start_max_reduce(self.received, self.dist))
        return self._decide(agreed)

    def drain(self) -> None:
        """Wait for an outstanding poll, so no collective is left in flight when training ends."""
        if self._pending is not None:
            finish_max_reduce(self._pending)
            self._pending = None

    def _decide(self, agreed: int) -> bool:
        if not agreed:
            return False
        self.decision = StopDecision(signal_number=agreed, local=bool(self.received))
        logger.warning("stop requested (%s%s): stopping at this optimizer step", self.decision.signal_name,
                       "" if self.decision.local else " on a peer rank")
        return True
