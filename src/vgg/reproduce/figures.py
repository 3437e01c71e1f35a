"""The report's pictures, under ``DIR/figures/``: every run's validation curve, error against depth
(Table 3), dense class score maps over sample images (``vgg predict --heatmap``) and localisation
boxes on sample images (``vgg predict LOC --classifier CLS --draw``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..files import atomic_write
from .plan import NETS, TRAIN_SCALES, WEIGHT_LAYERS, Step

FIGURES = "figures"
SAMPLES = 6


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    _plt().close(fig)


def epochs(folder: Path) -> list[dict]:
    log = folder / "log.jsonl"
    if not log.is_file():
        return []
    recs = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in recs if "event" not in r]


def curves_figure(out: Path, plan: list[Step]) -> Path | None:
    """Validation accuracy (classification) and localisation accuracy per epoch of every run."""
    runs = [(s, epochs(out / s.name)) for s in plan if s.kind == "train"]
    runs = [(s, h) for s, h in runs if h]
    if not runs:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    for step, history in runs:
        loc = step.config.get("task") == "localization"
        key = "val_loc_accuracy" if loc else "val_accuracy"
        start = history[0]["epoch"] - 1
        axes[1 if loc else 0].plot([h["epoch"] - start for h in history], [h[key] for h in history], "o-",
                                   label=step.name, markersize=3)
    for ax, title in zip(axes, ("classification: val top-1 accuracy (%)", "localisation: val accuracy (%)")):
        ax.set_title(title)
        ax.set_xlabel("epoch of the run")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / FIGURES / "curves.png"
    save(fig, path)
    return path


def depth_figure(out: Path, r) -> Path | None:
    """Table 3's top-1 error against the number of weight layers, per training scale; the paper's beside."""
    from . import paper

    if not r.cls:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ours = {k: v["one"]["top1_error"] for k, v in r.cls.items()}
    theirs = {k: v[0] for k, v in paper.TABLE3.items()}
    for ax, source, title in ((axes[0], ours, "ours"), (axes[1], theirs, "paper (ILSVRC-2012 val)")):
        for scale in TRAIN_SCALES:
            points = sorted((WEIGHT_LAYERS[n] + (0.3 if n == "A-LRN" else 0), e, n)
                            for (n, s), e in source.items() if s == scale and n in NETS)
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], "o-", label=f"S = {scale}")
                for x, y, n in points:
                    ax.annotate(n, (x, y), fontsize=7, xytext=(2, 2), textcoords="offset points")
        ax.set_title(f"Table 3, {title}")
        ax.set_xlabel("weight layers")
        ax.set_ylabel("top-1 error (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / FIGURES / "error_vs_depth.png"
    save(fig, path)
    return path


def sample_files(data: str, split: str, folder: Path, n: int = SAMPLES) -> list[Path]:
    """The first ``n`` images of a split as files (a folder's own files; in-memory images saved as PNG)."""
    from PIL import Image

    from ..data import open_dataset

    dataset = open_dataset(data, split, limit=n)
    if hasattr(dataset, "paths"):
        return [Path(p) for p in dataset.paths[:n]]
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(min(n, len(dataset))):
        image = dataset.images[i]
        array = image[0].numpy() if image.shape[0] == 1 else image.permute(1, 2, 0).numpy()
        path = folder / f"{split}_{i}_{dataset.classes[int(dataset.labels[i])].replace('/', '-')}.png"
        Image.fromarray(array).save(path, format="PNG")
        files.append(path)
    return files


def montage(paths: list[Path], path: Path, side: int = 160) -> Path | None:
    """The pictures side by side, each scaled to height ``side``."""
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in paths]
    if not images:
        return None
    images = [im.resize((max(1, im.width * side // im.height), side)) for im in images]
    sheet = Image.new("RGB", (sum(im.width for im in images) + 4 * (len(images) - 1), side), (255, 255, 255))
    x = 0
    for im in images:
        sheet.paste(im, (x, 0))
        x += im.width + 4
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))
    return path


def score_map_figure(out: Path, r) -> tuple[Path, str] | None:
    """The best-trained classifier's dense score maps of its top class on sample test images, at its
    largest test scale (the finest map)."""
    from ..evaluation import load_nets, write_heatmaps
    from ..evaluation.views import default_scales, train_scale

    nets = [s for s in (r.fusion_nets or []) if (out / s.name / "best.safetensors").is_file()]
    if not nets:
        return None
    step, call = nets[-1], next(c for s in r.plan for c in s.calls if c.get("task") == "classification")
    model = load_nets([str(out / step.name)], "cpu")[0]
    q = max(default_scales(model.crop_size, train_scale(model)))
    files = sample_files(call["data"], call["split"], out / FIGURES / "samples")
    maps, _ = write_heatmaps([model], files, out / FIGURES / "scoremaps", scale=q,
                             ceil_mode=call.get("ceil_mode", True))
    path = montage([Path(m["heatmap"]) for m in maps], out / FIGURES / "scoremaps.png")
    return (path, f"{step.name}: the class score map of each image's top class at Q = {q}") if path else None


def boxes_figure(out: Path, plan: list[Step]) -> tuple[Path, str] | None:
    """The PCR net's (all layers, S = 256) boxes on sample test images, ranked by the classifiers."""
    from ..evaluation import load_nets
    from ..evaluation.localization_commands import draw_predictions, predict_boxes

    step = next((s for s in plan if s.name == "eval-loc-dense"), None)
    if step is None:
        return None
    call = step.calls[-1]
    loc = [c for c in call["checkpoints"] if (Path(c) / "best.safetensors").is_file()]
    classifiers = [c for c in call["classifiers"] if (Path(c) / "best.safetensors").is_file()]
    if not loc or not classifiers:
        return None
    files = sample_files(call["data"], call["split"], out / FIGURES / "loc_samples")
    results, _ = predict_boxes(load_nets(loc, "cpu"), load_nets(classifiers, "cpu"), files, topk=3,
                               ceil_mode=call.get("ceil_mode", True))
    drawn = draw_predictions(results, out / FIGURES / "boxes", shown=1)
    path = montage(drawn, out / FIGURES / "boxes.png")
    names = ", ".join(Path(c).name for c in loc)
    return (path, f"{names}: the best box of each image (dense, three scales, flips), ranked by "
                  f"{', '.join(Path(c).name for c in classifiers)}") if path else None


def make_figures(out: Path, plan: list[Step], r) -> dict[str, list[tuple[str, str]]]:
    """{section: [(caption, path relative to out)]}; a picture whose runs are missing is left out."""
    figures: dict[str, list[tuple[str, str]]] = {}

    def add(section: str, path: Path | None, caption: str) -> None:
        if path is not None:
            figures.setdefault(section, []).append((caption, path.relative_to(out).as_posix()))

    add("curves", curves_figure(out, plan), "validation accuracy per epoch of every run")
    add("3", depth_figure(out, r), "top-1 error against depth, ours and the paper's (Table 3)")
    found = score_map_figure(out, r)
    if found:
        add("5", *found)
    found = boxes_figure(out, plan)
    if found:
        add("9", *found)
    return figures
