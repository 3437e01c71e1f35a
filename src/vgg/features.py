"""Very deep features for other datasets (paper Appendix B), and the linear SVM that uses them.

Appendix B: drop the last FC layer and take the 4096-D fc7 activations; apply the net densely to the
whole image rescaled to shorter side Q, global-average-pool the resulting map, average with the
descriptor of the horizontally flipped image; do this at several Q (256, 384, 512) and average or
stack the scales; L2-normalise; train a linear SVM, no fine-tuning.
"""

from __future__ import annotations

import json
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import Tensor
from tqdm.auto import tqdm

from .data import ImageDataset, eval_batches
from .engine import prepare_for_inference
from .evaluation import caffe_pooling, match_channels
from .files import atomic_write
from .models import VGG

# Appendix B's scales for a 224 crop; other crops scale them by crop / 224 (37, 55, 73 at crop 32).
PAPER_SCALES = (256, 384, 512)
METADATA_KEY = "vgg_features"


def feature_scales(crop_size: int, scales: list[int] | None = None) -> list[int]:
    """The test scales Q: given ones (checked to be >= the crop), else Appendix B's {256, 384, 512}
    scaled to the crop size."""
    if scales is None:
        scales = [int(round(q * crop_size / 224)) for q in PAPER_SCALES]
    scales = [int(q) for q in scales]
    small = [q for q in scales if q < crop_size]
    if not scales or small:
        raise ValueError(f"feature scales {scales} must be non-empty and >= the crop size {crop_size}")
    return scales


@torch.inference_mode()
def image_descriptors(model: VGG, images: Tensor) -> Tensor:
    """(N, D) descriptors of one uint8 batch at its size: fc7 (after its ReLU) applied densely and
    averaged over the map, averaged with the same for the horizontally flipped images."""
    x = model.normalization(match_channels(images, model.in_channels))
    direct = model.forward_head(model.forward_features(x), pre_logits=True)
    flipped = model.forward_head(model.forward_features(x.flip(3)), pre_logits=True)
    return (direct + flipped).float() / 2


@dataclass
class Features:
    """L2-normalised image descriptors with their labels, class names and how they were made."""

    features: Tensor  # (N, D) float32
    labels: Tensor  # (N,) int64
    classes: list[str]
    info: dict = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """A safetensors file: tensors ``features`` and ``labels``, metadata ``vgg_features`` (JSON
        with classes and info)."""
        tensors = {"features": self.features.contiguous(), "labels": self.labels.contiguous()}
        meta = {METADATA_KEY: json.dumps({"classes": self.classes, "info": self.info})}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=meta))

    @classmethod
    def load(cls, path: str | Path) -> Features:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"features file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = (f.metadata() or {}).get(METADATA_KEY)
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as e:
            raise ValueError(f"{path} is not a readable safetensors file: {e}") from e
        if meta is None or set(tensors) != {"features", "labels"}:
            raise ValueError(f"{path} is not a features file written by `vgg features`")
        meta = json.loads(meta)
        return cls(tensors["features"], tensors["labels"], meta["classes"], meta.get("info", {}))


def extract_features(model: VGG, dataset: ImageDataset, *, scales: list[int] | None = None,
                     stack: bool = False, batch_size: int = 32, workers: int = 0,
                     device: str | torch.device = "cpu", ceil_mode: bool = True,
                     progress: bool = True) -> Features:
    """Appendix B's descriptors of every image of ``dataset``: per scale Q the dense, flip-averaged
    fc7 descriptor (:func:`image_descriptors`), then averaged over scales (``stack``: concatenated),
    then L2-normalised. The net pools as Caffe, so the whole image is seen (``ceil_mode=False``:
    PyTorch's floor, the last pixels of a side that is not a multiple of 32 left out). Images that
    could not be decoded are left out (and warned by the loader)."""
    scales = feature_scales(model.crop_size, scales)
    model = prepare_for_inference(model, device)
    n, dim = len(dataset), model.classifier[3].out_features
    # Stacked: one column block per scale; averaged: one running sum (memory of one scale).
    features = torch.zeros(n, dim * len(scales) if stack else dim)
    seen = torch.ones(n, dtype=torch.bool)
    for s, q in enumerate(scales):
        got = torch.zeros(n, dtype=torch.bool)
        columns = slice(s * dim, (s + 1) * dim) if stack else slice(0, dim)
        batches = eval_batches(dataset, scale=q, batch_size=batch_size, workers=workers, device=device)
        for images, _, index in tqdm(batches, desc=f"features Q={q}", disable=not progress):
            index = index.cpu()
            with caffe_pooling(model) if ceil_mode else nullcontext():
                features[index, columns] += image_descriptors(model, images).cpu()
            got[index] = True
        seen &= got
    if not stack:
        features /= len(scales)
    if not seen.all():
        warnings.warn(f"{int((~seen).sum())} of {n} images could not be read and have no features",
                      stacklevel=2)
    features = F.normalize(features[seen], dim=1)
    info = {"arch": model.arch, "scales": scales, "stack": stack, "dim": int(features.shape[1]),
            "pooling": "ceil" if ceil_mode else "floor",
            "data": getattr(dataset, "name", None), "split": getattr(dataset, "split", None)}
    return Features(features, dataset.labels[seen].clone(), list(dataset.classes), info)


def linear_probe(train: Features, test: Features | None = None, *, C: float = 1.0,
                 holdout: float = 0.2, seed: int = 0, max_iter: int = 10000) -> dict:
    """Train a linear SVM (scikit-learn's LinearSVC, one-vs-rest) on ``train`` and report its
    accuracy on ``test``, or on a stratified held-out ``holdout`` fraction of ``train`` without one."""
    try:
        from sklearn.model_selection import train_test_split
        from sklearn.svm import LinearSVC
    except ImportError as e:
        raise ValueError("the linear probe needs scikit-learn: pip install 'vgg[svm]'") from e
    if C <= 0:
        raise ValueError(f"C must be positive, got {C}")
    x, y = train.features.numpy(), train.labels.numpy()
    if test is not None:
        if test.classes != train.classes:
            raise ValueError(f"the test features' classes {test.classes[:5]}... differ from the "
                             f"training features' {train.classes[:5]}...")
        if test.features.shape[1] != x.shape[1]:
            raise ValueError(f"test features are {test.features.shape[1]}-D, training features "
                             f"{x.shape[1]}-D: extract both with the same net and scales")
        x_test, y_test = test.features.numpy(), test.labels.numpy()
    else:
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be in (0, 1), got {holdout}")
        x, x_test, y, y_test = train_test_split(x, y, test_size=holdout, random_state=seed,
                                                stratify=y if np.bincount(y).min() >= 2 else None)
    if len(np.unique(y)) < 2:
        raise ValueError("the linear probe needs training features of at least two classes")
    svm = LinearSVC(C=C, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ll]iblinear failed to converge.*")
        svm.fit(x, y)
    return {"train_accuracy": float((svm.predict(x) == y).mean()),
            "converged": bool(np.max(svm.n_iter_) < max_iter),
            "test_accuracy": float((svm.predict(x_test) == y_test).mean()),
            "train_images": int(len(y)), "test_images": int(len(y_test)), "dim": int(x.shape[1]),
            "C": C, "evaluated_on": "test features" if test is not None else f"held-out {holdout:g}"}
