"""``producer``: validate, expand and submit sweep files; follow, inspect, cancel, pause and resume sweeps.

Commands (each takes ``--output text|json`` (``-o``), ``--verbose`` (``-v``) and ``-h``)::

    producer validate FILE             is the file valid? how many trials, which ones first
    producer expand FILE [--limit N]   the trials in launch order, one JSON object a line
    producer submit FILE [--dry-run]   send the sweep to the team queue (one SQS message); a flag per sweepq: key
    producer schema                    JSON schema of a sweep file
    producer status [SWEEP_ID]         progress, counts, best trial, why it ended; --trials: the trials table
    producer list                      sweeps, newest first (QUEUED ones from this machine included)
    producer logs SWEEP_ID [TRIAL]     a trial's log (local), or the kubectl commands that fetch it
    producer cancel SWEEP_ID           ask the dispatcher to cancel a sweep
    producer pause SWEEP_ID            ask it to launch nothing more of a sweep (running trials go on)
    producer resume SWEEP_ID           ask it to continue a paused sweep
    producer --version

``FILE`` may be ``-`` for stdin. Researchers need only two AWS permissions: send to the queue
and read the table; the dispatcher creates, watches and deletes jobs.

Exit codes:

    0  success
    1  invalid input: the sweep file (or the message built from it, e.g. over 256 KiB) is invalid;
       ``producer validate`` says why, one problem a line
    2  usage error: unknown flag, bad flag value, missing or unreadable FILE
    3  AWS or configuration error: no queue, no region or credentials, table missing, throttled
       or unreachable AWS, invalid team defaults or SWEEPQ_* variable
    4  not found: the sweep id is neither in the table nor queued from this machine; no such
       trial, attempt or log

Errors print one line per problem on stderr, never a traceback (``SWEEPQ_DEBUG=1`` shows it);
with ``-o json`` they are one JSON object on stdout instead (see :mod:`dispatcher.clikit`).

Idempotency: ``submit`` derives the sweep id from a token, ``--idempotency-key`` or a fresh
uuid4 per invocation. boto3's own retries resend the same body, and the dispatcher stores a
sweep with a conditional put keyed by that id, so a retried send never makes two sweeps;
re-running ``producer submit`` with the same ``--idempotency-key`` (e.g. a CI job id) is safe too.

Queued sweeps: ``submit`` keeps a local record of what it sent (:mod:`producer.queued`), so
``status`` and ``list`` show a sweep as QUEUED until a dispatcher stores it.

``submit --dry-run`` contacts no AWS service: its body names ``$USER`` as submitter, and the
manifest is built with this machine's ``SWEEPQ_*`` settings (namespace, state dir, ...), which
should match the dispatcher's for the preview to be exact; it says where the job kind came from.
"""

from __future__ import annotations

from producer import cli_files, cli_sweeps, logs  # noqa: F401 - they register their commands on the app
from producer.app import app

__all__ = ["app", "main"]


def main() -> None:
    """The ``producer`` console script."""
    app()
