"""The ``kfr-index`` command: build a knowledge base's retrieval index ahead of a sweep.

It composes the same config tree as ``kfr`` (primary config ``conf/index.yaml``, which is
``config.yaml`` without a run directory), builds or finds the cached chunks, embeddings and
index for ``data`` x ``retriever``, and prints where they are. Jobs of a later ``kfr -m
method=rag ...`` sweep with the same settings then reuse them. Errors as in ``kfr``: a user
mistake is one line on stderr and exit code 2.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from kfr.cli.console import (
    exit_user_error,
    quiet_libraries,
    refuse_unsupported_versions,
    run_hydra_command,
)
from kfr.core.errors import UserError
from kfr.core.paths import CONFIG_DIR
from kfr.core.schema import KfrConfig, typed_config
from kfr.data.loading import load_eval_data
from kfr.retrieval.cache import ensure_index
from kfr.retrieval.encoders import load_encoder, resolve_encoder_device
from kfr.retrieval.faiss_index import faiss_gpus

PROG = "kfr-index"


def build_index_for(cfg: KfrConfig | DictConfig, *, progress: bool = True):
    """Build (or find) the index ``cfg.retriever`` describes over ``cfg.data``'s knowledge base."""
    cfg = typed_config(cfg)
    cache_dir = Path(cfg.paths.cache_dir)
    # The questions are read too: their source_ids are checked against the documents now,
    # not in the middle of the sweep.
    data = load_eval_data(cfg.data, cache_dir, need_knowledge=True)
    gpus = faiss_gpus(resolve_encoder_device(cfg.retriever.device), cfg.retriever.gpu_ids)
    encoder = load_encoder(cfg.retriever)
    return ensure_index(
        data.documents, cfg.retriever, cache_dir, encoder, gpus=gpus, progress=progress
    )


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="index")
def _run(cfg: DictConfig) -> None:
    quiet_libraries()
    try:
        files = build_index_for(cfg)
    except UserError as err:
        exit_user_error(PROG, err)
    state = "reused" if files.reused else "built"
    print(f"{state} index: {files.index_dir} ({files.n_chunks} chunks, {files.dim}-d)")


def main() -> None:
    refuse_unsupported_versions(PROG)
    run_hydra_command(PROG, _run)


if __name__ == "__main__":
    main()
