"""Helpers shared by the trainer tests: the C1 metrics table, W&B offline run files."""

from __future__ import annotations

import dataclasses
import struct
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def torchrun_command(config: Any, *, nproc: int = 2, max_restarts: int = 0,
                     rendezvous: tuple[str, ...] = ("--standalone",)) -> list[str]:
    """``torchrun --standalone --nproc-per-node=N -m trainer --key=value ...`` as the dispatcher runs it."""
    args = [f"--{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
            if getattr(config, f.name) != f.default]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}", "--monitor-interval=0.1", "-m", "trainer", *args]


def create_metrics_table(client: Any, name: str) -> None:
    """The metrics table of CONTRACTS C1: key ``pod``; GSI ``by_job`` (``job``, ``pod``), projection ALL."""
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pod", "AttributeType": "S"},
                              {"AttributeName": "job", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pod", "KeyType": "HASH"}],
        GlobalSecondaryIndexes=[{"IndexName": "by_job", "Projection": {"ProjectionType": "ALL"},
                                 "KeySchema": [{"AttributeName": "job", "KeyType": "HASH"},
                                               {"AttributeName": "pod", "KeyType": "RANGE"}]}])


def plain_item(client: Any, table: str, pod: str) -> dict[str, Any] | None:
    """The metrics item of ``pod`` as Python values (Decimal numbers), or None."""
    from boto3.dynamodb.types import TypeDeserializer

    raw = client.get_item(TableName=table, Key={"pod": {"S": pod}}, ConsistentRead=True).get("Item")
    if raw is None:
        return None
    deserializer = TypeDeserializer()
    return {key: deserializer.deserialize(value) for key, value in raw.items()}


# W&B's offline run file (``run-<id>.wandb``) is a LevelDB-style log of ``wandb_internal.Record``
# protobufs: a 7-byte header (":W&B", magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each
# with a 7-byte header (CRC32C, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4).
_BLOCK = 32 * 1024
_HEADER = 7


def wandb_records(path: Path) -> list[Any]:
    """Every record of an offline run file, parsed with wandb's own protobuf classes."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"{path} is not a W&B run file"
    records, pending, offset = [], b"", _HEADER
    while offset + _HEADER <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < _HEADER:  # block trailer: padding
            offset += room
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + _HEADER])
        chunk = data[offset + _HEADER:offset + _HEADER + length]
        offset += _HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def wandb_run_end(run_dir: Path) -> dict[str, Any]:
    """How the offline W&B run(s) under ``run_dir`` ended: exit codes, preempting, tags, sweepq/status."""
    files = sorted(run_dir.rglob("run-*.wandb"))
    assert files, f"no offline W&B run under {run_dir}"
    ends = []
    for path in files:
        end: dict[str, Any] = {"file": path, "exit_codes": [], "preempting": False, "tags": set(), "summary": {}}
        for record in wandb_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "exit":
                end["exit_codes"].append(record.exit.exit_code)
            elif kind == "preempting":
                end["preempting"] = True
            elif kind == "run":
                end["tags"].update(record.run.tags)
            elif kind == "summary":
                end["summary"].update({item.key: item.value_json for item in record.summary.update})
        ends.append(end)
    return {"runs": ends, "last": ends[-1]}
