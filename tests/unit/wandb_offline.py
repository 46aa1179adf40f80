"""Read what an offline W&B run wrote: its ``run-<id>.wandb`` file, record by record.

wandb 0.19+ keeps an offline run's config, group, tags and summary only in that file (no
files/config.yaml or wandb-summary.json until `wandb sync`). The file is a LevelDB-style log
(7-byte file header, 32 KiB blocks, records of checksum/length/type + payload) of protobuf
``Record`` messages, which wandb's own ``wandb_internal_pb2`` parses.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32768
_HEADER = 7  # ":W&B" + magic (2 bytes) + version (1 byte); each record header is also 7 bytes
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _records(data: bytes) -> list[bytes]:
    assert data[:4] == b":W&B", "not a .wandb file"
    out, pending, pos = [], b"", _HEADER
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # block trailer padding
            pos += left
            continue
        _checksum, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if kind == 0 and length == 0:
            pos += left
            continue
        payload = data[pos + _HEADER : pos + _HEADER + length]
        pos += _HEADER + length
        if kind == _FULL:
            out.append(payload)
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            out.append(pending + payload)
    return out


def _apply(target: dict[str, Any], item: Any) -> None:
    keys = list(item.nested_key) or [item.key]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    node[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    name: str = ""
    group: str = ""
    job_type: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    exit_code: int | None = None


def read_offline_run(run_dir: str | Path) -> OfflineRun:
    """``run_dir``: an ``offline-run-<time>-<id>`` folder."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = Path(run_dir).glob("run-*.wandb")
    run = OfflineRun()
    for payload in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.name, run.group, run.job_type = r.display_name, r.run_group, r.job_type
            run.project, run.tags = r.project, list(r.tags)
            for item in r.config.update:
                _apply(run.config, item)
        elif kind == "config":
            for item in record.config.update:
                _apply(run.config, item)
        elif kind == "summary":
            for item in record.summary.update:
                _apply(run.summary, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _apply(row, item)
            run.history.append(row)
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def read_finished_run(run_dir: str | Path, timeout: float = 60.0) -> OfflineRun:
    """:func:`read_offline_run` once the run's exit record is on disk: wandb's service process
    may still be writing the file for a moment after ``finish()`` returns (seen under load)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        run = read_offline_run(run_dir)
        if run.exit_code is not None or time.monotonic() > deadline:
            return run
        time.sleep(0.5)
