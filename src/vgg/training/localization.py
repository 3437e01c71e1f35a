"""The localisation task (App. A.1): a VGG whose last FC layer regresses a box, trained by the loop
of :mod:`.loop` with the same machinery as classification (recipes, resume, DDP, logs, NaN guard).

- The net: every layer of a trained classification net but the last, which is replaced by a random
  one (N(0, init_std), zero bias) of 4 outputs (SCR, single-class regression: one box shared by all
  classes) or 4 x classes outputs (PCR, per-class regression: class c's box is outputs
  ``4c .. 4c+3``). Its ``model.info["localization"]`` keeps the head, the box encoding and the class
  list; :func:`is_localization` tells a localisation checkpoint from a classifier.
- The box encoding (:mod:`vgg.localization.boxes`): ``(cx, cy, w, h)`` of the box relative to the
  window the net saw, divided by its size, so a training crop's box lies in [0, 1] and a dense
  application gives one box per window, in that window's frame.
- Targets: each image's box (the largest of its class, :class:`vgg.data.BoxData`) follows the
  training crop: rescaled to S, cropped, flipped, clipped to the crop
  (:func:`vgg.localization.transform_boxes`); a crop that keeps less than half of the box's area
  gives the sample weight 0 (down-weighted rather than redrawn: the crops stay pure functions of
  (seed, epoch, position), so exact resume and any world size still see the same data).
- Loss (A.1: "the logistic regression objective is replaced with a Euclidean loss"): the summed
  squared error of the four box parameters, for PCR of the true class's box only; weight-0 samples
  add nothing (the loop divides by the batch's images, so they count as zero-loss samples).
- Metric: localisation accuracy (%) with the true class, the box counting as correct when its IoU
  with a box of that class exceeds 0.5 (A.2); in validation on the centre crop at the one test scale
  Q, as protocol 1 (Table 8). Its records are ``train_loc_accuracy`` (on the augmented crops against
  their clipped boxes) and ``val_loc_accuracy``, which the plateau and the best checkpoint watch.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from .. import data
from ..data.crops import centre_offset
from ..localization.boxes import cxcywh_to_xyxy, decode, elementwise_iou, encode, transform_boxes
from ..models import VGG
from .build import class_names

__all__ = ["ENCODING", "HEADS", "Localization", "box_outputs", "box_params", "build_localization_net",
           "is_localization", "localization_info", "open_box_data", "select_box_classes"]

HEADS = ("pcr", "scr")
ENCODING = ("cxcywh-window: (centre x, centre y, width, height) of the box relative to the window the "
            "net saw, x and w divided by its width, y and h by its height")
IOU_THRESHOLD = 0.5  # A.2: correct when the IoU with a ground-truth box of the class exceeds 0.5


def box_outputs(head: str, num_classes: int) -> int:
    """The last layer's outputs: 4 (SCR) or 4 x classes (PCR)."""
    if head not in HEADS:
        raise ValueError(f"head must be pcr or scr, got {head!r}")
    return 4 if head == "scr" else 4 * num_classes


def localization_info(model: VGG) -> dict | None:
    """The localisation metadata of a net (head, encoding, classes), None for a classifier."""
    return (model.info or {}).get("localization")


def is_localization(model: VGG) -> bool:
    return localization_info(model) is not None


def build_localization_net(source: VGG, head: str, classes: list[str], *, init_std: float = 0.01,
                           dropout: float = 0.5, origin: str = "") -> VGG:
    """A.1: the classification net ``source`` (changed in place) with its last FC layer replaced by a
    random box regressor for ``head`` over ``classes``; the preprocessing stays the source's."""
    source.reset_classifier(box_outputs(head, len(classes)), init_std=init_std)
    for m in source.classifier:
        if isinstance(m, nn.Dropout):
            m.p = dropout
    source.dropout = dropout
    source.classes = list(classes)
    source.info = {"localization": {"head": head, "encoding": ENCODING, "classes": list(classes),
                                    "init_from": origin}}
    return source


def box_params(outputs: Tensor, labels: Tensor) -> Tensor:
    """(N, 4) float32: the true class's box parameters (PCR, outputs (N, 4C)) or the shared box (SCR,
    outputs (N, 4))."""
    out = outputs.float().reshape(len(outputs), -1)
    if out.shape[1] == 4:
        return out
    return out.view(len(out), -1, 4)[torch.arange(len(out), device=out.device), labels]


# -- data ----------------------------------------------------------------------------------------------

def select_box_classes(dataset, classes: list):
    """The images of some classes only, relabelled 0..K-1 in the order given (as
    :func:`vgg.training.select_classes`), their boxes of other classes dropped."""
    names = class_names(dataset, classes)
    remap = torch.full((len(dataset.classes) + 1,), -1, dtype=torch.int64)  # index -1: padding
    for new, name in enumerate(names):
        remap[dataset.classes.index(name)] = new
    keep = remap[dataset.labels] >= 0
    labels = remap[dataset.labels[keep]]
    gt_labels = remap[dataset.gt_labels[keep]]
    gt_boxes = torch.where((gt_labels >= 0)[..., None], dataset.gt_boxes[keep], math.nan)
    if isinstance(dataset, data.TensorDataset):
        return data.BoxTensorDataset(dataset.images[keep], labels, names, dataset.name, dataset.split,
                                     gt_boxes, gt_labels, dataset.problems)
    idx = keep.nonzero().flatten().tolist()
    return data.BoxFolderDataset([dataset.paths[i] for i in idx], labels.tolist(), names, dataset.name,
                                 dataset.split, gt_boxes, gt_labels, dataset.problems)


def open_box_data(config):
    """(train, val) with boxes: ``config.data`` (``fashion-mnist-loc`` or a folder with annotations,
    ``config.boxes`` naming the files), the fixed val split; bad annotations refused with
    ``config.strict``, else skipped, printed here and logged with the skipped files."""
    kw = dict(limit=config.limit, val_size=config.val_size, seed=0, strict=config.strict, boxes=config.boxes)
    sets = [data.open_box_dataset(config.data, split, **kw) for split in ("train", "val")]
    if config.classes is not None:
        sets = [select_box_classes(s, config.classes) for s in sets]
    for s in sets:
        if s.problems:
            shown = "; ".join(f"{w}: {r}" for w, r in s.problems[:5])
            print(f"{s.name} {s.split}: skipped {len(s.problems)} box annotation problem(s) (--strict "
                  f"refuses them): {shown}{' ...' if len(s.problems) > 5 else ''}", flush=True)
    return tuple(sets)


def _indexed(dataset):
    """The same images with each image's dataset index as its label: the loaders then tell which
    images a batch holds (an unreadable file leaves its batch, so positions alone would not)."""
    cached = getattr(dataset, "_indexed_view", None)
    if cached is None:
        n = len(dataset)
        if isinstance(dataset, data.TensorDataset):
            cached = data.TensorDataset(dataset.images, torch.arange(n), dataset.classes, dataset.name,
                                        dataset.split)
        else:  # kept, so that its persistent DataLoader workers serve every epoch
            cached = data.FolderDataset(dataset.paths, list(range(n)), dataset.classes, dataset.name,
                                        dataset.split)
        dataset._indexed_view = cached
    return cached


def _as_batches(inner: data.Batches, generate, problems) -> data.Batches:
    out = data.Batches(len(inner), generate)
    out.skipped = inner.skipped  # the loop reads the undecodable files from here after the epoch
    for p in problems:  # and the skipped annotations go into the run's log with them
        if p not in out.skipped:
            out.skipped.append(p)
    return out


UNIT = torch.tensor([0.0, 0.0, 1.0, 1.0])  # a crop's own frame, divided by its size


class Localization:
    """Box regression (App. A.1) as a task of the training loop; see the module."""

    name = "localization"
    metric = "loc_accuracy"
    label = "loc"

    def __init__(self, head: str = "pcr", crop_size: int = 224):
        box_outputs(head, 1)  # checks the head
        self.head, self.crop_size = head, crop_size

    def build_model(self, config, classes: list[str], channels: int, stats: dict) -> VGG:
        from .build import adapt_input_channels, load_weights

        source = config.init_from or config.pretrained
        model = load_weights(source)
        if is_localization(model):
            raise ValueError(f"{source} is a localisation net; --init-from takes a classification net "
                             "(App. A.1: the localisation nets are initialised from the classifiers)")
        adapt_input_channels(model, channels)
        if model.crop_size != config.crop_size:
            raise ValueError(f"{source} takes {model.crop_size}x{model.crop_size} crops; the localisation "
                             f"net keeps its architecture: give --crop-size {model.crop_size} (and an S "
                             "to match)")
        return build_localization_net(model, self.head, classes, init_std=config.init_std,
                                      dropout=config.dropout, origin=str(source))

    def open_data(self, config) -> tuple:
        return open_box_data(config)

    def test(self, config, out, ctx, log, step: int) -> dict | None:
        return run_localization_test(config, out, ctx, log, step)

    def train_batches(self, dataset, *, augment, seed: int, epoch: int, **kwargs):
        """The classification batches of :func:`vgg.data.train_batches` (the same crops, flips and
        colour shifts), each with its boxes moved by the same crop and flip."""
        inner = data.train_batches(_indexed(dataset), augment=augment, seed=seed, epoch=epoch, **kwargs)
        order = data.epoch_order(len(dataset), seed, epoch).numpy()
        position = np.empty_like(order)
        position[order] = np.arange(len(order))
        sizes = dataset.image_sizes().numpy()
        targets = dataset.target_boxes()
        crop = augment.crop_size

        def generate(batches: data.Batches):
            for images, index in inner:
                idx = index.cpu()
                ix = idx.numpy()
                p = data.augment_parameters(augment, seed, epoch, position[ix], sizes[ix, 0], sizes[ix, 1])
                # The crop's box is in source pixels (the loaders' crop_boxes), so no rescale: scale 1.
                box, weight = transform_boxes(targets[idx], 1.0, torch.from_numpy(p["box"]),
                                              torch.from_numpy(p["flip"]), crop)
                enc = encode(box, UNIT * crop)
                yield images, self._targets(dataset.labels[idx], enc, weight, enc[:, None], images.device)

        return _as_batches(inner, generate, dataset.problems)

    def val_batches(self, dataset, *, scale: int, batch_size: int, workers: int = 0, device="cpu"):
        """Protocol 1 (A.2, Table 8): each image rescaled to Q, its centre crop, the true class's
        boxes in the crop's frame (not clipped: a box the crop cuts must still be found whole)."""
        inner = data.eval_batches(dataset, scale=scale, batch_size=batch_size, workers=workers,
                                  device=device)
        sizes = dataset.image_sizes().float()
        targets = dataset.target_boxes()
        crop = self.crop_size

        def generate(batches: data.Batches):
            for images, labels, index in inner:
                idx = index.cpu()
                h, w = images.shape[-2:]
                top, left = centre_offset(h, crop), centre_offset(w, crop)
                factor = torch.stack([w / sizes[idx, 1], h / sizes[idx, 0]], dim=1)
                window = torch.tensor([left, top, left + crop, top + crop], dtype=torch.float32)
                gt = dataset.own_boxes(idx) * torch.cat([factor, factor], dim=1)[:, None]
                box, weight = transform_boxes(targets[idx], factor, window, False, crop)
                x = data.center_crop(images, crop)
                yield x, self._targets(labels.cpu(), encode(box, UNIT * crop), weight,
                                       encode(gt, window), images.device), index

        return _as_batches(inner, generate, [])

    @staticmethod
    def _targets(labels, boxes, weights, gt, device) -> dict:
        return {"labels": labels.to(device), "boxes": boxes.to(device), "weights": weights.to(device),
                "gt": gt.to(device)}

    def outputs(self, model, images: Tensor) -> Tensor:
        # Validation batches are already the centre crops (val_batches); on a crop the map is 1x1.
        return model(images)

    def loss(self, outputs: Tensor, targets: dict) -> Tensor:
        """A.1's Euclidean loss, summed over the batch: ``weight * |params - target|^2`` of the true
        class's box (PCR) or the shared one (SCR), in fp32 whatever the autocast."""
        diff = box_params(outputs, targets["labels"]) - targets["boxes"]
        return (targets["weights"] * diff.pow(2).sum(1)).sum()

    def correct(self, outputs: Tensor, targets: dict) -> Tensor:
        """Images whose box overlaps a true box of their class by IoU > 0.5 (A.2)."""
        unit = UNIT.to(outputs.device)
        pred = decode(box_params(outputs, targets["labels"]).detach(), unit)
        gt = cxcywh_to_xyxy(targets["gt"])  # (N, G, 4), NaN padding gives IoU 0
        iou = elementwise_iou(pred[:, None], gt)
        return (iou > IOU_THRESHOLD).any(1).sum()


def run_localization_test(config, out, ctx, log, step: int) -> dict | None:
    """``--test`` of a localisation run: the best checkpoint on the test split under protocol 1 of
    A.2 (the centre crop at Q = S, the true class's box: Table 8's number)."""
    from ..evaluation.localization import evaluate_localization
    from ..weights import BEST, load_model

    if not ctx.main:
        return None
    try:
        test_set = data.open_box_dataset(config.data, "test", limit=config.limit, val_size=config.val_size,
                                         strict=config.strict, boxes=config.boxes)
    except FileNotFoundError as e:
        print(f"no test split to evaluate: {e}")
        return None
    if config.classes is not None:
        test_set = select_box_classes(test_set, config.classes)
    model = load_model(out, device=ctx.device)
    result = evaluate_localization([model], test_set, names=[str(out / BEST)], protocol="centre",
                                   gt_class=True, batch_size=256).summary()
    record = {"event": "test", "step": step, "protocol": "centre", "gt_class": True,
              "scales": result["scales"], "images": result["images"],
              "localization_error_gt_class": result["localization_error_gt_class"],
              "seconds": result["seconds"]}
    if log is not None:
        log.write(record)
    print(f"test ({record['images']} images, centre crop, Q={record['scales']}, true class): localisation "
          f"error {record['localization_error_gt_class']:.2f}%", flush=True)
    return record
