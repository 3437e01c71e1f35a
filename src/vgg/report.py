"""Presentation: text tables in the paper's form, the confusion matrix and training-curve plots,
JSON files. No model logic: every function takes numbers already computed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from .files import atomic_write


def table(rows: list[list], header: list[str]) -> str:
    """Format rows as a plain aligned text table (numbers right-aligned)."""
    cells = [header] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    numeric = [all(_is_number(r[i]) for r in cells[1:]) for i in range(len(header))]

    def line(r):
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric))

    return "\n".join([line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


def _is_number(s: str) -> bool:
    try:
        float(s.replace(",", ""))
        return True
    except ValueError:
        return False


def format_scale(scale: Sequence[int], sep: str = ",") -> str:
    """Training scale S: 256 for fixed S, [256,512] for jittered S (as the training log prints it);
    ``sep=";"`` writes [256;512] as the paper's tables (and ``vgg evaluate``'s) do."""
    return str(scale[0]) if scale[0] == scale[1] else f"[{scale[0]}{sep}{scale[1]}]"


# -- evaluation ----------------------------------------------------------------------------------------

def result_table(results: Sequence) -> str:
    """The paper's table form (Tables 3-6) of :class:`vgg.evaluation.EvalResult` rows: net, train S,
    test Q, method, top-1/top-5 error, and the accuracies the libraries publish."""
    rows = []
    for r in results:
        net = " + ".join(Path(n["checkpoint"]).stem or n["checkpoint"] for n in r.nets)
        train = " / ".join(format_scale(n["train_scale"], sep=";") for n in r.nets)
        test = " / ".join(",".join(map(str, n["scales"])) for n in r.nets)
        method = r.protocol + ("" if r.flip or r.protocol == "centre" else " (no flip)")
        m = r.metrics
        rows.append([net, train, test, method, r.views, f"{m['top1_error']:.2f}", f"{m['top5_error']:.2f}",
                     f"{m['top1_accuracy']:.2f}", f"{m['top5_accuracy']:.2f}", f"{r.images_per_second:.1f}"])
    return table(rows, ["net", "train S", "test Q", "method", "views", "top-1 err %", "top-5 err %",
                        "top-1 acc %", "top-5 acc %", "images/s"])


def per_class_table(result) -> str:
    """Images and accuracy per class of one :class:`vgg.evaluation.EvalResult`."""
    rows = [[c, v["images"], "-" if v["accuracy"] is None else f"{v['accuracy']:.2f}"]
            for c, v in result.metrics["per_class"].items()]
    return table(rows, ["class", "images", "accuracy %"])


def save_confusion_png(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path,
                       title: str = "") -> Path:
    """Row-normalised confusion matrix (true class down, predicted across) as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    conf = torch.tensor(confusion, dtype=torch.float64)
    rates = conf / conf.sum(1, keepdim=True).clamp(min=1)
    k = len(classes)
    side = min(16.0, max(5.0, 0.45 * k + 2))
    fig = Figure(figsize=(side, side))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if k <= 40:  # beyond that the names are unreadable anyway
        ax.set_xticks(range(k), labels=list(classes), rotation=90, fontsize=8)
        ax.set_yticks(range(k), labels=list(classes), fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    if conf[i, j]:
                        ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=7,
                                color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def write_json(obj, path: str | Path) -> Path:
    """Write JSON atomically (an interrupted run never leaves a torn file)."""
    text = json.dumps(obj, indent=2)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n"))


# -- training ------------------------------------------------------------------------------------------

def plot_curves(history: list[dict], path: Path, metric: str = "accuracy") -> Path:
    """Loss, the task's metric (``accuracy``: top-1; ``loc_accuracy``: localisation, App. A) and
    learning rate per epoch, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], "o-", label="val")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [h[f"train_{metric}"] for h in history], "o-", label="train (augmented)")
    axes[1].plot(epochs, [h[f"val_{metric}"] for h in history], "o-", label="val")
    axes[1].set_title({"accuracy": "top-1 accuracy (%)"}.get(metric, f"{metric.replace('_', ' ')} (%)"))
    axes[2].plot(epochs, [h["lr"] for h in history], "o-")
    axes[2].set_yscale("log")
    axes[2].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    plt.close(fig)
    return path
