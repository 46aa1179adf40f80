"""The published numbers of Ovadia et al., "Fine-Tuning or Retrieval?" (EMNLP 2024).

Transcribed from the paper's Table 1 (MMLU, accuracy) and Table 2 (current events, 910
questions). Keys use kfr's names: models as in conf/model/, MMLU subjects as in
conf/data/mmlu_<subject>.yaml, methods as in conf/method/ (Table 2 splits fine-tuning into
``ft_reg`` = no paraphrases and ``ft_par`` = with paraphrases).
"""

from __future__ import annotations

PAPER = 'Ovadia et al., "Fine-Tuning or Retrieval?", arXiv 2312.05934, EMNLP 2024'
PAPER_MODELS = ("mistral_7b", "llama2_7b", "orca2_7b")
MMLU_SUBJECTS = ("anatomy", "astronomy", "college_biology", "college_chemistry", "prehistory")
TABLE1_METHODS = ("base", "rag", "ft", "ft_rag")
TABLE2_COLUMNS = ("base", "rag", "ft_reg", "ft_par", "ft_reg_rag", "ft_par_rag")
CURRENT_EVENTS = "current_events"

# Table 1: (subject, shots) -> model -> Base / Base+RAG / FT / FT+RAG.
_TABLE1_ROWS: dict[tuple[str, int], dict[str, tuple[float, float, float, float]]] = {
    ("anatomy", 0): {
        "mistral_7b": (0.556, 0.681, 0.570, 0.659),
        "llama2_7b": (0.393, 0.489, 0.430, 0.489),
        "orca2_7b": (0.607, 0.637, 0.600, 0.637),
    },
    ("anatomy", 5): {
        "mistral_7b": (0.600, 0.681, 0.622, 0.674),
        "llama2_7b": (0.467, 0.563, 0.496, 0.548),
        "orca2_7b": (0.570, 0.659, 0.593, 0.674),
    },
    ("astronomy", 0): {
        "mistral_7b": (0.625, 0.678, 0.651, 0.697),
        "llama2_7b": (0.401, 0.467, 0.487, 0.520),
        "orca2_7b": (0.645, 0.750, 0.651, 0.750),
    },
    ("astronomy", 5): {
        "mistral_7b": (0.658, 0.724, 0.651, 0.697),
        "llama2_7b": (0.401, 0.474, 0.447, 0.520),
        "orca2_7b": (0.664, 0.763, 0.664, 0.743),
    },
    ("college_biology", 0): {
        "mistral_7b": (0.681, 0.757, 0.701, 0.764),
        "llama2_7b": (0.438, 0.493, 0.458, 0.465),
        "orca2_7b": (0.583, 0.639, 0.604, 0.632),
    },
    ("college_biology", 5): {
        "mistral_7b": (0.722, 0.778, 0.736, 0.771),
        "llama2_7b": (0.451, 0.521, 0.424, 0.479),
        "orca2_7b": (0.604, 0.660, 0.625, 0.653),
    },
    ("college_chemistry", 0): {
        "mistral_7b": (0.470, 0.500, 0.490, 0.500),
        "llama2_7b": (0.310, 0.380, 0.390, 0.390),
        "orca2_7b": (0.370, 0.440, 0.370, 0.390),
    },
    ("college_chemistry", 5): {
        "mistral_7b": (0.470, 0.540, 0.500, 0.500),
        "llama2_7b": (0.370, 0.380, 0.360, 0.390),
        "orca2_7b": (0.430, 0.470, 0.370, 0.380),
    },
    ("prehistory", 0): {
        "mistral_7b": (0.713, 0.750, 0.719, 0.731),
        "llama2_7b": (0.448, 0.481, 0.457, 0.478),
        "orca2_7b": (0.642, 0.679, 0.673, 0.673),
    },
    ("prehistory", 5): {
        "mistral_7b": (0.722, 0.762, 0.725, 0.762),
        "llama2_7b": (0.515, 0.531, 0.503, 0.537),
        "orca2_7b": (0.664, 0.698, 0.667, 0.694),
    },
}

# Table 2: model -> Base, Base+RAG, FT-reg, FT-par, FT-reg+RAG, FT-par+RAG (0-shot).
_TABLE2_ROWS: dict[str, tuple[float, float, float, float, float, float]] = {
    "mistral_7b": (0.481, 0.875, 0.504, 0.588, 0.810, 0.830),
    "llama2_7b": (0.353, 0.585, 0.219, 0.392, 0.326, 0.520),
    "orca2_7b": (0.456, 0.876, 0.511, 0.566, 0.820, 0.826),
}

# (model, subject, shots, method) -> accuracy, e.g. ("mistral_7b", "anatomy", 0, "rag") -> 0.681
PAPER_TABLE1: dict[tuple[str, str, int, str], float] = {
    (model, subject, shots, method): value
    for (subject, shots), per_model in _TABLE1_ROWS.items()
    for model, values in per_model.items()
    for method, value in zip(TABLE1_METHODS, values, strict=True)
}

# (model, column) -> accuracy on current events, e.g. ("llama2_7b", "ft_reg") -> 0.219
PAPER_TABLE2: dict[tuple[str, str], float] = {
    (model, column): value
    for model, values in _TABLE2_ROWS.items()
    for column, value in zip(TABLE2_COLUMNS, values, strict=True)
}


def paper_table1(model: str, task: str, shots: int, method: str) -> float | None:
    """The paper's MMLU value for this cell (``task``: the subject), or None."""
    return PAPER_TABLE1.get((model, task, shots, method))


def paper_table2(model: str, task: str, shots: int, column: str) -> float | None:
    """The paper's current-events value (0-shot, task ``current_events``), or None."""
    if task != CURRENT_EVENTS or shots != 0:
        return None
    return PAPER_TABLE2.get((model, column))
