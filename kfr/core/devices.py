"""Devices, and which process of a distributed run this is.

A cell that trains on several devices runs as several processes (DDP ranks, or the tasks of one
SLURM job); global rank 0 saves, scores and logs, the others only train. The rules read the
environment the launchers set (torchrun / Lightning: RANK, LOCAL_RANK, NODE_RANK; SLURM:
SLURM_NTASKS, SLURM_PROCID), so every layer can ask without importing a trainer.
"""

from __future__ import annotations

import os

from kfr.core.errors import UserError


def resolve_device(spec: str, field: str = "model.device"):
    """``auto`` (cuda if available, else cpu) | ``cpu`` | ``cuda`` | ``cuda:N`` as a torch device;
    ``field`` names the config key in the error when the device cannot be used."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as err:
        raise UserError(f"unknown device '{spec}' ({err})", field=field) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device '{spec}' asked for but CUDA is not available", field=field)
    return device


def distributed_process() -> bool:
    """One of several processes (DDP ranks, tasks of one SLURM job) that run one cell together."""
    if any(os.environ.get(n) for n in ("RANK", "LOCAL_RANK", "NODE_RANK")):
        return True
    return int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1


def secondary_rank() -> int:
    """This process's rank when it is not global rank 0 of a distributed run, else 0."""
    for name in ("RANK", "NODE_RANK", "LOCAL_RANK"):
        if int(os.environ.get(name, "0") or 0) > 0:
            return int(os.environ[name])
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1:
        return int(os.environ.get("SLURM_PROCID", "0") or 0)
    return 0


def secondary_process() -> bool:
    """A rank > 0 of a distributed cell: it trains beside rank 0 but logs and scores nothing."""
    return distributed_process() and secondary_rank() > 0
