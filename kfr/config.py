"""Typed schema of every config group.

The dataclasses below are registered in Hydra's ConfigStore as ``kfr_schema``, the first entry of
``conf/config.yaml``'s defaults list, so every YAML file and command-line override is merged onto
them: an unknown key or a wrong type stops the run at composition time with the key's full name,
before anything is written. Field comments are the reference for users (the README points here).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from platformdirs import user_cache_dir


class ModelSource(str, Enum):
    hf = "hf"  # a Hugging Face hub id or a local directory in HF format
    gguf_package = "gguf_package"  # a GGUF file shipped inside an installed Python package
    random_init = "random_init"  # a randomly initialised Llama built from `random_init` (tests)


class PromptStyle(str, Enum):
    cloze = "cloze"  # "Question: ...\nAnswer:" + " {choice}"
    letter = "letter"  # MMLU layout: options listed as A.-D., continuation " A".." D"


@dataclass
class RandomInitConfig:
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    max_position_embeddings: int = 2048
    seed: int = 0


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
    max_length: int | None = None  # context window for scoring; null = from the model config
    trust_remote_code: bool = False
    random_init: RandomInitConfig | None = None  # source=random_init only


@dataclass
class NovelFactsConfig:
    n_entities: int = 40  # fictional people; each gets one document and 6 questions
    seed: int = 0
    n_paraphrases: int = 8  # template paraphrases generated per document


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
    limit: int | None = None  # score only the first N questions (quick checks)
    novel_facts: NovelFactsConfig | None = None  # set: generate the synthetic data set


@dataclass
class MethodConfig:
    name: str = MISSING  # base | rag | ft | ft_rag
    finetune: bool = False  # fine-tune on the knowledge base before answering
    retrieve: bool = False  # put retrieved knowledge-base chunks before each question


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
    batch_size: int = 64  # texts per encoder forward pass
    max_seq_length: int | None = None  # encoder truncation length; null = the model's own
    fp16: bool = True  # encode in float16 on a GPU (never on the CPU); in the cache key
    chunk_tokens: int = 128  # most encoder tokens per chunk (prefix and specials not counted)
    chunk_overlap: int = 16  # repeat up to this many tokens (whole sentences) of the last chunk
    # faiss.index_factory spec, inner product on normalised embeddings: Flat (exact),
    # IVF{n},Flat, HNSW32, IVF{n},PQ{m}, ... A bad spec is reported before anything is encoded.
    index: str = "Flat"
    nprobe: int | None = None  # IVF lists searched; null = max(16, n/16), at most n
    ef_search: int = 128  # HNSW search breadth (recall@10 vs Flat >= 0.95 on typical data)
    k: int = 3  # chunks put before each question; 0 = exactly the base method's prompts
    query_with_choices: bool = False  # query = question + its choices, not the question alone
    device: str = "auto"  # encoder and FAISS: auto (cuda if available) | cpu | cuda | cuda:N
    gpu_ids: list[int] | None = None  # FAISS GPUs; null = all visible (cuda:N: only GPU N)


@dataclass
class EvalConfig:
    style: PromptStyle = PromptStyle.cloze
    shots: int = 0  # few-shot examples before each question
    fewshot_seed: int = 1234  # selects few-shot examples when no dev split is given
    description: str | None = None  # letter style header; null = the MMLU sentence
    batch_size: int = 8  # questions per forward pass; recorded, never changes predictions
    bootstrap_samples: int = 1000  # resamples for the 95% confidence intervals
    bootstrap_seed: int = 0
    progress: bool = True  # progress bar while scoring


@dataclass
class TrainerConfig:
    # Passed to lightning.Trainer by the fine-tuning methods; unused by method=base.
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"
    precision: str = "32-true"
    num_nodes: int = 1


@dataclass
class PathsConfig:
    output_root: str = "outputs"  # runs write to <output_root>/<experiment>/...
    cache_dir: str = MISSING  # converted models, generated data, indices


@dataclass
class KfrConfig:
    experiment_name: str = "default"
    seed: int = 0
    skip_completed: bool = True  # skip when the run dir has results for the same config hash
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_schema() -> None:
    """Make ``kfr_schema`` and the ``${kfr_user_cache:}`` resolver known to Hydra."""
    ConfigStore.instance().store(name="kfr_schema", node=KfrConfig)
    if not OmegaConf.has_resolver("kfr_user_cache"):
        OmegaConf.register_new_resolver("kfr_user_cache", lambda: user_cache_dir("kfr"))


register_schema()


def validate_config(cfg: DictConfig) -> None:
    """Re-check ``cfg`` against the schema.

    Composition already rejects unknown keys and wrong types, except for keys a user adds with
    Hydra's ``+key=value`` syntax, which bypasses struct mode; those are caught here.
    """
    from kfr.errors import UserError

    plain = OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)
    try:
        OmegaConf.merge(OmegaConf.structured(KfrConfig), plain)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        message = str(err).splitlines()[0]
        raise UserError(f"not a valid setting ({message})", field=key) from None


# Keys that say where things are stored or how they are displayed, not what is computed.
_NOT_HASHED = ("paths", "skip_completed")
_NOT_HASHED_EVAL = ("progress",)


def config_hash(cfg: DictConfig) -> str:
    """Hash of everything that can change a cell's results (not paths, not Hydra's own keys)."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    assert isinstance(container, dict)
    container = {k: v for k, v in container.items() if k not in _NOT_HASHED and k != "hydra"}
    container["eval"] = {k: v for k, v in container["eval"].items() if k not in _NOT_HASHED_EVAL}
    if not container["method"]["retrieve"]:
        # A cell that does not retrieve keeps its hash whatever the retriever group says.
        container.pop("retriever", None)
    blob = json.dumps(container, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
