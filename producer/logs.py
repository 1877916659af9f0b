"""``producer logs SWEEP_ID [TRIAL]``: a trial's whole log, or how to get it.

* **local** trials: the log is a file on the dispatcher's machine
  (``<SWEEPQ_STATE_DIR>/jobs/<job>/log.txt``; a failed attempt's reason names the exact path).
  Printed when this machine can read it; else the error says where it is.
* **Kubernetes** kinds: researchers may not have cluster access, and logs go with the pods, so
  the command prints the ``kubectl`` commands that fetch them (by label: every pod of the attempt,
  whatever its kind names it) and the pods' names.

``TRIAL`` defaults to the first failed trial, else the first running one, else trial 0;
``--attempt`` to the trial's latest attempt.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from dispatcher.clikit import setup_logging
from dispatcher.core.errors import NotFound
from dispatcher.core.failures import parse_failure
from dispatcher.core.identity import job_name
from dispatcher.core.jobs import LABEL_ATTEMPT, LABEL_SWEEP_ID, LABEL_TRIAL_INDEX
from dispatcher.settings import Settings
from producer import output as out
from producer.app import OutputOpt, TableOpt, VerboseOpt, app, sweep_id_arg
from producer.output import Output, cli_errors, emit_json
from producer.reader import Reader

LOG_FILE = "log.txt"
POD_NAMES = {  # CONTRACTS C1's pod-name grammar per kind
    "pytorchjob": "{job}-worker-<n>",
    "elasticjob": "{job}-worker-<n>",
    "trainjob": "{job}-node-<i>-<j>-<suffix>",
    "job": "{job}-<suffix>",
    "template": "as the template names them",
}


def pick_trial(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trial whose log a researcher most likely wants: the first failed, else the first live one."""
    by_index = sorted(items, key=lambda i: int(i.get("index", 0)))
    for states in (("FAILED",), ("RUNNING", "LAUNCHED", "PENDING", "WAITING")):
        for item in by_index:
            if item.get("state") in states:
                return item
    return by_index[0] if by_index else None


def attempt_reason(item: dict[str, Any], attempt: int) -> str:
    for entry in item.get("attempts") or []:
        if isinstance(entry, dict) and int(entry.get("attempt", 0)) == attempt and entry.get("reason"):
            return str(entry["reason"])
    return str(item.get("reason", "")) if int(item.get("attempt", 0)) == attempt else ""


def local_candidates(item: dict[str, Any], attempt: int, job: str, state_dir: str) -> list[Path]:
    named = parse_failure(attempt_reason(item, attempt)).log
    candidates = [Path(named)] if named else []
    candidates.append(Path(state_dir).expanduser().resolve() / "jobs" / job / LOG_FILE)
    return list(dict.fromkeys(candidates))


def kube_commands(kind: str, namespace: str, sweep_id: str, index: int, attempt: int, job: str,
                  tail: int | None) -> dict[str, Any]:
    selector = f"{LABEL_SWEEP_ID}={sweep_id},{LABEL_TRIAL_INDEX}={index},{LABEL_ATTEMPT}={attempt}"
    logs = ["kubectl", "logs", "-n", namespace, "-l", selector, "--all-containers", "--prefix",
            f"--tail={tail if tail is not None else -1}", "--max-log-requests=32"]
    pods = ["kubectl", "get", "pods", "-n", namespace, "-l", selector, "-o", "wide"]
    events = ["kubectl", "describe", "pods", "-n", namespace, "-l", selector]
    return {"kind": kind, "job": job, "namespace": namespace, "selector": selector,
            "pods": POD_NAMES.get(kind, "{job}-…").format(job=job), "commands": [logs, pods, events]}


@app.command(short_help="Print a trial's log (local), or the kubectl commands that fetch it.")
def logs(
    sweep_id: Annotated[str, typer.Argument(metavar="SWEEP_ID", callback=sweep_id_arg, show_default=False, help="Sweep id.")],
    trial: Annotated[Optional[int], typer.Argument(
        metavar="TRIAL", min=0, show_default=False,
        help="Trial index [default: the first failed trial, else the first running one].")] = None,
    attempt: Annotated[Optional[int], typer.Option(min=1, show_default=False,
                                                   help="Attempt [default: the trial's latest].")] = None,
    tail: Annotated[Optional[int], typer.Option(min=1, metavar="N", show_default=False, help="Only the last N lines.")] = None,
    state_dir: Annotated[Optional[str], typer.Option(
        show_default=False, help="Local trials: the dispatcher's state directory [default: $SWEEPQ_STATE_DIR or .sweepq].")] = None,
    table: TableOpt = None,
    output: OutputOpt = Output.text,
    verbose: VerboseOpt = False,
) -> None:
    """Print the log of one trial attempt: the file itself for local trials; for Kubernetes jobs the
    kubectl commands that fetch every pod's log, list the pods and show why they failed."""
    setup_logging(verbose)
    with cli_errors(output):
        settings = Settings.load(table=table, state_dir=state_dir)
        reader = Reader(settings)
        meta = reader.store.get_sweep(sweep_id, consistent=False)
        if meta is None:
            queued = bool(reader.queued(sweep_id))
            raise NotFound(f"sweep {sweep_id} is still queued: no trial has run, so there is no log yet" if queued else
                           f"sweep {sweep_id} is not in table {settings.table} — check the id with `producer list`")
        items = reader.store.trials(sweep_id)
        item = pick_trial(items) if trial is None else next((i for i in items if int(i.get("index", -1)) == trial), None)
        if item is None:
            raise NotFound(f"sweep {sweep_id}: trial {trial} has not been launched ({len(items)} of "
                           f"{meta.get('total', '?')} trials launched so far)" if trial is not None
                           else f"sweep {sweep_id}: no trial has been launched yet, so there is no log")
        index, latest = int(item["index"]), int(item.get("attempt", 1))
        chosen = attempt or latest
        if chosen > latest:
            raise NotFound(f"sweep {sweep_id}: trial {index} has had {latest} attempt(s); --attempt {chosen} does not exist")
        job = job_name(sweep_id, index, chosen)
        kind = str(meta.get("kind") or "")
        what = {"sweep_id": sweep_id, "trial": index, "attempt": chosen, "state": item.get("state"), "job": job, "kind": kind}
        if kind == "local":
            _print_local(what, local_candidates(item, chosen, job, settings.state_dir), tail, output)
        else:
            scope = str(meta.get("scope") or "")
            namespace = scope.split("/")[-1] if "/" in scope else str(meta.get("namespace") or settings.namespace)
            _print_kube({**what, **kube_commands(kind, namespace, sweep_id, index, chosen, job, tail)}, output)


def _print_local(what: dict[str, Any], candidates: list[Path], tail: int | None, output: Output) -> None:
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise NotFound(f"the log of job {what['job']} is not on this machine (looked at "
                       f"{', '.join(str(p) for p in candidates)}): it is on the dispatcher's machine, in its "
                       f"SWEEPQ_STATE_DIR/jobs/{what['job']}/{LOG_FILE} — run this there, or pass --state-dir")
    lines = path.read_text(errors="replace").splitlines()
    if tail is not None:
        lines = lines[-tail:]
    if output is Output.json:
        emit_json({**what, "path": str(path), "lines": lines})
        return
    typer.echo(f"# trial {what['trial']}, attempt {what['attempt']} ({what['state']}): {path}", err=True)
    for line in lines:
        typer.echo(line)


def _print_kube(what: dict[str, Any], output: Output) -> None:
    if output is Output.json:
        emit_json(what)
        return
    text = out.console()
    text.print(f"trial {what['trial']}, attempt {what['attempt']} ({what['state']}) runs as {what['kind']} "
               f"{what['job']} in namespace {what['namespace']}; its pods are named {what['pods']}.")
    text.print("Its logs, its pods, and why they are pending or failed (needs access to the cluster):")
    for command in what["commands"]:
        text.print("  " + " ".join(command))
