"""Data: datasets (Fashion-MNIST, image folders), the paper's transforms, and batch loaders.

Training (Sec. 3.1): each image is isotropically rescaled so that its shorter side is S (fixed, or
drawn per image from [Smin, Smax]: scale jittering), one random crop_size crop is taken, randomly
flipped, and shifted in colour by AlexNet's PCA lighting noise. Testing (Sec. 3.2): the image is
rescaled to shorter side Q and used whole (dense), or cropped (centre, 5x5 grid + flips).

Two kinds of dataset share one interface (:class:`ImageDataset`):

- Fashion-MNIST lives in memory as uint8 and is augmented on tensors, a whole batch at once: the
  rescale-then-crop of each sample is one affine resampling of the source image (``grid_sample``),
  so no Python runs per image.
- Image folders are decoded by Pillow in DataLoader workers, straight to the uint8 crop: the crop's
  window is mapped back to the source image and only that window is resampled (``Image.resize`` with
  ``box``), after a DCT-domain JPEG down-scale (draft mode) when the image is at least 2x too large.

Every random choice of a training sample (its order in the epoch, S, the crop's position, the flip,
the colour shift) is a pure function of (seed, epoch, position in the epoch): one process or many,
workers or none, an uninterrupted epoch or one resumed at batch k, all see the same data.
Float conversion, flip, lighting and normalisation run on the device, batched.

The modules, in import order (each imports only those above it):

- ``sampling``: the counter-based randomness (seed, epoch, position) -> numbers; the epoch's order.
- ``augment``: Sec. 3.1, :class:`Augment`, rescaling to S or Q, crop boxes, batched crops, PCA lighting.
- ``crops``: crop geometry for training and testing: centre crop, the 5x5 grid (Sec. 3.2), flips.
- ``images``: decoding files (one extension list, bad files, EXIF, modes to RGB, draft-mode JPEG).
- ``datasets``: the :class:`ImageDataset` interface and the in-memory :class:`TensorDataset`.
- ``fashion_mnist``: its files, SHA-256 pins, mirrors, the IDX reader, the train/val split.
- ``workers``: what DataLoader worker processes run for image folders.
- ``folders``: :class:`FolderDataset`, :func:`open_folder`, the search for bad images.
- ``loaders``: :func:`train_batches`, :func:`eval_batches`, :class:`Batches`.
- ``statistics``: :func:`channel_statistics` (mean RGB, Sec. 2; PCA for the colour shift).
- ``boxes``: data sets with ground-truth boxes (App. A): cluttered Fashion-MNIST, folders with
  annotation files (read by :mod:`vgg.localization.annotations`).
- ``catalog``: :func:`open_dataset` by name, :func:`describe_dataset` (``vgg data``).
"""

from .augment import (
    Augment,
    augment_parameters,
    crop_boxes,
    crops_by_scale,
    lighting_shift,
    pca_lighting,
    rescale_shorter,
    rescaled_size,
    resized_crops,
)
from .boxes import (
    FASHION_MNIST_LOC,
    BoxData,
    BoxFolderDataset,
    BoxTensorDataset,
    boxes_for_split,
    has_boxes,
    open_box_dataset,
    sample_picture,
)
from .catalog import describe_dataset, open_dataset
from .crops import GRID, center_crop, centre_offset, crop, grid_crop, grid_crops, grid_offsets, hflip
from .datasets import ImageDataset, TensorDataset
from .fashion_mnist import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FILES,
    FASHION_MNIST_MIRRORS,
    FASHION_MNIST_SYSTEM_DIR,
    download_fashion_mnist,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
    split_fashion_mnist,
)
from .folders import FolderDataset, bad_images, check_images, open_folder
from .images import (
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    BadImage,
    decode_rescaled,
    decode_train_crop,
    load_image,
    open_image,
    oriented_size,
    to_rgb,
)
from .loaders import Batches, eval_batches, train_batches
from .sampling import epoch_order, sample_normal, sample_uniform
from .statistics import channel_statistics

__all__ = [
    # datasets
    "ImageDataset", "TensorDataset", "FolderDataset", "open_dataset", "open_folder", "describe_dataset",
    "bad_images", "check_images",
    # data sets with boxes (App. A)
    "FASHION_MNIST_LOC", "BoxData", "BoxTensorDataset", "BoxFolderDataset", "open_box_dataset", "has_boxes",
    "boxes_for_split", "sample_picture",
    # Fashion-MNIST
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "FASHION_MNIST_MIRRORS", "FASHION_MNIST_SYSTEM_DIR",
    "find_fashion_mnist", "download_fashion_mnist", "read_idx", "load_fashion_mnist", "split_fashion_mnist",
    # images
    "IMAGE_EXTENSIONS", "MAX_PIXELS", "BadImage", "open_image", "oriented_size", "to_rgb", "load_image",
    "decode_train_crop", "decode_rescaled",
    # randomness
    "sample_uniform", "sample_normal", "epoch_order",
    # augmentation (Sec. 3.1)
    "Augment", "rescaled_size", "rescale_shorter", "crop_boxes", "resized_crops", "crops_by_scale",
    "pca_lighting", "lighting_shift", "augment_parameters",
    # crops (Sec. 3.1, 3.2)
    "GRID", "crop", "centre_offset", "center_crop", "grid_offsets", "grid_crop", "grid_crops", "hflip",
    # loaders and statistics
    "Batches", "train_batches", "eval_batches", "channel_statistics",
]
