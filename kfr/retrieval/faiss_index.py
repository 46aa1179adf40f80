"""FAISS indices over normalised embeddings: build (train, add), search parameters, GPU use.

Any ``faiss.index_factory`` spec with inner product works (Flat, IVF{n},Flat, HNSW32,
IVF{n},PQ{m}, ...). With GPU FAISS and a CUDA device (``faiss.get_num_gpus() > 0``) indices are
trained, filled and searched on the GPU(s) and saved as CPU indices, so a cache written on a GPU
box is read anywhere; an index type FAISS has no GPU version of (HNSW) stays on the CPU.

Search breadth (``nprobe`` for IVF types, ``efSearch`` for HNSW) is tuned per index from the
corpus itself, right after the build (:mod:`kfr.retrieval.search_tuning`); here it is chosen for
a search (:func:`choose_search_params`): an explicit ``retriever.nprobe`` / ``ef_search`` wins,
then the index's tuned choice (from its manifest). The fixed defaults (:func:`default_nprobe`,
:data:`DEFAULT_EF_SEARCH`) remain only for an index that has no tuned choice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import faiss
import numpy as np

from kfr.core.errors import UserError

log = logging.getLogger(__name__)

# Vectors per ``index.add`` call: bounds the copy made from a memory-mapped embeddings file.
ADD_BATCH = 65_536
# Vectors sampled to train IVF/PQ: FAISS uses at most 256 per centroid anyway; PQ's 256 codes
# per sub-quantizer want about 10k.
MIN_TRAIN = 65_536
TRAIN_PER_LIST = 64
TRAIN_SEED = 0


def faiss_reason(err: BaseException) -> str:
    """FAISS's own sentence from one of its RuntimeErrors, without the C++ location."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    return re.sub(r"^Error: '.*?' failed: ", "", text)


def new_index(dim: int, spec: str) -> faiss.Index:
    """An empty inner-product index for ``spec``; a spec FAISS rejects is a user error."""
    try:
        return faiss.index_factory(dim, spec, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise UserError(
            f"FAISS rejects index spec '{spec}' for {dim}-d embeddings: {faiss_reason(err)}; "
            "try Flat, IVF<lists>,Flat, HNSW32 or IVF<lists>,PQ<m> (m dividing the dimension)",
            field="retriever.index",
        ) from None


def ivf_lists(index: faiss.Index) -> int | None:
    ivf = faiss.try_extract_index_ivf(index)
    return None if ivf is None else int(ivf.nlist)


def is_hnsw(index: faiss.Index) -> bool:
    return "HNSW" in type(faiss.downcast_index(index)).__name__


def default_nprobe(nlist: int) -> int:
    # Only for an index without a tuned choice (see search_tuning): a sixteenth of the lists
    # (at least 16), recall@10 >= 0.95 at 100k clustered vectors with nlist ~ 4 sqrt(N), but
    # about 0.70 at 1M (benchmarks/retrieval.py).
    return min(nlist, max(16, nlist // 16))


DEFAULT_EF_SEARCH = 128  # likewise only untuned; recall@10 about 0.60 for HNSW32 at 1M


def choose_search_params(
    index: faiss.Index,
    nprobe: int | None,
    ef_search: int | None,
    tuned: Mapping[str, int] | None = None,
) -> tuple[dict[str, int], dict[str, str]]:
    """The search parameters that apply to this (CPU) index's type, and where each came from:
    ``user`` (``retriever.nprobe`` / ``ef_search``), ``tuned`` (the index's tuned choice,
    ``tuned`` here, from its manifest) or ``default`` (the fixed defaults, for an index that has
    no tuned choice)."""
    tuned = tuned or {}
    params: dict[str, int] = {}
    sources: dict[str, str] = {}

    def pick(name: str, user: int | None, key: str, fallback: int) -> None:
        if user is not None and user < 1:
            raise UserError(f"must be at least 1, got {user}", field=f"retriever.{key}")
        if user is not None:
            params[name], sources[name] = user, "user"
        elif tuned.get(name) is not None:
            params[name], sources[name] = int(tuned[name]), "tuned"
        else:
            params[name], sources[name] = fallback, "default"

    nlist = ivf_lists(index)
    if nlist is not None:
        pick("nprobe", nprobe, "nprobe", default_nprobe(nlist))
        params["nprobe"] = min(nlist, params["nprobe"])  # never more than the lists
    if is_hnsw(index):
        pick("efSearch", ef_search, "ef_search", DEFAULT_EF_SEARCH)
    return params, sources


def search_params(
    index: faiss.Index,
    nprobe: int | None,
    ef_search: int | None,
    tuned: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """The search parameters that apply to this (CPU) index's type: the user's where set, else
    the tuned ones (``tuned``), else the fixed defaults."""
    return choose_search_params(index, nprobe, ef_search, tuned)[0]


def apply_search_params(index: faiss.Index, params: dict[str, int], on_gpu: bool) -> None:
    # The ParameterSpace classes reach through wrappers (refine, pre-transform, GPU replicas).
    space = faiss.GpuParameterSpace() if on_gpu else faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


# ----------------------------------------------------------------------------- devices


def faiss_gpus(device, gpu_ids: Sequence[int] | None) -> list[int]:
    """The GPUs FAISS should use for ``device`` (a torch.device); [] means the CPU."""
    if device.type != "cuda":
        return []
    available = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if available == 0:
        log.info("FAISS has no GPU support here (faiss-cpu): indices are built on the CPU")
        return []
    if gpu_ids:
        wanted = list(gpu_ids)
    elif device.index is not None:
        wanted = [device.index]
    else:
        wanted = list(range(available))
    bad = [g for g in wanted if not 0 <= g < available]
    if bad:
        raise UserError(
            f"GPU ids {bad} asked for, but FAISS sees {available} GPU(s)", field="retriever.gpu_ids"
        )
    return wanted


def to_gpus(index: faiss.Index, gpus: Sequence[int]) -> faiss.Index | None:
    """A GPU copy of ``index`` (replicated over ``gpus``), or None where FAISS has none."""
    options = faiss.GpuMultipleClonerOptions()
    # float16 IVF-PQ lookup tables: GPU shared memory holds them for large m only in fp16. For
    # other types the same flag stores the vectors in fp16, which would make Flat inexact.
    ivf = faiss.try_extract_index_ivf(index)
    options.useFloat16 = ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ)
    try:
        return faiss.index_cpu_to_gpus_list(index, co=options, gpus=list(gpus))
    except RuntimeError as err:
        log.info(
            "FAISS has no GPU version of %s (%s): using the CPU",
            type(faiss.downcast_index(index)).__name__,
            faiss_reason(err),
        )
        return None


def describe(gpus: Sequence[int]) -> str:
    return "cpu" if not gpus else "gpu:" + ",".join(str(g) for g in gpus)


# ----------------------------------------------------------------------------- build


@dataclass
class BuildReport:
    device: str  # "cpu" or "gpu:0,1"
    trained: bool
    train_vectors: int


def _train_sample(embeddings: np.ndarray, nlist: int | None) -> np.ndarray:
    n = len(embeddings)
    size = min(n, max(MIN_TRAIN, TRAIN_PER_LIST * (nlist or 0)))
    if size == n:
        return np.ascontiguousarray(embeddings, dtype=np.float32)
    rows = np.sort(np.random.default_rng(TRAIN_SEED).choice(n, size, replace=False))
    return np.ascontiguousarray(embeddings[rows], dtype=np.float32)


def build_index(
    embeddings: np.ndarray, spec: str, gpus: Sequence[int] = ()
) -> tuple[faiss.Index, BuildReport]:
    """Train (when the type needs it) and fill an index; always returned as a CPU index.

    ``embeddings`` may be a memory map: vectors are read ``ADD_BATCH`` rows at a time.
    """
    n, dim = embeddings.shape
    cpu_index = new_index(dim, spec)
    ivf = faiss.try_extract_index_ivf(cpu_index)
    ivf = None if ivf is None else faiss.downcast_index(ivf)
    if ivf is not None and hasattr(ivf, "do_polysemous_training"):
        # Polysemous codes only pay off with polysemous_ht search, which kfr never sets; their
        # training is most of an IVF-PQ build's time on the CPU.
        ivf.do_polysemous_training = False
    index, used = cpu_index, []
    if gpus:
        gpu_index = to_gpus(cpu_index, gpus)
        if gpu_index is not None:
            index, used = gpu_index, list(gpus)
    log.info("Building FAISS index %s over %d vectors on %s", spec, n, describe(used))
    trained, sample_size = False, 0
    if not index.is_trained:
        sample = _train_sample(embeddings, ivf_lists(cpu_index))
        sample_size = len(sample)
        try:
            index.train(sample)
        except RuntimeError as err:
            raise UserError(
                f"cannot train index '{spec}' on {n} chunks: {faiss_reason(err)}; use fewer IVF "
                "lists (about 4*sqrt(chunks)), fewer PQ codes, or Flat for a small corpus",
                field="retriever.index",
            ) from None
        trained = True
        del sample
    for start in range(0, n, ADD_BATCH):
        index.add(np.ascontiguousarray(embeddings[start : start + ADD_BATCH], dtype=np.float32))
    if used:
        index = faiss.index_gpu_to_cpu(index)
    return index, BuildReport(describe(used), trained, sample_size)


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` (scores, row ids) per query; ids are -1 where the index has fewer than k."""
    return index.search(np.ascontiguousarray(queries, dtype=np.float32), k)
