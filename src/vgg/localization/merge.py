"""From dense box predictions to the final (class, box) guesses: OverFeat's greedy merge (App. A.1).

Appendix A, testing protocol 2: the localisation net runs densely over the whole image (Sec. 3.2),
giving a box per position and class instead of a class score map; "to come up with the final
prediction, we utilise the greedy merging procedure of Sermanet et al. (2014), which first merges
spatially close predictions (by averaging their coordinates), and then rates them based on the class
scores, obtained from the classification ConvNet". OverFeat's procedure (Sec. 4.3 there):

(a) per scale, the top-k classes (by their maximum score over the map's positions);
(b) the boxes predicted for those classes at every position (and scale);
(c)-(g) repeatedly take the pair of boxes with the best ``match_score``; stop when it is worse than a
    threshold, else replace the pair by their merge (the mean of the coordinates);
and a merged box's confidence is the sum of the class scores of the windows its boxes came from.

OverFeat gives the match score only in words ("the sum of the distance between centers of the two
bounding boxes and the intersection area of the boxes"), which adds a length to an area. We keep its
two ingredients, made scale-free so that one threshold serves every image size and test scale::

    match(a, b) = |centre(a) - centre(b)| / mean size + (1 - IoU(a, b))

with mean size the mean over both boxes of (width + height) / 2. It is 0 for identical boxes, about
0.83 for two equal boxes overlapping at IoU 0.5, and above 1 for disjoint boxes; the default
threshold 1.0 merges boxes that overlap by IoU >~ 0.4. A merged box is the mean of *all* the boxes it
came from (the plain mean, as OverFeat's "average of the bounding boxes' coordinates"; the
repeated-pair mean would weigh the last box merged as much as all the earlier ones), or with
``weighted=True`` their mean weighted by the windows' class scores. Boxes are merged per class:
boxes of different classes are different guesses.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .boxes import as_boxes, box_iou, decode, dense_windows, hflip_boxes, to_original

__all__ = ["Detections", "best_per_class", "dense_boxes", "greedy_merge", "match_scores",
           "merge_per_class", "top_k_predictions", "top_classes", "MERGE_THRESHOLD"]

MERGE_THRESHOLD = 1.0


class Detections(NamedTuple):
    """Boxes (M, 4) with their confidences (M,) and class indices (M,), ranked by confidence."""

    boxes: Tensor
    scores: Tensor
    labels: Tensor


def match_scores(a, b) -> Tensor:
    """OverFeat's match score of every pair (N, 4) x (M, 4) -> (N, M); lower is closer (see module)."""
    a, b = as_boxes(a).double(), as_boxes(b).double()
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    size_a = ((a[:, 2] - a[:, 0]) + (a[:, 3] - a[:, 1])) / 2
    size_b = ((b[:, 2] - b[:, 0]) + (b[:, 3] - b[:, 1])) / 2
    mean_size = ((size_a[:, None] + size_b[None, :]) / 2).clamp(min=1e-12)
    # The distances written out: torch.cdist costs milliseconds a call on the few boxes merged here.
    dist = (ca[:, None, :] - cb[None, :, :]).pow(2).sum(-1).sqrt()
    return dist / mean_size + (1 - box_iou(a, b))


def _match_row(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """:func:`match_scores` of one box (4,) against (N, 4), in numpy (the merge loop's inner step:
    numpy's per-call cost is a fraction of torch's on a few hundred elements)."""
    centre = (box[:2] + box[2:]) / 2
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    dist = np.sqrt(((centres - centre) ** 2).sum(axis=1))
    size = ((box[2] - box[0]) + (box[3] - box[1])) / 2
    sizes = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1])) / 2
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + \
        (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return dist / np.maximum((size + sizes) / 2, 1e-12) + (1 - iou)


def greedy_merge(boxes, scores, *, threshold: float = MERGE_THRESHOLD,
                 weighted: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """OverFeat's greedy merge of one class's boxes (N, 4) with their windows' class scores (N,).

    Returns ``(boxes (M, 4), confidences (M,), members (N,))``: the merged boxes ranked by confidence
    (the sum of the scores of the boxes each came from), and for each input box the index of the
    merged box it went into. Each step merges the closest pair (lowest :func:`match_scores`) while
    that score is <= ``threshold``; a merged box is the mean of its members (``weighted``: weighted
    by their scores). Ties go to the lowest indices, so the result is deterministic.

    One (N, N) score matrix and each row's minimum are kept; a step recomputes the merged box's row
    and the rows whose minimum pointed at the pair, so 500 boxes merge in well under a second.
    """
    dtype = as_boxes(boxes).dtype
    b = as_boxes(boxes).double().reshape(-1, 4).numpy()
    s = torch.as_tensor(scores, dtype=torch.float64).reshape(-1).numpy()
    if len(b) != len(s):
        raise ValueError(f"{len(b)} boxes but {len(s)} scores")
    n = len(b)
    if weighted and (s <= 0).any():
        raise ValueError("weighted merging needs positive scores (soft-max posteriors)")
    w = s.copy() if weighted else np.ones(n)
    sums = b * w[:, None]  # running weighted coordinate sums of each cluster
    weight, conf = w.copy(), s.copy()
    owner = np.arange(n)  # the cluster each input box belongs to
    alive = np.ones(n, dtype=bool)
    m = match_scores(torch.from_numpy(b), torch.from_numpy(b)).numpy()
    np.fill_diagonal(m, np.inf)
    arg = m.argmin(axis=1) if n else np.zeros(0, dtype=np.int64)
    best = m[np.arange(n), arg]
    for _ in range(n - 1):
        i = int(best.argmin())
        j = int(arg[i])
        if not best[i] <= threshold:
            break
        i, j = min(i, j), max(i, j)  # the merged cluster keeps the lower index
        sums[i] += sums[j]
        weight[i] += weight[j]
        conf[i] += conf[j]
        owner[owner == j] = i
        alive[j] = False
        m[j, :] = np.inf
        m[:, j] = np.inf
        best[j] = np.inf
        row = np.where(alive, _match_row(sums[i] / weight[i], sums / weight[:, None]), np.inf)
        row[i] = np.inf
        m[i, :] = row
        m[:, i] = row
        # Rows whose closest box was i or j are rescanned; the others can only get closer to i.
        stale = np.flatnonzero(alive & ((arg == i) | (arg == j)))
        stale = np.union1d(stale, [i])
        closer = alive & (row < best)
        arg[closer], best[closer] = i, row[closer]
        if len(stale):
            arg[stale] = m[stale].argmin(axis=1)
            best[stale] = m[stale, arg[stale]]
    keep = np.flatnonzero(alive)
    order = keep[np.argsort(-conf[keep], kind="stable")]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(len(order))
    merged = sums[order] / weight[order, None]
    return (torch.from_numpy(merged).to(dtype), torch.from_numpy(conf[order]).to(dtype),
            torch.from_numpy(rank[owner]))


def merge_per_class(boxes, scores, labels, *, threshold: float = MERGE_THRESHOLD,
                    weighted: bool = False) -> Detections:
    """:func:`greedy_merge` of each class's boxes separately; all merged boxes ranked by confidence."""
    b = as_boxes(boxes).reshape(-1, 4)
    s = torch.as_tensor(scores).reshape(-1)
    lab = torch.as_tensor(labels).reshape(-1).long()
    out_b, out_s, out_l = [], [], []
    for c in torch.unique(lab).tolist():
        sel = lab == c
        mb, ms, _ = greedy_merge(b[sel], s[sel], threshold=threshold, weighted=weighted)
        out_b.append(mb)
        out_s.append(ms.to(torch.float64))
        out_l.append(torch.full((len(mb),), c, dtype=torch.long))
    if not out_b:
        return Detections(b.new_zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    mb, ms, ml = torch.cat(out_b), torch.cat(out_s), torch.cat(out_l)
    order = torch.argsort(ms, descending=True, stable=True)
    return Detections(mb[order], ms[order].float(), ml[order])


def top_classes(score_map, k: int = 5) -> Tensor:
    """OverFeat's step (a): the k classes with the highest maximum score over a (C, H, W) score map."""
    s = torch.as_tensor(score_map)
    best = s.reshape(s.shape[0], -1).amax(dim=1)
    return torch.argsort(best, descending=True, stable=True)[:k]


def dense_boxes(params_map, score_map, *, crop_size: int, factor=1.0, stride: int = 32, k: int = 5,
                flipped: bool = False, width: int | None = None) -> Detections:
    """Steps (a)-(b) for one dense application (one scale, one net, one flip): every position's box
    for the top-``k`` classes, with that position's class score, in original-image pixels.

    ``params_map``: the localisation net's output, (C, 4, H, W) per-class regression (PCR) or
    (4, H, W) single-class (SCR: one box for every class), encoded as :func:`~.boxes.encode` relative
    to each position's window (:func:`~.boxes.dense_windows`). ``score_map``: the classification
    net's (C, H, W) class scores (soft-max posteriors) on the same input, same positions. ``factor``:
    the rescale from the original image to this input (number or (fx, fy)). ``flipped``: the input was
    the mirrored image, ``width`` pixels wide (the rescaled width), so boxes are mirrored back.
    Unmerged (``labels`` = class, ``scores`` = the window's score for it); concatenate the
    :class:`Detections` of every scale and net (A.1: "the union of their boxes"), then merge.
    """
    p = torch.as_tensor(params_map)
    s = torch.as_tensor(score_map)
    if p.dim() == 3:
        p = p[None]  # SCR: one box shared by all classes
    if p.shape[-3] != 4 or p.shape[-2:] != s.shape[-2:] or p.shape[0] not in (1, s.shape[0]):
        raise ValueError(f"box map {tuple(torch.as_tensor(params_map).shape)} does not fit score map "
                         f"{tuple(s.shape)}: expected (C, 4, H, W) or (4, H, W) with the same H, W")
    if flipped and width is None:
        raise ValueError("flipped=True needs the width of the mirrored input")
    h, w = s.shape[-2:]
    classes = top_classes(s, k)
    windows = dense_windows(h, w, crop_size, stride).reshape(-1, 4)
    boxes, scores, labels = [], [], []
    for c in classes.tolist():
        params = p[c if p.shape[0] > 1 else 0].reshape(4, -1).T  # (H*W, 4), positions row-major
        box = decode(params.float(), windows)
        if flipped:
            box = hflip_boxes(box, width)
        boxes.append(to_original(box, factor))
        scores.append(s[c].reshape(-1).float())
        labels.append(torch.full((h * w,), c, dtype=torch.long))
    return Detections(torch.cat(boxes).float(), torch.cat(scores), torch.cat(labels))


def best_per_class(detections: Detections, num_classes: int) -> tuple[Tensor, Tensor]:
    """Each class's most confident box: ``(boxes (C, 4), scores (C,))``, score -inf (box NaN) for a
    class without any box."""
    labels = detections.labels.long()
    n = len(labels)
    # Detections are ranked, so each class's first box is its best: the smallest index per class.
    first = torch.full((num_classes,), n, dtype=torch.long)
    first.scatter_reduce_(0, labels, torch.arange(n), reduce="amin")
    has = first < n
    boxes = torch.full((num_classes, 4), float("nan"))
    scores = torch.full((num_classes,), float("-inf"))
    boxes[has] = detections.boxes[first[has]].float()
    scores[has] = detections.scores[first[has]].float()
    return boxes, scores


def top_k_predictions(class_scores, class_boxes, k: int = 5) -> tuple[Tensor, Tensor, Tensor]:
    """ILSVRC's k guesses from per-class boxes and class scores: ``(labels (k,), boxes (k, 4), scores
    (k,))``, the k highest-scoring classes, each with its box.

    ``class_boxes`` is (C, 4) (PCR, or :func:`best_per_class` after merging) or (4,) / (1, 4) (SCR: the
    one box goes with every class). A.1's protocol 1 is this on the central crop's outputs (there
    scored by the true class only); protocol 2 is this on :func:`best_per_class` of the merged boxes.
    Classes scored -inf (no box) are left out, so fewer than k guesses may come back.
    """
    s = torch.as_tensor(class_scores, dtype=torch.float32).reshape(-1)
    b = as_boxes(class_boxes).reshape(-1, 4)
    if len(b) == 1:
        b = b.expand(len(s), 4)
    if len(b) != len(s):
        raise ValueError(f"{len(s)} class scores but {len(b)} class boxes")
    order = torch.argsort(s, descending=True, stable=True)[:k]
    order = order[s[order] > float("-inf")]
    return order, b[order], s[order]
