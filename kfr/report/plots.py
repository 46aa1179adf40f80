"""PNG plots: accuracy against the paraphrase count, against K, against the training tokens of
every fine-tuning arm, and against forgetting (direct and per probe family, every fine-tuned
cell) (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from kfr.report.aggregates import Aggregate
from kfr.report.arms import arm_label, probe_families
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


# Settings a legend names where they differ; the mode, replay and hops are in arm_label already.
_SETTINGS = (("K", "k"), ("p", "paraphrases"), ("lr", "lr"), ("epochs", "epochs"))
_MARKERS = ("o", "s", "^", "v", "D", "P", "X")  # direct questions first, then each probe family


def _setting(agg: Aggregate, key: str) -> object:
    return getattr(agg, key) if key in ("k", "paraphrases") else agg.cells[0].settings.get(key)


def _variant_labels(aggs: list[Aggregate]) -> list[str]:
    """Arm (and model / task where several) plus the settings that differ among ``aggs``."""
    varying = [(name, key) for name, key in _SETTINGS if len({_setting(a, key) for a in aggs}) > 1]
    labels = []
    for agg in aggs:
        parts = [model_label(agg.model)] if len({a.model for a in aggs}) > 1 else []
        parts += [agg.task] if len({a.task for a in aggs}) > 1 else []
        parts.append(arm_label(agg))
        parts += [f"{name}={_setting(agg, key)}" for name, key in varying]
        label = " ".join(parts)
        labels.append(label if label not in labels else f"{label} #{labels.count(label) + 1}")
    return labels


def _half_widths(value: float, ci: tuple[float, float] | None) -> list[list[float]]:
    if ci is None:
        return [[0.0], [0.0]]
    return [[max(value - ci[0], 0.0)], [max(ci[1] - value, 0.0)]]


def plot_frontier(aggs: list[Aggregate], out_dir: Path) -> Path | None:
    """Accuracy against forgetting, one point per fine-tuned cell (every seed) with both 95%
    intervals: direct questions and each probe family (markers), one colour per arm/variant.
    The frontier a team chooses on: how much accuracy each setting buys for what it forgets."""
    tuned = [a for a in aggs if any(c.forgetting is not None for c in a.cells)]
    if not tuned:
        return None
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    tuned.sort(key=lambda a: (a.model, a.task, arm_label(a), str(a.cells[0].settings)))
    families = probe_families(tuned)
    series = ["direct", *families]
    fig, ax = plt.subplots(figsize=(7.2, 4.8), dpi=120)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (agg, label) in enumerate(zip(tuned, _variant_labels(tuned), strict=True)):
        color = colors[i % len(colors)]
        for cell in agg.cells:
            if cell.forgetting is None:
                continue
            xerr = _half_widths(cell.forgetting, cell.forgetting_ci95)
            points = [(cell.acc, cell.acc_ci95)]
            for family in families:
                metrics = cell.probes.get(family)
                ci = metrics.get("acc_ci95") if metrics else None
                points.append(
                    (None, None) if metrics is None else (metrics["acc"], tuple(ci) if ci else None)
                )
            for j, (acc, ci) in enumerate(points):
                if acc is None:
                    continue
                ax.errorbar(
                    [cell.forgetting], [acc], xerr=xerr, yerr=_half_widths(acc, ci),
                    fmt=_MARKERS[j % len(_MARKERS)], color=color, capsize=2, alpha=0.85,
                    label=label if j == 0 and cell is agg.cells[0] else None,
                )  # fmt: skip
    for j, name in enumerate(series):
        ax.plot([], [], _MARKERS[j % len(_MARKERS)], color="gray", label=name)
    ax.axvline(0.0, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xlabel("Forgetting (control-set accuracy lost vs base)")
    ax.set_ylabel("Accuracy")
    ax.set_title("Accuracy vs forgetting, per fine-tuned cell (95% intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="best")
    return _save(fig, out_dir, "acc_vs_forgetting.png")
