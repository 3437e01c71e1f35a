"""Helpers shared by the evaluation tests: tiny nets, random images, an independent reference."""

import torch
import torch.nn.functional as F

import vgg
from support import order_one, spread_predictions
from vgg.models import Normalization

CROP = 32
FMNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
          "Ankle boot"]


def tiny(seed=0, classes=("a", "b", "c", "d", "e", "f"), in_channels=3, train_scale=(32, 48), spread_on=None):
    """A tiny net whose posteriors differ from image to image and between nets (order-1 logits,
    the classes spread over ``spread_on``, uint8 images of the crop size, by default random ones): an
    evaluation that mishandles the images shows."""
    torch.manual_seed(seed)
    model = vgg.create_model("A", num_classes=len(classes), crop_size=CROP, width=0.125,
                             in_channels=in_channels, init="glorot")
    model.classes = list(classes)
    model.normalization = Normalization((120.0,) * in_channels, (60.0,) * in_channels)
    model.info = {"train_scale": list(train_scale)}
    order_one(model, seed)
    if spread_on is None:
        spread_on = images(64, CROP, CROP, in_channels, seed=99)
    return spread_predictions(model, model.normalization(spread_on))


def images(n, h, w, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def rescale(x, q):
    """Shorter side to q, as the data pipeline does (a stand-in independent of vgg.data)."""
    h, w = x.shape[-2:]
    size = (q, round(w * q / h)) if h <= w else (round(h * q / w), q)
    y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def synthetic_batches(base):
    """batches(Q) over a list of images of different sizes, batched by size like eval_batches."""
    def batches(q):
        by_size = {}
        for i, x in enumerate(base):
            y = rescale(x[None], q)
            by_size.setdefault(tuple(y.shape[-2:]), []).append((i, y))
        for items in by_size.values():
            yield (torch.cat([y for _, y in items]), torch.zeros(len(items), dtype=torch.long),
                   torch.tensor([i for i, _ in items]))
    return batches


def softmax_of(model, x):
    """Independent reference: normalise by hand, run the net, soft-max."""
    mean = torch.tensor(model.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.normalization.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return F.softmax(model((x.float() - mean) / std), dim=1)
