"""The schema's groups every cell reads: model, data, method, retriever and eval.

What is scored and how: the model, the questions and knowledge base, the method (retrieve,
fine-tune, what to train on), retrieval, and how questions are put to the model. Part of the one
reference of every key (:mod:`kfr.core.schema`); field comments are the users' reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import MISSING

from kfr.core.schema_ranges import ranged


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
    # Generator version: 2 = 1's documents, questions and paraphrases plus a mentor per person
    # (a sentence in each document and paraphrase) and the probe files (reversal, two_hop,
    # comparison); 1 = the original files, byte for byte (the paper table's numbers); 3 = 2's
    # files with probes that measure what they name (kfr.data.probes_v3: lure-free two_hop and
    # two_hop_lure, mentor, balanced comparison, reversal and reversal_two_cue apart).
    version: int = ranged(3, ge=1, le=3)


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
    # Searches per question. 1: one search for the question. 2: follow the first hop (for
    # questions whose answer needs a second document, "where was X's mentor born?"): each
    # sentence of the first hop's top chunk, less the question's words, is searched ("X was
    # mentored by Y." -> "mentored by Y"); the K chunks are the first hop's top chunk, then the
    # second hop's best others (at K=1 the second hop adds nothing). kfr.retrieval.hops.
    hops: int = ranged(1, ge=1, le=2)
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
    # Probe families scored after the direct questions, each with its own accuracy (questions in
    # forms the training data never uses, kfr.cell.probes; the generated novel-facts set version
    # 3: reversal, reversal_two_cue, two_hop, two_hop_lure, mentor, comparison). [] = none (the
    # default: a single cell stays quick; experiment=probes, arms and frontier set null);
    # null = every family the data offers; a list = those (one the data cannot produce is an
    # error).
    probes: list[str] | None = field(default_factory=list)
    # Oracle context: every question (direct and probe) gets the knowledge-base documents its
    # source_ids name as passages, in that order, instead of retrieved ones: what the model does
    # with exactly the facts it needs (e.g. can it compare two birth years it is shown?). For
    # methods that do not retrieve; every question needs source_ids.
    oracle: bool = False
