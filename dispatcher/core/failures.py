"""A failed attempt's reason as a researcher reads it: how it ended, the cause, where the log is.

Purely computational, no side effects. Backends build the reason with :func:`format_failure`;
``producer status --trials`` and ``producer logs`` read it back with :func:`parse_failure`;
:mod:`dispatcher.core.outcomes` classifies it. The text is stored on the trial item (``reason``,
and per attempt in ``attempts``), so it is bounded (:data:`MAX_REASON`, under the 500 characters
the tick keeps of a live trial's reason) and its secrets were redacted before it got here
(the local backend's supervisor does that when it reads the log). Its shape::

    exit code 2: trainer: error: unknown argument --learning_rte (did you mean --learning_rate?)
    log: /home/me/sweeps/.sweepq/jobs/demo-lr-1a2b3c4d-0-a1/log.txt
    | loading tiny model
    | trainer: error: unknown argument --learning_rte (did you mean --learning_rate?). Valid…

Line 1, the *summary*: how the attempt ended (``exit code 2``, ``killed by signal 9 (SIGKILL)``,
``OOMKilled``…) and, after ``": "``, the cause: the most telling line of the log (an argparse
error, the exception that ended a traceback, ``can't open file``…), not the launcher's noise
(torchrun's ``ChildFailedError`` report and its glog lines are dropped). ``log:`` names where the
whole log is (a path, or a ``kubectl logs`` command). ``| `` lines: the last lines of the log,
oldest first. The reconcile step may append ``(attempt 3 of 3)``; :func:`parse_failure` reads
that back wherever it landed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

MAX_REASON = 480  # the tick keeps 500 characters of a live trial's / an attempt's reason
MAX_SUMMARY = 240
MAX_TAIL_LINE = 160
TAIL_LINES = 4
LOG_PREFIX = "log: "
TAIL_PREFIX = "| "
ELLIPSIS = "…"

# torchrun (torch.distributed.elastic) logs through glog-style lines: "E1203 09:20:43.893000 10334 path:1002] ..."
_GLOG = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ \S+:\d+\] ")
_LAUNCHER_NOISE = re.compile(r"^(WARNING|INFO|ERROR):torch\.distributed|^\*{5,}$|^Setting OMP_NUM_THREADS")
_RULE = re.compile(r"^={10,}$")
_TRACEBACK = "Traceback (most recent call last):"
_CHILD_FAILED = "ChildFailedError"
_ATTEMPT_NOTE = re.compile(r"\s*\((attempt \d+ of \d+[^()]*)\)\s*$")
# The line that says why, in the order we trust them (the last match of the best pattern wins).
_CAUSES = (
    re.compile(r"^\S[^:]{0,80}: error: "),  # argparse: "trainer: error: unrecognized arguments: ..."
    re.compile(r"can't open file|No such file or directory|command not found|No module named"),
    re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b(:|$)"),  # what ended a traceback
    re.compile(r"out of memory|OutOfMemory|OOMKilled|Killed$|Segmentation fault|core dumped", re.IGNORECASE),
    re.compile(r"\berror\b", re.IGNORECASE),
)


@dataclass(frozen=True)
class Failure:
    """A parsed reason. ``ended``: how the attempt ended; ``cause``: the telling log line."""

    ended: str
    cause: str = ""
    log: str = ""
    tail: tuple[str, ...] = field(default_factory=tuple)
    note: str = ""  # "attempt 3 of 3", added by the reconcile step

    @property
    def summary(self) -> str:
        text = f"{self.ended}: {self.cause}" if self.cause else self.ended
        return f"{text} ({self.note})" if self.note else text


def clip(text: str, limit: int) -> str:
    """``text`` (trailing blanks dropped) cut to ``limit`` characters, the cut marked with "…"."""
    text = text.rstrip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + ELLIPSIS


def useful_lines(lines: Iterable[str]) -> list[str]:
    """The log without the launcher's own report: torchrun's ``ChildFailedError`` traceback and the
    ``=====`` block after it, its glog lines and banners; blank lines and repeats (every rank prints
    the same error) dropped too."""
    out: list[str] = []
    pending: list[str] = []  # a traceback being read: kept unless it is torchrun's own
    in_report = False
    for raw in lines:
        line = raw.rstrip()
        if in_report:
            in_report = not _RULE.match(line)
            continue
        if pending:
            pending.append(line)
            if line and not line[0].isspace() and line != _TRACEBACK:  # the exception line ends it
                if _CHILD_FAILED not in line:
                    out.extend(pending)
                pending = []
            continue
        if line == _TRACEBACK:
            pending = [line]
            continue
        if _RULE.match(line):
            in_report = True
            continue
        if not line.strip() or _GLOG.match(line) or _LAUNCHER_NOISE.search(line):
            continue
        out.append(line)
    out.extend(pending)
    deduped: list[str] = []
    for line in out:
        if not deduped or deduped[-1] != line:
            deduped.append(line)
    return deduped


def cause_line(lines: Sequence[str]) -> str:
    """The most telling line: the last match of the most trusted pattern, else the last line."""
    for pattern in _CAUSES:
        for line in reversed(lines):
            if pattern.search(line.strip()):
                return line.strip()
    return lines[-1].strip() if lines else ""


def format_failure(ended: str, *, log_lines: Sequence[str] = (), log: str = "", limit: int = MAX_REASON) -> str:
    """The reason text of a failed attempt (see the module docstring), at most ``limit`` characters.

    ``log_lines``: the last lines of the trial's log, already redacted. Tail lines are dropped
    oldest first until the whole fits; the summary and the log location always stay.
    """
    lines = useful_lines(log_lines)
    cause = cause_line(lines)
    summary = clip(f"{ended.strip()}: {cause}" if cause else ended.strip(), MAX_SUMMARY)
    head = [summary] + ([clip(LOG_PREFIX + log, 200)] if log else [])
    tail = [TAIL_PREFIX + clip(line, MAX_TAIL_LINE) for line in lines[-TAIL_LINES:]]
    while tail and len("\n".join(head + tail)) > limit:
        tail.pop(0)
    return clip("\n".join(head + tail), limit)


def parse_failure(reason: str) -> Failure:
    """Read back a reason written by :func:`format_failure` — or any plain one-line reason
    (``"job demo-0-a1 vanished from the cluster"``), which becomes ``ended``."""
    text = reason.strip()
    note = ""
    match = _ATTEMPT_NOTE.search(text)  # appended at the very end (the reconcile step's way)
    if match:
        note, text = match.group(1), text[: match.start()]
    lines = text.splitlines() or [""]
    summary, rest = lines[0], lines[1:]
    match = _ATTEMPT_NOTE.search(summary)  # or at the end of the summary (:func:`with_note`)
    if match and not note:
        note, summary = match.group(1), summary[: match.start()]
    ended, _, cause = summary.partition(": ")
    log = next((line[len(LOG_PREFIX):] for line in rest if line.startswith(LOG_PREFIX)), "")
    tail = tuple(line[len(TAIL_PREFIX):] for line in rest if line.startswith(TAIL_PREFIX))
    return Failure(ended=ended.strip(), cause=cause.strip(), log=log.strip(), tail=tail, note=note)


def with_note(reason: str, note: str) -> str:
    """``reason`` with ``(note)`` at the end of its summary line, where a reader looks first."""
    first, sep, rest = reason.partition("\n")
    return f"{first} ({note}){sep}{rest}"


def job_reason(reason: str, detail: str = "") -> str:
    """A Kubernetes job's failure as one reason: the job's condition reason (``BackoffLimitExceeded``,
    ``still pending after 1900 s``) and the pod-level cause the backend found (``detail``:
    ``OOMKilled``, ``ImagePullBackOff: …``, ``Unschedulable: …``, ``exit code 1 (container trainer)``),
    so :mod:`dispatcher.core.outcomes` can classify the pod's cause. Either may be empty."""
    reason, detail = reason.strip(), detail.strip()
    if not detail or detail in reason:
        return reason or "job failed"
    if not reason:
        return detail
    first, sep, rest = reason.partition("\n")
    return f"{first}: {detail}{sep}{rest}"
