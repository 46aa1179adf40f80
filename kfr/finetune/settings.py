"""Fine-tuning settings checked before anything loads, and the batch geometry they imply.

Everything that can be checked without a model is checked in :func:`check_finetune_settings`,
so a combination that cannot work (QLoRA without bitsandbytes or under FSDP, fp16 training on
the CPU, a batch that devices cannot split) stops the cell before any data or weights are read.
What only one mode needs is checked by its strategy (:mod:`kfr.finetune.modes`).
"""

from __future__ import annotations

import os
from typing import Any

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


AUTO = "auto"
# trainer.micro_batch_size=auto where no GPU memory can be read (the CPU): conf/trainer/cpu.yaml's.
AUTO_FALLBACK = 4
# Share of the free memory the activations may take: the allocator's fragmentation, the
# backward's temporaries and the estimate's error get the rest.
AUTO_MEMORY_SHARE = 0.7


def is_auto(micro_batch_size: Any) -> bool:
    return str(micro_batch_size).strip().lower() == AUTO


def check_micro_batch_size(value: Any) -> None:
    if is_auto(value):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"must be >= 1 or auto, got {value!r}", field="trainer.micro_batch_size")


def training_bytes_per_token(config: Any, *, checkpointing: bool = False) -> int:
    """Device memory one trained token holds from its forward to its backward, from the model's
    config: a Llama-style block under bf16 autocast with SDPA (no score matrix kept) saves the
    inputs of its 7 projections, q/k/v, the attention output, the MLP's 4 intermediate tensors
    (bf16) and its two norms' float32 inputs; the head keeps bf16 logits, their float32 upcast
    for the loss and its gradient. Gradient checkpointing keeps one float32 hidden state per
    layer plus one layer's full set. An estimate, for :func:`auto_micro_batch`."""
    config = getattr(config, "text_config", None) or config
    hidden, inter = config.hidden_size, config.intermediate_size
    heads = config.num_attention_heads
    kv = (getattr(config, "num_key_value_heads", None) or heads) * (
        getattr(config, "head_dim", None) or hidden // heads
    )
    layer = 2 * (8 * hidden + 2 * kv + 4 * inter) + 2 * 4 * hidden
    layers = config.num_hidden_layers
    blocks = layers * 4 * hidden + layer if checkpointing else layers * layer
    return blocks + config.vocab_size * (2 + 4 + 4)


def auto_micro_batch(
    per_device: int, *, free_bytes: int, fixed_bytes: int, sequence_bytes: int
) -> int:
    """The largest divisor of ``per_device`` whose activations (``sequence_bytes`` each) fit in
    :data:`AUTO_MEMORY_SHARE` of ``free_bytes`` after ``fixed_bytes`` (optimizer state,
    gradients, weights not yet on the device); at least 1."""
    fits = int((free_bytes * AUTO_MEMORY_SHARE - fixed_bytes) // max(1, sequence_bytes))
    return divisor_at_most(per_device, fits)


def divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of ``n`` not above ``cap`` (1 at least)."""
    return max(d for d in range(1, n + 1) if n % d == 0 and d <= max(1, cap))


def _device_memory_plan(cfg: KfrConfig, model: Any, sequence_tokens: int) -> dict[str, int]:
    """free / fixed / per-sequence bytes of ``model`` training on this process's GPU."""
    device = training_device(cfg.trainer)
    if world_size(cfg.trainer) > 1:
        # Every rank must pick the same micro-batch (the same number of backward passes per
        # step): the device's total memory less what this process holds, the same on every rank
        # of identical GPUs, not the free memory, which other processes change.
        free = torch.cuda.get_device_properties(device).total_memory
        free -= torch.cuda.memory_allocated(device)
    else:
        free = torch.cuda.mem_get_info(device)[0]
    params = list(model.parameters())
    trained = sum(p.numel() for p in params if p.requires_grad)
    off_device = sum(p.numel() * p.element_size() for p in params if p.device.type != "cuda")
    return {
        "free_bytes": free,
        # float32 gradient and AdamW's two moments per trained weight; weights still on the CPU
        # (FSDP shards them later: counted whole, which errs on the safe side)
        "fixed_bytes": trained * 12 + off_device,
        "sequence_bytes": sequence_tokens
        * training_bytes_per_token(model.config, checkpointing=cfg.finetune.gradient_checkpointing),
    }


def micro_batch_and_accumulation(
    cfg: KfrConfig,
    *,
    model: Any = None,
    sequence_tokens: int | None = None,
    memory: dict[str, int] | None = None,
) -> tuple[int, int]:
    """Per-device micro-batch and accumulation steps that reach finetune.batch_size exactly.

    ``trainer.micro_batch_size=auto``: with the loaded ``model`` on a GPU, from its free memory
    (``memory``: the :func:`auto_micro_batch` figures, given by tests instead of the device's)
    for sequences of ``sequence_tokens`` (default: the block size); otherwise
    :data:`AUTO_FALLBACK`. Either way a divisor of the per-device batch, which stays as set.
    """
    batch, world = cfg.finetune.batch_size, world_size(cfg.trainer)
    if batch % world:
        raise UserError(
            f"{batch} blocks cannot be split evenly over {world} devices; use a multiple of "
            f"{world}",
            field="finetune.batch_size",
        )
    per_device = batch // world
    setting = cfg.trainer.micro_batch_size
    check_micro_batch_size(setting)
    if is_auto(setting):
        tokens = sequence_tokens or cfg.finetune.block_size
        if memory is None and model is not None and uses_gpu(cfg.trainer.accelerator):
            memory = _device_memory_plan(cfg, model, tokens)
        if memory is None:
            micro = divisor_at_most(per_device, AUTO_FALLBACK)
        else:
            micro = auto_micro_batch(per_device, **memory)
        return micro, per_device // micro
    micro = min(int(setting), per_device)
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
    check_micro_batch_size(trainer.micro_batch_size)
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
