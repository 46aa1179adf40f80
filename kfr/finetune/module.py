"""The Lightning module that trains a transformers causal LM on packed knowledge-base blocks.

Packed document blocks (a tensor batch): plain next-token loss on every position (blocks hold no
padding, so every micro-batch mean weighs tokens alike). Supervised examples (a dict batch from
:mod:`kfr.finetune.examples`): the loss on the answer tokens only, or with the teacher's targets in
the batch (distill) KL(teacher || student) on those tokens, the teacher's top-k probabilities plus
one remainder bucket; both are summed over the micro-batch's tokens and divided by the tokens of
the whole optimizer step (``step_targets``, all ranks and accumulated micro-batches), scaled so
that Lightning's division by the accumulation and DDP's gradient average leave the step's
per-token mean: the same gradient for any split into micro-batches and processes.

AdamW with decoupled weight decay on matrices only, linear warmup then cosine / linear decay or
a constant rate, stepped per optimizer step; torch's fused kernel wherever no gradient scaler is
in play (32-bit and bf16; fp16's scaler needs the gradients unscaled before clipping, which a
fused step does only inside itself). Gradient accumulation is the Trainer's
(``accumulate_grad_batches``); the clipping norm is the Trainer's ``gradient_clip_val``, applied
by :meth:`CausalLMModule.configure_gradient_clipping` (why: its docstring). The loss logged is
the step's loss (the mean over its micro-batches, or its per-token mean for examples), so a log
row is one optimizer step whatever the accumulation; under data parallelism it is reduced over
the ranks, so it is the loss of the whole step.

Resumable checkpoints (kfr.finetune.train) hold only the parameters being trained: a LoRA
checkpoint is the adapter plus optimizer state, not a copy of the frozen (or 4-bit) base model.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from kfr.core.schema import LrSchedule
from kfr.finetune.examples import IGNORE, target_positions

_SCHEDULER_NAMES = {
    LrSchedule.cosine: "cosine",
    LrSchedule.linear: "linear",
    LrSchedule.constant: "constant_with_warmup",
}


def _fusable(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW kernel takes these parameters (one device type, floats)."""
    devices = {p.device.type for p in params}
    return (
        len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(p.is_floating_point() for p in params)
    )


def _scales_gradients(trainer) -> bool:
    """Whether the precision plugin multiplies the loss by a gradient scaler (fp16 mixed)."""
    return getattr(trainer.precision_plugin, "scaler", None) is not None


class CausalLMModule(pl.LightningModule):
    def __init__(
        self,
        model,
        *,
        lr: float,
        weight_decay: float = 0.0,
        schedule: LrSchedule = LrSchedule.cosine,
        warmup_ratio: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.lr = lr
        self.weight_decay = weight_decay
        self.schedule = LrSchedule(schedule)
        self.warmup_ratio = warmup_ratio
        self._step_losses: list[torch.Tensor] = []  # mean training loss of every optimizer step
        self._pending: list[torch.Tensor] = []
        self._pending_is_share = False  # pending holds shares of the step mean, not means
        self.resumed_from_step: int | None = None  # global step of the checkpoint resumed from
        self.resumed_from_epoch = 0  # and its epoch
        self.resume_skip_pending = False  # the data still has to skip the batches trained
        self._restored_rng: dict | None = None
        # Every name of every trained tensor (tied weights, e.g. lm_head = embeddings, too).
        named = list(model.named_parameters(remove_duplicate=False))
        self._trained = {f"model.{n}" for n, p in named if p.requires_grad}
        if len(self._trained) < len(named):
            self.strict_loading = False  # the frozen weights are not in the checkpoint

    @property
    def step_losses(self) -> list[float]:
        """The mean training loss of every optimizer step so far (one device-to-host copy)."""
        if not self._step_losses:
            return []
        return torch.stack(self._step_losses).float().cpu().tolist()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        checkpoint["state_dict"] = {k: v for k, v in state.items() if k in self._trained}
        # Random state too (LoRA dropout): a resumed run then draws what the uninterrupted
        # one would have.
        checkpoint["kfr_rng"] = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available():
            checkpoint["kfr_rng"]["cuda"] = torch.cuda.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.resumed_from_step = int(checkpoint.get("global_step", 0))
        self.resumed_from_epoch = int(checkpoint.get("epoch", 0))
        self.resume_skip_pending = True  # kfr.finetune.data.batches_done_before_restart
        missing = self._trained - set(checkpoint["state_dict"])
        if missing:  # a checkpoint of other settings: never resume half the weights
            raise RuntimeError(f"resume checkpoint lacks trained weights, e.g. {min(missing)}")
        # Set at the first batch, after Lightning has made the data iterator (which draws a
        # seed): then the first step draws what it drew in the uninterrupted run.
        self._restored_rng = checkpoint.get("kfr_rng")

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        rng, self._restored_rng = self._restored_rng, None
        if rng is None:
            return
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])

    def forward(self, input_ids: torch.Tensor):
        return self.model(input_ids=input_ids, labels=input_ids, use_cache=False)

    def training_step(self, batch: torch.Tensor | dict, batch_idx: int) -> torch.Tensor:
        if not isinstance(batch, dict):
            loss = self(batch).loss
            self._pending.append(loss.detach())
            return loss
        # Lightning divides by the accumulation, DDP averages over the ranks: undo both so the
        # gradient is the step's per-token mean (the module docstring).
        splits = self.trainer.accumulate_grad_batches * self.trainer.world_size
        per_token = batch["step_targets"].to(torch.float32) / splits
        if "teacher_ids" in batch:
            loss = self._distillation_loss(batch) / per_token
        else:
            loss = self._answer_loss(batch) / per_token
        self._pending.append(loss.detach() / splits)  # this micro-batch's share of the step mean
        self._pending_is_share = True
        return loss

    def _logits_kept(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits only at the positions some row of the batch predicts a target from
        (``keep``, made with the batch on the CPU: no host sync here), and those positions: the
        output head skips the prompts and padding, which for RAFT's passage-long prompts are
        most of the head's work and of the float32 logits."""
        keep = batch["keep"] if "keep" in batch else target_positions(batch["labels"])
        logits = self.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            use_cache=False,
            logits_to_keep=keep,
        ).logits  # [batch, kept, vocab]
        return logits, keep

    def _answer_loss(self, batch: dict) -> torch.Tensor:
        """Summed cross-entropy of the answer tokens (position p predicts token p + 1), as
        transformers' causal-LM loss sums it."""
        logits, keep = self._logits_kept(batch)
        targets = batch["labels"][:, keep + 1]  # IGNORE where this row has none
        return torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), ignore_index=IGNORE, reduction="sum"
        )

    def _distillation_loss(self, batch: dict) -> torch.Tensor:
        logits, keep = self._logits_kept(batch)
        teacher_lp_all = batch["teacher_logprobs"][:, keep]
        where = torch.isfinite(teacher_lp_all[..., 0])  # positions with a target
        student = logits[where].float().log_softmax(-1)  # [n, vocab]
        teacher_lp = teacher_lp_all[where]  # [n, k]
        student_top = student.gather(-1, batch["teacher_ids"][:, keep][where])  # [n, k]
        teacher_p = teacher_lp.exp()
        # The probability mass outside the teacher's top k, for both: one more bucket.
        teacher_rest = (1 - teacher_p.sum(-1)).clamp_min(1e-8)
        student_rest = (1 - student_top.exp().sum(-1)).clamp_min(1e-8)
        # 0 * log 0 = 0: a teacher probability of 0 contributes nothing (never NaN).
        terms = torch.where(teacher_p > 0, teacher_p * (teacher_lp - student_top), 0.0)
        kl = terms.sum(-1)
        kl = kl + teacher_rest * (teacher_rest.log() - student_rest.log())
        return kl.sum()

    def on_before_optimizer_step(self, optimizer) -> None:
        pending = torch.stack(self._pending)
        loss = pending.sum() if self._pending_is_share else pending.mean()
        self._pending.clear()
        if self.trainer.world_size > 1:  # every rank reaches this hook: the collective is safe
            loss = self.trainer.strategy.reduce(
                loss, reduce_op="sum" if self._pending_is_share else "mean"
            )
        self._step_losses.append(loss.detach())  # read once, after training: no sync per step
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True)
        self.log("train/lr", optimizer.param_groups[0]["lr"], on_step=True, on_epoch=False)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clip the step's gradients to ``gradient_clip_val`` (global L2 norm).

        Lightning's own clipping refuses two of kfr's GPU profiles: its mixed-precision plugin
        raises for any optimizer that unscales in its step (the fused AdamW), even under
        bf16-mixed, where no scaler exists and the gradients are the true ones (Lightning issue
        #21435, in every release up to 2.6.6 at least); its FSDP plugin refuses norm clipping
        outright, since only the sharded root module can compute the global norm. So: FSDP
        clips through that root; without a scaler, the gradients are clipped here directly;
        with fp16's scaler (a non-fused optimizer, unscaled by Lightning before this hook),
        Lightning's own path.
        """
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm not in (None, "norm"):
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        from torch.distributed.fsdp import FullyShardedDataParallel

        root = self.trainer.strategy.model
        if isinstance(root, FullyShardedDataParallel):  # the norm over every rank's shards
            root.clip_grad_norm_(gradient_clip_val)
        elif not _scales_gradients(self.trainer):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, "norm")

    def configure_optimizers(self):
        from transformers import get_scheduler

        params = [p for p in self.model.parameters() if p.requires_grad]
        # Decay matrices only: decaying norms and biases towards zero is harmful, as in GPT-2/3.
        groups = [
            {"params": [p for p in params if p.ndim >= 2], "weight_decay": self.weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
        groups = [g for g in groups if g["params"]]
        fused = _fusable(params) and not _scales_gradients(self.trainer)
        optimizer = torch.optim.AdamW(groups, lr=self.lr, fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_scheduler(
            _SCHEDULER_NAMES[self.schedule],
            optimizer,
            num_warmup_steps=round(self.warmup_ratio * total),
            num_training_steps=total,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
