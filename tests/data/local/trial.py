"""A stand-in trial for the local backend's tests: stdlib only, starts in milliseconds.

Every process (each torchrun worker too) writes ``<record>/<role>-<pid>.json`` holding its pid,
parent pid, argv and environment, then sleeps ``--sleep`` seconds and exits with ``--exit``
(a negative value kills itself with that signal). Unknown arguments (the hyperparameters) are
accepted and recorded verbatim.

    --daemon       also start a grandchild in a session of its own (as torchrun does with its
                   workers) that sleeps and records itself with role "daemon"; waits for its record
    --ignore-term  ignore SIGTERM, so only SIGKILL ends this process
    --on-term N    on SIGTERM print "got SIGTERM: checkpoint saved" and exit N (a graceful trainer)
    --say LINE     print LINE (to stderr) just before exiting; repeatable
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def record(directory: Path, role: str) -> None:
    data = {"role": role, "pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "env": dict(os.environ)}
    tmp = directory / f".{role}-{os.getpid()}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, directory / f"{role}-{os.getpid()}.json")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path, required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--role", default="trial")
    parser.add_argument("--daemon", action="store_true")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--on-term", type=int, default=None)
    parser.add_argument("--say", action="append", default=[])
    args, _hyperparameters = parser.parse_known_args()
    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.on_term is not None:
        def graceful(_signum: int, _frame: object) -> None:
            print("got SIGTERM: checkpoint saved", flush=True)
            sys.exit(args.on_term)

        signal.signal(signal.SIGTERM, graceful)
    if args.daemon:
        daemon = [sys.executable, __file__, "--record", str(args.record), "--sleep", "60", "--role", "daemon"]
        subprocess.Popen(daemon, start_new_session=True)
        deadline = time.monotonic() + 20
        while not list(args.record.glob("daemon-*.json")) and time.monotonic() < deadline:
            time.sleep(0.02)  # so that the daemon exists for sure before this trial goes on
    print(f"trial {args.role} pid {os.getpid()} rank {os.environ.get('RANK', '-')} argv {sys.argv[1:]}", flush=True)
    record(args.record, args.role)
    time.sleep(args.sleep)
    for line in args.say:
        print(line, file=sys.stderr, flush=True)
    if args.exit < 0:
        os.kill(os.getpid(), -args.exit)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
