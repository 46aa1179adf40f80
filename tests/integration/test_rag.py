"""The embedded study cell with retrieval: SmolLM2-135M + MiniLM + FAISS on novel facts.

The novel facts are unknown to the model (base accuracy is near chance); with the question's own
biography retrieved and put before the prompt, the model can read the answer off it.
"""

from __future__ import annotations

import json

import pytest

from kfr.cell import run_cell
from tests.conftest import compose_config

pytestmark = pytest.mark.integration

# Every fact type of the first 20 people (6 questions each): enough to separate RAG from base
# by a wide margin, at half the cost of the full 240 questions.
# eval.probes=[]: the direct questions only (the probe families would add 3x the scoring).
COMMON = ["eval.progress=false", "eval.bootstrap_samples=200", "data.limit=120", "eval.probes=[]"]


@pytest.fixture(scope="module")
def base_and_rag(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("rag")
    cache = f"paths.cache_dir={cache_dir}"
    base = run_cell(compose_config([*COMMON, cache]), out / "base")
    rag = run_cell(compose_config([*COMMON, cache, "method=rag"]), out / "rag")
    return base, rag, out


def test_minilm_retrieves_the_source_biography(base_and_rag):
    _, rag, _ = base_and_rag
    metrics = rag.metrics
    print(
        f"recall@1 {metrics['recall_at_1']:.3f}  recall@{rag.retrieval['k']} "
        f"{metrics['recall_at_k']:.3f}"
    )
    assert metrics["recall_at_1"] >= 0.9
    assert metrics["recall_at_k"] >= metrics["recall_at_1"]


def test_rag_accuracy_is_far_above_base(base_and_rag):
    base, rag, out = base_and_rag
    base_acc, rag_acc = base.metrics["acc"], rag.metrics["acc"]
    print(f"base acc {base_acc:.3f}  rag acc {rag_acc:.3f}  (chance 0.25)")
    assert rag_acc >= base_acc + 0.3
    assert rag.retrieval["context"]["dropped_chunks"] == 0  # 3 biographies fit easily
    record = json.loads((out / "rag" / "predictions.jsonl").read_text().splitlines()[0])
    assert record["retrieved_ids"][0] == "person-0001#0"
