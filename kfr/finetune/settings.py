"""Fine-tuning settings checked before anything loads, and the batch geometry they imply.

Everything that can be checked without a model is checked in :func:`check_finetune_settings`,
so a combination that cannot work (QLoRA without bitsandbytes or under FSDP, fp16 training on
the CPU, a batch that devices cannot split) stops the cell before any data or weights are read.
What only one mode needs is checked by its strategy (:mod:`kfr.finetune.modes`).
"""

from __future__ import annotations

import os

import torch

from kfr.core.errors import UserError
from kfr.core.schema import KfrConfig, TrainerConfig

# Lightning's precision names (a typo would otherwise be Lightning's traceback at fit time).
PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-mixed", "16-true", "64-true")
_SHORT_PRECISIONS = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
GPU_ONLY_PRECISIONS = {"16-mixed", "16-true"}
_TRUE_DTYPES = {"bf16-true": torch.bfloat16, "16-true": torch.float16}
_MIXED_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def uses_gpu(accelerator: str) -> bool:
    if accelerator == "auto":
        return torch.cuda.is_available()
    return accelerator in {"gpu", "cuda"}


def world_size(trainer: TrainerConfig) -> int:
    """Processes that share the effective batch: devices per node x nodes."""
    devices = trainer.devices
    if isinstance(devices, list | tuple):
        count = len(devices)
    elif str(devices) in {"auto", "-1"}:
        count = max(1, torch.cuda.device_count()) if uses_gpu(trainer.accelerator) else 1
    else:
        try:
            count = int(devices)
        except ValueError:
            raise UserError(
                f"expected a count, a list of ids or 'auto', got {devices!r}",
                field="trainer.devices",
            ) from None
    return count * trainer.num_nodes


def micro_batch_and_accumulation(cfg: KfrConfig) -> tuple[int, int]:
    """Per-device micro-batch and accumulation steps that reach finetune.batch_size exactly."""
    batch, world = cfg.finetune.batch_size, world_size(cfg.trainer)
    if batch % world:
        raise UserError(
            f"{batch} blocks cannot be split evenly over {world} devices; use a multiple of "
            f"{world}",
            field="finetune.batch_size",
        )
    per_device = batch // world
    micro = min(cfg.trainer.micro_batch_size, per_device)
    if per_device % micro:
        raise UserError(
            f"finetune.batch_size={batch} over {world} device(s) is {per_device} blocks per "
            f"device, not a multiple of trainer.micro_batch_size={micro}; pick one that divides "
            "it",
            field="trainer.micro_batch_size",
        )
    return micro, per_device // micro


def check_positive(value: float, field: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        raise UserError(f"must be {'>= 0' if allow_zero else '> 0'}, got {value}", field=field)


def check_common_settings(cfg: KfrConfig) -> None:
    """What every mode needs: positive sizes and rates, a precision the device can train in, a
    batch the devices can split."""
    ft, trainer = cfg.finetune, cfg.trainer
    for name in ("epochs", "lr", "batch_size", "block_size"):
        check_positive(getattr(ft, name), f"finetune.{name}")
    check_positive(trainer.micro_batch_size, "trainer.micro_batch_size")
    check_positive(ft.weight_decay, "finetune.weight_decay", allow_zero=True)
    check_positive(trainer.checkpoint_every_min, "trainer.checkpoint_every_min", allow_zero=True)
    if not 0 <= ft.warmup_ratio < 1:
        raise UserError(f"must be in [0, 1), got {ft.warmup_ratio}", field="finetune.warmup_ratio")
    if trainer.accelerator in {"gpu", "cuda"} and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={trainer.accelerator} but CUDA is not available; use trainer=cpu",
            field="trainer.accelerator",
        )
    if str(trainer.strategy).lower() == "fsdp" and not uses_gpu(trainer.accelerator):
        # Lightning's FSDP runs on CUDA devices only; on CPUs, DDP over gloo trains the same.
        raise UserError(
            "FSDP needs GPUs (Lightning refuses it on the CPU); use trainer=ddp "
            "trainer.accelerator=cpu for data parallelism over CPU processes",
            field="trainer.strategy",
        )
    precision = _SHORT_PRECISIONS.get(str(trainer.precision), str(trainer.precision))
    if precision not in PRECISIONS:
        raise UserError(
            f"unknown precision {trainer.precision!r}; use one of {', '.join(PRECISIONS)}",
            field="trainer.precision",
        )
    if not uses_gpu(trainer.accelerator) and precision in GPU_ONLY_PRECISIONS:
        # bf16 (mixed or true) runs on the CPU too: Lightning autocasts there, and a GPU
        # profile (trainer=gpu|ddp with trainer.accelerator=cpu) then trains with the very
        # plugin, optimizer and clipping it uses on a GPU. fp16 has no CPU path in Lightning.
        raise UserError(
            f"{trainer.precision} training needs a GPU; on the CPU use 32-true or bf16-mixed",
            field="trainer.precision",
        )
    check_devices_exist(trainer)
    micro_batch_and_accumulation(cfg)


def _machine_devices(trainer: TrainerConfig) -> tuple[int, str]:
    """How many devices of the trainer's kind this machine has, and their name."""
    if uses_gpu(trainer.accelerator):
        return torch.cuda.device_count(), "GPUs"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores or 1, "CPU cores (one process each)"


def check_devices_exist(trainer: TrainerConfig) -> None:
    """Devices the machine (or the SLURM job) has: more processes than it holds would wait on
    GPUs that do not exist, or oversubscribe the CPU cores, and SLURM tasks must match ranks."""
    tasks = os.environ.get("SLURM_NTASKS")
    if tasks and os.environ.get("SLURM_JOB_NAME") not in {"bash", "interactive"}:
        # A SLURM job: its tasks are the ranks (Lightning's SLURM environment).
        if str(trainer.strategy).lower() in {"ddp", "fsdp"} and int(tasks) != world_size(trainer):
            raise UserError(
                f"the SLURM job has {tasks} tasks but trainer.devices x trainer.num_nodes = "
                f"{world_size(trainer)} ranks; set hydra.launcher.tasks_per_node x nodes to match",
                field="trainer.devices",
            )
        return
    if isinstance(trainer.devices, list | tuple) or str(trainer.devices) in {"auto", "-1"}:
        return
    have, what = _machine_devices(trainer)
    if int(trainer.devices) > have:
        raise UserError(
            f"{trainer.devices} devices asked for, but this machine has {have} {what}",
            field="trainer.devices",
        )


def training_device(trainer: TrainerConfig) -> torch.device:
    """Where this process trains: its own GPU under DDP (LOCAL_RANK), else the first/the CPU."""
    if not uses_gpu(trainer.accelerator):
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def training_dtype(precision: str, *, frozen_base: bool) -> torch.dtype:
    """dtype the weights are loaded in for training.

    Trained weights stay float32 under mixed precision (Lightning autocasts the matmuls); a
    frozen base (LoRA) can be kept in the 16-bit compute dtype, halving its memory.
    """
    if precision in _TRUE_DTYPES:
        return _TRUE_DTYPES[precision]
    if frozen_base and precision in _MIXED_DTYPES:
        return _MIXED_DTYPES[precision]
    return torch.float32
