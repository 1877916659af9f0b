"""An AWS endpoint on loopback (moto's server) for local runs: the embedded default.

``dispatcher local-stack`` keeps one running for development in several terminals::

    dispatcher local-stack --port 5000          # terminal 1: prints the exports for the others
    dispatcher bootstrap && producer submit examples/sweep.yaml && producer status   # terminal 2
    SWEEPQ_MAX_RUNNING=2 dispatcher run --interval 5             # terminal 3
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import Any

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "sweepq-local",
    "AWS_SECRET_ACCESS_KEY": "sweepq-local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(port: int = 0) -> tuple[Any, str]:
    """Start moto's server on 127.0.0.1 in a thread; returns (server, endpoint URL)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per AWS call otherwise
    port = port or free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return server, f"http://127.0.0.1:{port}"


def local_env(endpoint: str) -> dict[str, str]:
    """The environment that points boto3 (and every child process) at the local endpoint."""
    return {"AWS_ENDPOINT_URL": endpoint, **FAKE_CREDENTIALS}


def development_env(endpoint: str) -> dict[str, str]:
    """What every terminal of local development exports: the endpoint, and the ``local`` kind, so
    ``producer submit --dry-run`` previews the job the local dispatcher will really run."""
    return {**local_env(endpoint), "SWEEPQ_BACKEND": "local"}


def use_endpoint(endpoint: str) -> None:
    """Point this process (and the trials it starts) at ``endpoint`` with throwaway credentials."""
    os.environ.update(local_env(endpoint))
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)


def serve_forever(port: int, *, as_json: bool = False) -> None:
    """Serve until Ctrl-C. First print the environment for the other terminals: ``export`` lines
    (text) or one JSON object ``{"endpoint", "env"}``."""
    server, endpoint = start_moto(port)
    env = development_env(endpoint)
    if as_json:
        print(json.dumps({"endpoint": endpoint, "env": env}), flush=True)
    else:
        print("# sweepq local stack: an AWS endpoint (moto) on loopback. In other terminals run:")
        for key, value in env.items():
            print(f"export {key}={value}")
        print("# (SWEEPQ_BACKEND=local: trials run on this machine; unset it to use the cluster of $KUBECONFIG)")
        print("# then: dispatcher bootstrap; producer submit examples/sweep.yaml; producer status;")
        print("#       SWEEPQ_MAX_RUNNING=2 dispatcher run --interval 5")
        print("# Ctrl-C stops it (its state is in memory).", flush=True)
    stop = threading.Event()
    try:
        stop.wait()
    except KeyboardInterrupt:
        if not as_json:
            print("# local stack stopped", flush=True)
    finally:
        server.stop()
