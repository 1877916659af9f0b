"""One error hierarchy for sweepq.

Every error says what is wrong *and what to do*. Two families matter to the dispatcher:

* :class:`PermanentError` — retrying cannot help (a bad sweep file, a body that is not ours).
  A sweep that fails this way is stored as ``REJECTED`` with the message as its reason.
* :class:`TransientError` — the world was briefly unavailable (throttling, 5xx, a timeout).
  The step is retried on the next tick; SQS messages are *not* deleted.
"""

from __future__ import annotations


class SweepqError(Exception):
    """Base class of every error sweepq raises on purpose."""


class PermanentError(SweepqError):
    """Retrying the same input cannot succeed."""


class TransientError(SweepqError):
    """Retrying later may succeed. ``delay`` is a hint in seconds."""

    def __init__(self, message: str, *, delay: float = 0.0) -> None:
        super().__init__(message)
        self.delay = delay


class SpecError(PermanentError):
    """A sweep file is invalid. ``problems`` holds one line per problem.

    Each problem reads ``<field path>: <what is wrong> — <how to fix it>``.
    """

    def __init__(self, problems: list[str] | str, *, source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        head = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = head + self.problems[0]
        else:
            text = head + f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(text)


class MessageError(PermanentError):
    """An SQS body is not a sweepq message (garbage, truncated JSON, unknown schema version).

    The dispatcher leaves such a message on the queue so SQS redrives it into the DLQ.
    """


class ConfigError(SweepqError):
    """A setting (flag or environment variable) is missing or invalid."""


class LeaseHeld(SweepqError):
    """Another dispatcher holds the tick lease; this tick exits cleanly."""


class NotFound(SweepqError):
    """A sweep, trial or job does not exist."""


class Conflict(SweepqError):
    """A conditional write lost a race; the caller re-reads and re-plans."""


class LeaseLost(Conflict):
    """A fenced write failed because the tick's lease is no longer ours (it expired and another
    tick took it, or it was released): every further write of this tick would fail the same way."""


class ClaimsRefused(Conflict):
    """A part of a sweep's unit of work that had claims in it was refused (the sweep was paused, its
    cursor moved, …) and was written again without its claims and those of every later part: its
    transitions are committed; of its claims only ``written`` are (those of the parts committed
    before the refused one: (trial index, attempt) — their jobs are created as usual); nothing of
    the others may be created (the sweep is re-planned next tick)."""

    def __init__(self, message: str, *, written: frozenset[tuple[int, int]] = frozenset()) -> None:
        super().__init__(message)
        self.written = written
