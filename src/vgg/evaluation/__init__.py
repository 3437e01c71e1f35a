"""Every test protocol of the paper (Sec. 3.2, 4) as one rule: a method is a set of *views*
(net x scale x dense-or-crop x flip) and its prediction is the mean soft-max posterior over them.

A view is a small pure function of a uint8 batch already rescaled to its test scale Q: ``dense``
(the whole image through the fully-convolutional net, its class score map spatially averaged),
``centre`` (one centre crop, what the libraries report), ``grid`` (one of the 5x5 crops of Sec. 3.2),
each optionally flipped. Posteriors are averaged with weights: within one method every view counts
the same; dense+multi-crop averages the dense and the multi-crop posteriors (Sec. 4.3), each half
weighing 1/2; a fusion of nets averages the nets' posteriors (Sec. 4.4).

- :mod:`.views` (Sec. 3.2, 4.1, 4.2): the protocols, test scales Q, :class:`View` and the views of a
  method, channel matching; the crop geometry itself is :mod:`vgg.data.crops`;
- :mod:`.posteriors` (Sec. 3.2, 4.3, 4.4): a view's soft-max posterior, Caffe's pooling, the
  weighted averages per scale and the fusion of nets;
- :mod:`.metrics`: top-1 / top-5 error, per-class accuracy, the confusion matrix;
- :mod:`.protocols`: a data set under one or several protocols, the rows of Tables 3-6;
- :mod:`.predict`: the same rule on image files and folders; :mod:`.heatmap`: the dense class score
  map of an image's top class, drawn over it (``vgg predict --heatmap``);
- :mod:`.commands`: ``vgg evaluate`` and ``vgg predict``; their tables and plots are
  :mod:`vgg.report`.
"""

from .commands import EvalConfig, default_confusion_path, load_nets, run_evaluate, run_predict
from .heatmap import class_heatmap, draw_heatmap, write_heatmaps
from .metrics import confusion_matrix, metrics, topk_correct
from .posteriors import (
    Batches,
    ScalePosteriors,
    caffe_pooling,
    fused_posteriors,
    posterior,
    posteriors_by_scale,
    view_posteriors,
)
from .predict import image_files, predict, read_image
from .protocols import COMPONENTS, EvalResult, batches_by_size, common_classes, evaluate, evaluate_protocols
from .views import (
    GRID,
    LIBRARY_RATIO,
    PROTOCOLS,
    SCALE_STEP,
    View,
    check_scales,
    default_flip,
    default_scales,
    library_scale,
    match_channels,
    method_views,
    plan_views,
    scale_step,
    train_scale,
    view_box,
    view_images,
)

__all__ = [
    "COMPONENTS", "GRID", "LIBRARY_RATIO", "PROTOCOLS", "SCALE_STEP", "Batches", "EvalConfig",
    "EvalResult", "ScalePosteriors", "View", "batches_by_size", "caffe_pooling", "check_scales",
    "class_heatmap", "draw_heatmap", "write_heatmaps",
    "common_classes", "confusion_matrix", "default_confusion_path", "default_flip", "default_scales",
    "evaluate", "evaluate_protocols", "fused_posteriors", "image_files", "library_scale", "load_nets",
    "match_channels", "method_views", "metrics", "plan_views", "posterior", "posteriors_by_scale",
    "predict", "read_image", "run_evaluate", "run_predict", "scale_step", "topk_correct", "train_scale",
    "view_box", "view_images", "view_posteriors",
]
