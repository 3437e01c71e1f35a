"""Appendix A, localisation: boxes and their encoding (:mod:`.boxes`), OverFeat's greedy merge and the
final (class, box) guesses (:mod:`.merge`), ground-truth readers (:mod:`.annotations`), the cluttered
Fashion-MNIST data set (:mod:`.cluttered`) and pictures of boxes (:mod:`.draw`).

Wired into the rest of the package: the data sets with boxes (``fashion-mnist-loc``, folders with
annotations) are :mod:`vgg.data.boxes`; the net, its targets, loss and metric, the task the training
loop runs (``vgg train --task localization``), :mod:`vgg.training.localization`; the testing
protocols of A.2 (centre crop with the true class, dense with a classifier's scores, top-1/top-5
localisation error), :mod:`vgg.evaluation.localization`, and ``vgg evaluate`` / ``vgg predict`` for
localisation nets, :mod:`vgg.evaluation.localization_commands`; its ONNX graph, :mod:`vgg.export`."""

from .annotations import (
    Annotation,
    find_annotations,
    image_sizes,
    load_boxes,
    match_images,
    read_annotations,
    read_boxes_csv,
    read_kaggle_csv,
    read_voc,
)
from .boxes import (
    area,
    box_iou,
    clip_boxes,
    cxcywh_to_xyxy,
    decode,
    dense_windows,
    elementwise_iou,
    encode,
    hflip_boxes,
    localization_correct,
    rescale_boxes,
    to_original,
    transform_boxes,
    xyxy_to_cxcywh,
)
from .cluttered import load_cluttered, make_cluttered, tight_boxes
from .draw import draw_boxes, sample_grid
from .merge import (
    Detections,
    best_per_class,
    dense_boxes,
    greedy_merge,
    match_scores,
    merge_per_class,
    top_classes,
    top_k_predictions,
)

__all__ = [
    "Annotation", "Detections", "area", "best_per_class", "box_iou", "clip_boxes", "cxcywh_to_xyxy",
    "decode", "dense_boxes", "dense_windows", "draw_boxes", "elementwise_iou", "encode",
    "find_annotations", "greedy_merge", "hflip_boxes", "image_sizes", "load_boxes", "load_cluttered",
    "localization_correct", "make_cluttered", "match_images", "match_scores", "merge_per_class",
    "read_annotations", "read_boxes_csv", "read_kaggle_csv", "read_voc", "rescale_boxes",
    "sample_grid", "tight_boxes", "to_original", "top_classes", "top_k_predictions", "transform_boxes",
    "xyxy_to_cxcywh",
]
