"""Every trainer profile's own Lightning objects, run on the CPU.

``trainer=gpu`` and ``trainer=ddp`` are what GPU users run, and CI has no GPU: each profile fits
here with one setting changed, ``trainer.accelerator=cpu``, so the fit uses the profile's own
precision plugin (bf16-mixed autocasts on the CPU too), optimizer construction (the fused AdamW),
gradient clipping and strategy class (kfr's DDP strategy, over gloo). A fused AdamW under
bf16-mixed once failed at the first optimizer step of every GPU fit (Lightning's clipping guard);
these fits fail the same way on that code. ``trainer=fsdp`` cannot run here (Lightning runs FSDP
on CUDA only): the GPU check runs it.
"""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from lightning.pytorch.strategies import SingleDeviceStrategy

from kfr.core.errors import UserError
from kfr.finetune.distributed import CellDDPStrategy
from kfr.finetune.modes import check_finetune_settings, strategy
from kfr.finetune.train import train
from tests.unit.test_finetune_train import DOCUMENTS, ft_config

CLIP = 1e-3  # far below a random model's gradient norm: every step is clipped

# profile -> (overrides besides trainer.accelerator=cpu, precision plugin, strategy class)
PROFILES = {
    "gpu": ((), MixedPrecision, SingleDeviceStrategy),
    "ddp": (("trainer.devices=1",), MixedPrecision, CellDDPStrategy),
    "cpu": ((), Precision, SingleDeviceStrategy),
}


def _grad_norm(params) -> float:
    grads = [p.grad.float().norm() for p in params if p.grad is not None]
    return float(torch.stack(grads).norm()) if grads else 0.0


class _Watch(Callback):
    """What the fit really used: plugin, strategy, optimizer, the dtype of a linear layer's
    output, and the gradient norm before clipping and the one the optimizer stepped with."""

    def __init__(self) -> None:
        self.seen: dict = {"before": [], "at_step": [], "linear_dtypes": set()}

    def on_train_start(self, trainer, pl_module) -> None:
        self.seen["plugin"] = trainer.precision_plugin
        self.seen["strategy"] = trainer.strategy
        optimizer = trainer.optimizers[0]
        self.seen["fused"] = bool(optimizer.defaults.get("fused"))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        # After the step: Lightning runs the closure (the last backward, then clipping) inside
        # optimizer.step, and zeroes the gradients only before the next step's first backward.
        optimizer.register_step_post_hook(
            lambda *_: self.seen["at_step"].append(_grad_norm(params))
        )
        # A plain linear layer (QLoRA's 4-bit layers compute in their own dtype).
        linear = next(m for m in pl_module.modules() if type(m) is torch.nn.Linear)
        linear.register_forward_hook(lambda _m, _i, out: self.seen["linear_dtypes"].add(out.dtype))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        self.seen["before"].append(_grad_norm(params))


def _fit_and_check(profile, mode, accelerator, ft_cache, out_dir, plugin_class, strategy_class):
    extra = PROFILES[profile][0] if profile in PROFILES else ("trainer.devices=1",)
    cfg = ft_config(
        f"trainer={profile}",
        f"trainer.accelerator={accelerator}",
        *extra,
        f"finetune={mode}",
        f"finetune.max_grad_norm={CLIP}",
        "trainer.micro_batch_size=2",
        "trainer.checkpoint_every_min=0",
        cache=str(ft_cache),
    )
    check_finetune_settings(cfg)  # the profile's settings pass kfr's own checks
    watch = _Watch()
    summary = train(cfg, [d.text for d in DOCUMENTS], ft_cache, out_dir, callbacks=[watch])
    seen = watch.seen
    assert summary["steps"] >= 2 and summary["precision"] == str(cfg.trainer.precision)
    assert type(seen["plugin"]) is plugin_class  # exactly the profile's plugin, not a subclass
    assert isinstance(seen["strategy"], strategy_class)
    # The optimizer is built as on a GPU: fused, since no gradient scaler is in play.
    assert seen["fused"] is True
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    assert (torch.bfloat16 in seen["linear_dtypes"]) is bf16
    # Clipping happened: every step's gradients were larger than CLIP before, at most CLIP at
    # the optimizer step.
    assert len(seen["at_step"]) == len(seen["before"]) == summary["steps"]
    assert min(seen["before"]) > 10 * CLIP
    assert max(seen["at_step"]) <= CLIP * 1.01
    assert (out_dir / strategy(mode).saved).is_dir()


@pytest.mark.parametrize(
    ("profile", "mode"),
    [("gpu", "full"), ("gpu", "lora"), ("gpu", "qlora"), ("ddp", "lora"), ("cpu", "full")],
)
def test_each_profile_fits_with_its_own_lightning_objects(profile, mode, ft_cache, tmp_path):
    _, plugin_class, strategy_class = PROFILES[profile]
    _fit_and_check(profile, mode, "cpu", ft_cache, tmp_path / "out", plugin_class, strategy_class)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("profile", "mode"),
    [("gpu", "full"), ("gpu", "lora"), ("gpu", "qlora"), ("ddp", "lora"), ("fsdp", "full")],
)
def test_each_gpu_profile_fits_on_a_gpu(profile, mode, ft_cache, tmp_path):
    """The same fits on CUDA; FSDP (one GPU) only here, with its own plugin and clipping."""
    from lightning.pytorch.plugins.precision import FSDPPrecision
    from lightning.pytorch.strategies import FSDPStrategy

    plugin_class, strategy_class = (
        (FSDPPrecision, FSDPStrategy) if profile == "fsdp" else PROFILES[profile][1:]
    )
    _fit_and_check(profile, mode, "gpu", ft_cache, tmp_path / "out", plugin_class, strategy_class)


def test_fp16_training_on_the_cpu_is_refused_but_bf16_is_not(tmp_path):
    for precision in ("bf16-mixed", "bf16-true", "32-true"):
        check_finetune_settings(ft_config(f"trainer.precision={precision}", cache=str(tmp_path)))
    for precision in ("16-mixed", "16-true"):
        with pytest.raises(UserError, match=r"trainer\.precision.*needs a GPU"):
            check_finetune_settings(
                ft_config(f"trainer.precision={precision}", cache=str(tmp_path))
            )
    with pytest.raises(UserError, match=r"trainer\.precision.*unknown precision 'bf16mixed'"):
        check_finetune_settings(ft_config("trainer.precision=bf16mixed", cache=str(tmp_path)))


def test_gpu_qlora_without_bitsandbytes_cuda_kernels_is_refused(monkeypatch, tmp_path):
    """This machine's bitsandbytes has no CUDA library loaded (no GPU): asking for QLoRA on a GPU
    must stop at the settings check, not at the first 4-bit matmul."""
    from kfr.finetune import modes

    monkeypatch.setattr(modes, "uses_gpu", lambda accelerator: True)
    cfg = ft_config("finetune=qlora", "trainer=gpu", cache=str(tmp_path))
    with pytest.raises(UserError, match=r"finetune\.mode.*no CUDA kernels"):
        strategy("qlora").check(cfg)


def test_a_gpu_profile_on_a_machine_without_cuda_names_the_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for profile in ("gpu", "ddp", "fsdp"):
        cfg = ft_config(f"trainer={profile}", cache=str(tmp_path))
        with pytest.raises(UserError, match=r"trainer\.accelerator.*CUDA is not available"):
            check_finetune_settings(cfg)
