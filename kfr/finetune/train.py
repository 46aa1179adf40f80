"""One fine-tuning run: the model for cfg.finetune.mode, packed blocks, a Lightning Trainer.

Writes into ``out_dir`` the adapter (``adapter/``) or the full model (``model/``) and the
training log (``logs/metrics.csv``: loss and learning rate per optimizer step); returns the
numbers results report. ``loggers`` adds Lightning loggers (W&B, ...) beside the CSV one and
``callbacks`` Lightning callbacks (benchmarks time steps with one).

Requeued jobs: with ``resume_dir``, a Lightning checkpoint (``last.ckpt``: the weights being
trained, optimizer, scheduler and loop state) is written there every
``trainer.checkpoint_every_min`` minutes, atomically; a later call with the same ``resume_dir``
continues from it, mid-epoch included (the packed data skips the blocks already seen), so a
preempted SLURM job loses at most that many minutes of training.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from kfr.core import faults
from kfr.core.schema import KfrConfig
from kfr.core.storage import atomic_write
from kfr.finetune.data import PackedKnowledgeData
from kfr.finetune.distributed import CellDDPStrategy, launched_ranks
from kfr.finetune.examples import ExampleData, TrainingExample
from kfr.finetune.modes import strategy
from kfr.finetune.module import CausalLMModule
from kfr.finetune.settings import is_auto, micro_batch_and_accumulation, world_size

log = logging.getLogger(__name__)

LOG_DIR = "logs"
METRICS_FILE = "metrics.csv"
RESUME_FILE = "last.ckpt"  # ModelCheckpoint's name for its save_last checkpoint


class _AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written as every kfr file is (kfr.core.storage.atomic_write): a job killed while
    saving leaves the previous checkpoint whole, never a truncated one."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        # torch.save straight into the temporary sibling (Lightning's own save would buffer the
        # whole checkpoint and write it a second time), through a Python file, so that a full
        # disk's OSError is what torch's RuntimeError hides: raised again with the checkpoint's
        # path, kfr.core.storage.storage_error makes it one line naming the folder.
        def write(tmp: Path) -> None:
            try:
                with tmp.open("wb") as f:
                    torch.save(checkpoint, f)
            except RuntimeError as err:
                if isinstance(err.__context__, OSError):
                    os_err = err.__context__
                    raise OSError(os_err.errno, os_err.strerror, str(path)) from err
                raise

        atomic_write(path, write)
        faults.point("train.checkpoint")


class _StepCheckpoint(ModelCheckpoint):
    """Saves only right after an optimizer step: mid-accumulation, the gradients gathered so far
    are not in a checkpoint, so resuming from there would take a step on part of a batch."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        faults.point("train.batch")
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0 or (
            batch_idx + 1 == trainer.num_training_batches
        )
        if stepped:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def _resume_callbacks(
    cfg: KfrConfig, resume_dir: Path | None
) -> tuple[list[Callback], Path | None]:
    """The periodic checkpoint callback (if any) and the checkpoint to resume from (if any)."""
    minutes = float(cfg.trainer.checkpoint_every_min)
    if resume_dir is None or minutes <= 0:
        return [], None
    saver = _StepCheckpoint(
        dirpath=resume_dir,
        save_top_k=0,  # no "best" checkpoints: only last.ckpt, overwritten
        save_last=True,
        train_time_interval=timedelta(minutes=minutes),
    )
    last = resume_dir / RESUME_FILE
    return [saver], last if last.is_file() else None


def _strategy(cfg: KfrConfig, model) -> Any:
    """The strategy name; for DDP one whose own ranks run only this cell
    (:mod:`kfr.finetune.distributed`); for FSDP one that shards per decoder layer.

    Plain ``strategy="fsdp"`` wraps the whole model as one unit, so every rank gathers all the
    weights at once; wrapping each decoder layer (the classes transformers lists as
    ``_no_split_modules``) keeps one layer gathered at a time.
    """
    name = str(cfg.trainer.strategy)
    if name.lower() == "ddp":
        return CellDDPStrategy()
    if name.lower() != "fsdp" or model is None:
        return name
    from lightning.pytorch.strategies import FSDPStrategy

    layer_names = set(getattr(model, "_no_split_modules", None) or ())
    layers = {type(m) for m in model.modules() if type(m).__name__ in layer_names}
    return FSDPStrategy(
        auto_wrap_policy=layers or None,
        state_dict_type="full",  # rank 0 saves whole tensors, as for every other strategy
    )


def build_trainer(
    cfg: KfrConfig,
    out_dir: Path,
    *,
    accumulate: int,
    model: Any = None,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
) -> pl.Trainer:
    trainer, ft = cfg.trainer, cfg.finetune
    saves = any(isinstance(c, ModelCheckpoint) for c in callbacks)
    return pl.Trainer(
        accelerator=trainer.accelerator,
        devices=trainer.devices,
        strategy=_strategy(cfg, model),
        num_nodes=trainer.num_nodes,
        precision=trainer.precision,
        max_epochs=ft.epochs,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=ft.max_grad_norm,
        gradient_clip_algorithm="norm",
        logger=[CSVLogger(out_dir, name=LOG_DIR, version=""), *loggers],
        callbacks=list(callbacks),
        log_every_n_steps=trainer.log_every_n_steps,
        enable_progress_bar=trainer.progress_bar,
        # kfr saves the result itself (adapter or HF model). Lightning checkpoints, which hold
        # the optimizer state too, are written only for resuming (the caller's ModelCheckpoint).
        enable_checkpointing=saves,
        plugins=[_AtomicCheckpointIO()] if saves else None,
        enable_model_summary=False,
        # A new packing order every epoch (PackedKnowledgeData.train_dataloader).
        reload_dataloaders_every_n_epochs=1,
        # PackedKnowledgeData gives each rank its share itself: Lightning's DistributedSampler
        # would rebuild the loader and lose the batches it skips when resuming mid-epoch.
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        default_root_dir=out_dir,
    )


def _max_length(model) -> int:
    """Longest supervised example: the model's own context (prompts are short; RAFT's hold
    retriever.k chunks)."""
    config = getattr(model.config, "text_config", None) or model.config
    return int(getattr(config, "max_position_embeddings", 2048) or 2048)


def _count_parameters(model) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def train(
    cfg: KfrConfig,
    texts: Sequence[str],
    cache_dir: str | Path,
    out_dir: Path,
    *,
    loggers: Sequence[Logger] = (),
    callbacks: Sequence[Callback] = (),
    resume_dir: Path | None = None,
    examples: Sequence[TrainingExample] | None = None,
    extras: Sequence[dict] | None = None,
) -> dict[str, Any]:
    """Fine-tune on ``texts`` (packed blocks) or, when given, on supervised ``examples`` (with
    per-example ``extras``: the teacher's targets for distillation); save into ``out_dir``
    (global rank 0) and return the summary.

    ``resume_dir``: where periodic resumable checkpoints go, and where an earlier, interrupted
    call with the same settings left its last one (training continues from it).
    """
    ft = cfg.finetune
    way = strategy(ft.mode)
    mode = way.mode
    micro, accumulate = micro_batch_and_accumulation(cfg)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model, tokenizer = way.trainable_model(cfg, cache_dir)
    data: PackedKnowledgeData | ExampleData
    if examples is not None:
        data = ExampleData(examples, seed=cfg.seed)
        data.extras = list(extras) if extras is not None else None
        data.connect(tokenizer, micro, _max_length(model))
    else:
        data = PackedKnowledgeData(texts, seed=cfg.seed)
        data.connect(tokenizer, micro, ft.block_size)
    data.setup()
    if is_auto(cfg.trainer.micro_batch_size):  # from the memory the loaded model leaves free
        longest = ft.block_size
        if isinstance(data, ExampleData):
            longest = max(len(item["input_ids"]) for item in data.items or [{"input_ids": [0]}])
        micro, accumulate = micro_batch_and_accumulation(cfg, model=model, sequence_tokens=longest)
        data.batch_size = micro
    module = CausalLMModule(
        model,
        lr=ft.lr * ft.lr_scale,
        weight_decay=ft.weight_decay,
        schedule=ft.schedule,
        warmup_ratio=ft.warmup_ratio,
    )
    resume_callbacks, resume_from = _resume_callbacks(cfg, resume_dir)
    trainer = build_trainer(
        cfg,
        out_dir,
        accumulate=accumulate,
        model=model,
        loggers=loggers,
        callbacks=[*callbacks, *resume_callbacks],
    )
    trainable, total = _count_parameters(model)
    units = (
        f"{len(examples)} examples, {data.n_tokens} tokens ({data.n_target_tokens} trained on)"
        if isinstance(data, ExampleData)
        else f"{len(texts)} texts, {data.n_tokens} tokens -> {data.n_blocks} blocks of "
        f"{ft.block_size}"
    )
    log.info(
        "Fine-tuning (%s): %s per epoch, %d epochs, batch %d = %d x %d accumulation x %d "
        "devices, %d of %d parameters trained",
        mode.value, units, ft.epochs, ft.batch_size, micro, accumulate,
        world_size(cfg.trainer), trainable, total,
    )  # fmt: skip
    if resume_from is not None:
        log.info("Resuming the interrupted fine-tuning from %s", resume_from)
    started = time.perf_counter()
    with launched_ranks(), warnings.catch_warnings():
        # One process feeds pre-packed tensors: worker processes would only add start-up time.
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        # PackedKnowledgeData skips the blocks seen before the checkpoint (see its docstring).
        warnings.filterwarnings("ignore", ".*dataloader is not resumable.*")
        trainer.fit(module, datamodule=data, ckpt_path=resume_from)
        wall = time.perf_counter() - started
        # FSDP holds shards: gather the full weights (every rank takes part) before rank 0 saves.
        state_dict = None
        if "fsdp" in str(cfg.trainer.strategy).lower():
            gathered = trainer.strategy.lightning_module_state_dict()
            state_dict = {k.removeprefix("model."): v for k, v in gathered.items()}
        if trainer.is_global_zero:
            way.save(module.model, tokenizer, out_dir, state_dict=state_dict)
    if isinstance(data, ExampleData):
        tokens = data.n_tokens * ft.epochs
        shape = {"examples": len(examples or ()), "target_tokens_per_epoch": data.n_target_tokens}
    else:
        tokens = data.n_blocks * ft.block_size * ft.epochs
        shape = {
            "texts": len(texts),
            "blocks_per_epoch": data.n_blocks,
            "block_size": ft.block_size,
        }
    losses = module.step_losses
    return {
        "mode": mode.value,
        "epochs": ft.epochs,
        "steps": trainer.global_step,
        **shape,
        "batch_size": ft.batch_size,
        "micro_batch_size": micro,
        "accumulate": accumulate,
        "devices": trainer.world_size,
        "precision": str(cfg.trainer.precision),
        "lr": ft.lr * ft.lr_scale,
        "tokens": tokens,
        "tokens_per_s": round(tokens / max(wall, 1e-9), 1),
        "wall_s": round(wall, 2),
        "train_loss_first": round(losses[0], 4) if losses else None,
        "train_loss_last": round(losses[-1], 4) if losses else None,
        "resumed_from_step": module.resumed_from_step,
        "trainable_parameters": trainable,
        "parameters": total,
        "log": f"{LOG_DIR}/{METRICS_FILE}",
    }
