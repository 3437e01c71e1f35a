"""Channel statistics of a training set: the paper's mean RGB (Sec. 2) and the pixel covariance's
eigen-decomposition for AlexNet's PCA colour shift (Sec. 3.1)."""

from __future__ import annotations

import os

import numpy as np
import torch

from .datasets import ImageDataset, TensorDataset
from .loaders import eval_batches


def channel_statistics(dataset: ImageDataset, *, max_images: int = 10000, seed: int = 0) -> dict:
    """Per-channel pixel mean and the eigen-decomposition of the pixel covariance (0-255 scale) over up
    to ``max_images`` images drawn with ``seed``: {"mean": [C], "eigval": [C], "eigvec": [[C x C]]}.

    "mean" is the paper's mean RGB (Sec. 2). eigvec's columns are the principal components, largest
    first; eigval follows the convention of AlexNet's re-implementations (Caffe, fb.resnet.torch):
    the covariance eigenvalues of 0-1 pixels, times 255, so that ``alpha * eigval`` (alpha ~ N(0, 0.1))
    is the colour shift in 0-255 units (ImageNet gives about [55.5, 4.8, 1.1]).
    """
    n = len(dataset)
    take = np.sort(np.random.default_rng(seed).permutation(n)[:max_images]) if n > max_images \
        else np.arange(n)
    c = dataset.channels
    total = np.zeros(c)
    outer = np.zeros((c, c))
    count = 0
    for pixels in _pixels(dataset, take):  # (C, P) float64 chunks
        total += pixels.sum(1)
        outer += pixels @ pixels.T
        count += pixels.shape[1]
    if count == 0:
        raise ValueError(f"{dataset.name} {dataset.split}: no readable images for channel statistics")
    mean = total / count
    cov = outer / count - np.outer(mean, mean)
    val, vec = np.linalg.eigh(cov / 255.0 ** 2)
    order = np.argsort(val)[::-1]
    val, vec = np.clip(val[order], 0, None) * 255.0, vec[:, order]
    vec = vec * np.where(vec.sum(0) < 0, -1.0, 1.0)  # a fixed sign per component
    return {"mean": mean.tolist(), "eigval": val.tolist(), "eigvec": vec.tolist()}


def _pixels(dataset: ImageDataset, take: np.ndarray):
    if isinstance(dataset, TensorDataset):
        for start in range(0, len(take), 1024):
            chunk = dataset.images[torch.from_numpy(take[start:start + 1024])]
            yield chunk.permute(1, 0, 2, 3).reshape(dataset.channels, -1).double().numpy()
        return
    # Folders: colour statistics of the images rescaled to shorter side 256 (the paper's smallest S).
    subset = dataset.subset(take.tolist())
    batches = eval_batches(subset, scale=256, batch_size=1, workers=min(4, os.cpu_count() or 1))
    for images, _, _ in batches:
        yield images.reshape(3, -1).double().numpy()
