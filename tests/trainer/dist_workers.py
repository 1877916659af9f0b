"""Worker functions for tests that run real gloo process groups with ``torch.multiprocessing.spawn``.

Each worker joins a process group over a loopback TCP store, does one thing, and writes what it
saw to ``<out>/rank<R>.json`` (spawn's children cannot return values).
"""

from __future__ import annotations

import json
import os
import signal
from datetime import timedelta
from pathlib import Path
from typing import Any


def _join(rank: int, world: int, port: int) -> Any:
    import torch.distributed as dist

    from trainer.distributed import DistInfo

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    return DistInfo(rank=rank, world_size=world, control_group=dist.new_group(backend="gloo"))


def _write(out: str, rank: int, payload: dict[str, Any]) -> None:
    Path(out, f"rank{rank}.json").write_text(json.dumps(payload))


def stop_agreement(rank: int, world: int, port: int, out: str, signal_rank: int, signal_after_poll: int) -> None:
    """Rank ``signal_rank`` sends itself SIGTERM after poll ``signal_after_poll``; every rank polls until stopped."""
    import torch.distributed as dist

    from trainer.stop import StopRequests

    info = _join(rank, world, port)
    stop = StopRequests(info).install()
    stopped_at = None
    for poll in range(1, 20):
        if stop.poll():
            stopped_at = poll
            break
        if rank == signal_rank and poll == signal_after_poll:
            os.kill(os.getpid(), signal.SIGTERM)
    stop.drain()
    stop.uninstall()
    decision = stop.decision
    _write(out, rank, {"stopped_at": stopped_at, "status": decision and decision.status,
                       "exit_code": decision and decision.exit_code})
    dist.destroy_process_group()


def resume_agreement(rank: int, world: int, port: int, out: str, run_dirs: list[str], trial_id: str) -> None:
    """Every rank loads from its own run directory (volumes not shared) and reports what it resumes from."""
    import torch.distributed as dist

    from trainer import checkpoint as ckpt
    from trainer.resume import load_agreed

    info = _join(rank, world, port)
    try:
        payload = load_agreed(ckpt.checkpoint_path(Path(run_dirs[rank])), trial_id=trial_id,
                              hyperparameters={"learning_rate": 0.1}, dist=info, enabled=True)
    except Exception as error:  # the test reads which error every rank raised
        _write(out, rank, {"error": f"{type(error).__name__}: {error}"})
    else:
        _write(out, rank, {"checkpoint_id": payload and payload["checkpoint_id"],
                           "global_step": payload and payload["progress"]["global_step"]})
    dist.destroy_process_group()


def run_spawned(worker: Any, world: int, tmp: Path, *args: Any) -> list[dict[str, Any]]:
    """Spawn ``world`` ranks of ``worker`` and return what each wrote."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp / "out"
    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(worker, args=(world, port, str(out), *args), nprocs=world, join=True)
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(world)]
