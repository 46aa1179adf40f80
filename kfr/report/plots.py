"""PNG plots: accuracy against the paraphrase count, against K, and against the training tokens
of every fine-tuning arm (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from kfr.report.aggregates import Aggregate
from kfr.report.arms import arm_label
from kfr.report.layouts import curve_points
from kfr.report.render import METHOD_LABELS, model_label

AXES = {
    "paraphrases": ("Paraphrases per document (0 = FT-reg)", "acc_vs_paraphrases.png"),
    "k": ("Retrieved chunks K (0 = no retrieval)", "acc_vs_k.png"),
}


def _save(fig, out_dir: Path, filename: str) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / filename
    tmp = path.with_name(f".{filename}.tmp")
    fig.savefig(tmp, format="png")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_tokens(aggs: list[Aggregate], out_dir: Path) -> Path | None:
    """Accuracy against training tokens, one series per model x task x arm (log x axis): how
    paraphrases, entity-graph texts and QA pairs compare at equal training tokens."""
    points: dict[tuple, list[tuple[float, Aggregate]]] = {}
    for agg in aggs:
        tokens = [c.train_tokens for c in agg.cells if c.train_tokens]
        if tokens:
            key = (agg.model, agg.task, arm_label(agg))
            points.setdefault(key, []).append((sum(tokens) / len(tokens), agg))
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for (model, task, arm), series in sorted(points.items()):
        series.sort(key=lambda item: item[0])
        ax.plot(
            [x for x, _ in series],
            [a.mean for _, a in series],
            marker="o",
            label=f"{model_label(model)} {task} {arm}",
        )
    ax.set_xscale("log")
    ax.set_xlabel("Training tokens (all epochs)")
    ax.set_ylabel("Accuracy")
    ax.set_title("Accuracy vs training tokens, by arm")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "acc_vs_training_tokens.png")


def plot_curves(aggs: list[Aggregate], axis: str, out_dir: Path) -> Path | None:
    """One line per model x task x method with 95% interval bars; None if nothing varied."""
    methods = ("ft", "ft_rag") if axis == "paraphrases" else ("rag", "ft_rag")
    curves = curve_points(aggs, methods, axis)
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    xlabel, filename = AXES[axis]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for (model, task, shots, method), points in sorted(curves.items()):
        xs = sorted(points)
        ys = [points[x].mean for x in xs]
        errors = [[0.0] * len(xs), [0.0] * len(xs)]
        for i, x in enumerate(xs):
            ci = points[x].ci95
            if ci is not None:
                errors[0][i] = max(ys[i] - ci[0], 0.0)
                errors[1][i] = max(ci[1] - ys[i], 0.0)
        label = f"{model_label(model)} {task} {shots}-shot {METHOD_LABELS.get(method, method)}"
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)
    ax.set_xticks(sorted({x for points in curves.values() for x in points}))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("Accuracy")
    ax.set_title(f"Accuracy vs {'paraphrases' if axis == 'paraphrases' else 'K'} (95% intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, filename)
