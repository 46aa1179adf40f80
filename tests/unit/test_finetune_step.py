"""What a training step costs besides the model: no host sync per optimizer step for the loss
log, and the output head only where a supervised target is predicted (same loss, fewer FLOPs)."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from kfr.finetune.examples import IGNORE, collate
from kfr.finetune.module import CausalLMModule


def _model():
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=101,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(config)


def test_the_optimizer_step_hook_reads_no_loss_back_to_the_host(monkeypatch):
    module = CausalLMModule(_model(), lr=1e-3)
    module._trainer = SimpleNamespace(world_size=1)
    monkeypatch.setattr(module, "log", lambda *args, **kwargs: None)
    reads = []
    for name in ("item", "__float__", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, **kwargs):
            reads.append(1)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    optimizer = SimpleNamespace(param_groups=[{"lr": 1e-3}])
    for losses in ([2.0, 4.0], [1.0, 1.0]):
        module._pending = [torch.tensor(x) for x in losses]
        module.on_before_optimizer_step(optimizer)
    assert not reads  # read once, when training is over:
    monkeypatch.undo()
    assert module.step_losses == [3.0, 1.0]


def _examples_batch():
    items = []
    for prompt, answer in ((12, 3), (7, 2)):
        ids = list(range(5, 5 + prompt + answer))
        items.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return collate(items, pad_id=0)


def test_the_head_runs_only_where_an_answer_token_is_predicted():
    model = _model()
    module = CausalLMModule(model, lr=1e-3)
    batch = _examples_batch()
    # positions 11..13 (row 0) and 6..7 (row 1) predict answer tokens: 5 of 15 columns
    assert batch["keep"].tolist() == [6, 7, 11, 12, 13]
    logits, _ = module._logits_kept(batch)
    assert logits.shape == (2, 5, 101)
    ours = module._answer_loss(batch)
    theirs = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        num_items_in_batch=torch.tensor(1.0),  # the summed loss
        use_cache=False,
    ).loss
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    grad = model.model.embed_tokens.weight.grad.clone()
    model.zero_grad()
    theirs = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        num_items_in_batch=torch.tensor(1.0),
        use_cache=False,
    ).loss
    theirs.backward()
    torch.testing.assert_close(grad, model.model.embed_tokens.weight.grad)
