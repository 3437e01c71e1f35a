"""What a run starts from: its data (the fixed val split, a subset of classes) and its net (fresh
from Table 1, pretrained weights, another run, or net A's transfer, Sec. 3.1)."""

from __future__ import annotations

import torch
from torch import nn

from .. import data
from ..models import VGG, Normalization, create_model, init_from_shallow
from ..weights import load_any, load_state
from .config import TrainConfig


def open_data(config: TrainConfig):
    # The held-out val split is fixed (seed 0), not the run's seed: nets trained with different seeds
    # must share it, or their val numbers and fusions would see each other's training images.
    kw = dict(limit=config.limit, val_size=config.val_size, seed=0, strict=config.strict)
    train_set = data.open_dataset(config.data, "train", **kw)
    val_set = data.open_dataset(config.data, "val", **kw)
    if config.classes is not None:
        return select_classes(train_set, config.classes), select_classes(val_set, config.classes)
    return train_set, val_set


def class_names(dataset, classes: list) -> list[str]:
    """The data set's names of ``classes`` (names, or indices into its class list), checked."""
    names = []
    for c in classes:
        if isinstance(c, str) and c in dataset.classes:
            names.append(c)
        elif str(c).isdigit() and int(c) < len(dataset.classes):
            names.append(dataset.classes[int(c)])
        else:
            raise ValueError(f"class {c!r} is not one of {dataset.name}'s classes: {dataset.classes}")
    if len(set(names)) != len(names):
        raise ValueError(f"classes {classes} name a class twice")
    return names


def select_classes(dataset, classes: list):
    """The images of some classes only (names, or indices into the data's class list), relabelled
    0..K-1 in the order given: e.g. a net pre-trained on half the classes, to fine-tune on all."""
    names = class_names(dataset, classes)
    keep = torch.tensor([dataset.classes.index(n) for n in names])
    mask = torch.isin(dataset.labels, keep)
    remap = torch.full((len(dataset.classes),), -1, dtype=torch.int64)
    remap[keep] = torch.arange(len(keep))
    labels = remap[dataset.labels[mask]]
    if isinstance(dataset, data.TensorDataset):
        return data.TensorDataset(dataset.images[mask], labels, names, dataset.name, dataset.split)
    idx = mask.nonzero().flatten().tolist()
    return data.FolderDataset([dataset.paths[i] for i in idx], labels.tolist(), names, dataset.name,
                              dataset.split)



def load_weights(spec: str) -> VGG:
    """Any weights for init_from / pretrained: our checkpoints and run folders, foreign formats,
    known names, URLs (:func:`vgg.weights.load_any`)."""
    return load_any(spec)


def adapt_input_channels(model: VGG, channels: int) -> None:
    """Fit an RGB net to greyscale data: a grey image is R = G = B, so the first conv's weights
    summed over its input channels see exactly what the RGB net saw (up to the normalisation's
    per-channel std, replaced by its mean)."""
    if model.in_channels == channels:
        return
    if channels != 1:
        raise ValueError(f"the net takes {model.in_channels}-channel images, the data has {channels}")
    conv = model.features[0]
    norm = model.normalization
    with torch.no_grad():
        std = torch.tensor(norm.std, dtype=conv.weight.dtype).view(1, -1, 1, 1)
        weight = (conv.weight / std).sum(1, keepdim=True) * (sum(norm.std) / len(norm.std))
        new = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding)
        new.weight.copy_(weight)
        new.bias.copy_(conv.bias)
    model.features[0] = new
    model.in_channels = 1
    model.normalization = Normalization((sum(norm.mean) / len(norm.mean),), (sum(norm.std) / len(norm.std),))


def build_model(config: TrainConfig, classes: list[str], channels: int, stats: dict) -> VGG:
    """The net to train: fresh (Table 1, initialised per ``config.init``), or from pretrained weights,
    a checkpoint (``init_from``), or a trained net A (``init_from_shallow``, Sec. 3.1)."""
    k = len(classes)
    if config.pretrained:
        model = load_weights(config.pretrained)
        adapt_input_channels(model, channels)
        if config.reset_head or model.num_classes != k:
            model.reset_classifier(k)
    else:
        model = create_model(config.arch, num_classes=k, batch_norm=config.batch_norm,
                             dropout=config.dropout, crop_size=config.crop_size, width=config.width,
                             init=config.init, in_channels=channels, init_std=config.init_std)
        # The paper subtracts the training set's mean RGB and nothing else (Sec. 2).
        model.normalization = Normalization(tuple(stats["mean"]), (1.0,) * channels)
        source = config.init_from or config.init_from_shallow
        if source:
            src = load_weights(source)
            adapt_input_channels(src, channels)
            model.normalization = src.normalization  # preprocessing travels with the weights
            if config.init_from_shallow:
                init_from_shallow(model, src)
            else:
                state = src.state_dict()
                if src.num_classes != k or config.reset_head:
                    head = {n: v for n, v in model.state_dict().items() if n.startswith("classifier.6.")}
                    state = {**{n: v for n, v in state.items() if not n.startswith("classifier.6.")}, **head}
                load_state(model, state, source=source)
    for m in model.classifier:
        if isinstance(m, nn.Dropout):
            m.p = config.dropout
    model.dropout = config.dropout
    model.classes = list(classes)
    return model

