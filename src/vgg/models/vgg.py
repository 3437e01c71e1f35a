"""The VGG network of Table 1, as one builder over the table.

Every network is a flat ``features`` stack (conv, [bn], relu, ..., max-pool) followed by the paper's
three FC layers. The FC layers keep torchvision's ``nn.Linear`` shapes (so the world's checkpoints
load unchanged) but run as convolutions over the feature map (Sec. 3.2, dense evaluation): on a
crop_size input the map is exactly the first layer's kernel and the head is a plain matmul; on a
larger input the same weights slide over the map and give the class score map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .init import init_weights
from .table import CONFIGS, FC_WIDTH, LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, NAMES, parse_arch, scaled


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become network input: ``(pixel - mean) / std`` on the 0-255 scale.

    The paper subtracts the training set's mean RGB (std 1, Sec. 2); torchvision's weights expect
    mean/std normalisation of 0-1 RGB (the same thing with both scaled by 255); Caffe's and Keras'
    weights expect BGR channel order with mean subtraction. The normalisation belongs to the weights
    and is stored with every checkpoint.
    """

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bgr: bool = False

    def __post_init__(self):
        if len(self.mean) != len(self.std):
            raise ValueError(f"normalization mean {self.mean} and std {self.std} differ in length")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"normalization std must be positive, got {self.std}")
        if self.bgr and len(self.mean) != 3:
            raise ValueError("normalization bgr=True needs 3 channels")

    def __call__(self, images: Tensor) -> Tensor:
        """Normalise a (N, C, H, W) batch of 0-255 pixels (uint8 or float) to float32."""
        x = images.float()
        if x.shape[1] != len(self.mean):
            raise ValueError(f"expected {len(self.mean)} channels, got {x.shape[1]}")
        if self.bgr:
            x = x.flip(1)
        # non_blocking: a copy from pageable memory that does not wait for the GPU's queue to drain
        mean = torch.tensor(self.mean).to(x.device, non_blocking=True).view(1, -1, 1, 1)
        std = torch.tensor(self.std).to(x.device, non_blocking=True).view(1, -1, 1, 1)
        return (x - mean) / std

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "bgr": self.bgr}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"]),
                   bool(d.get("bgr", False)))


# Known preprocessing conventions (0-255 scale).
TORCHVISION_NORMALIZATION = Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
CAFFE_NORMALIZATION = Normalization((103.939, 116.779, 123.68), (1.0, 1.0, 1.0), bgr=True)


class DenseLinear(nn.Linear):
    """A fully-connected layer applied convolutionally (Sec. 3.2: "the first FC layer is converted to
    a 7x7 conv layer, the last two FC layers to 1x1 conv layers").

    Its weight keeps ``nn.Linear``'s (out, in * k * k) shape, so checkpoints stay torchvision's; the
    input is a (N, C, H, W) map with C * k * k == in_features. When the map is exactly k x k (a crop)
    this is one matmul; on a larger map the weight is viewed as a (out, C, k, k) kernel and slides
    over it: this view is the only place where Linear and convolution meet.
    """

    def __init__(self, in_channels: int, out_features: int, kernel_size: int = 1):
        super().__init__(in_channels * kernel_size * kernel_size, out_features)
        self.in_channels = in_channels
        self.kernel_size = kernel_size

    def conv_weight(self) -> Tensor:
        k = self.kernel_size
        return self.weight.view(self.out_features, self.in_channels, k, k)

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        if h == self.kernel_size and w == self.kernel_size:
            # torchvision flattens (C, H, W) in this order, which is also the kernel's layout.
            return F.linear(x.flatten(1), self.weight, self.bias).view(n, -1, 1, 1)
        return F.conv2d(x, self.conv_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}"


def local_response_norm(x: Tensor, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0
                        ) -> Tensor:
    """``F.local_response_norm`` of a (N, C, H, W) batch, its channel window summed from ``size``
    shifted slices instead of torch's ``avg_pool3d``, whose CUDA backward has no deterministic
    kernel (``torch.use_deterministic_algorithms`` refuses it): slices and additions have one. The
    window is summed in float32 (as ``avg_pool3d`` accumulates) in the same order."""
    c = x.shape[1]
    sq = x * x
    sq = sq.float() if sq.dtype in (torch.float16, torch.bfloat16) else sq
    padded = F.pad(sq, (0, 0, 0, 0, size // 2, (size - 1) // 2))
    total = padded[:, 0:c]
    for j in range(1, size):
        total = total + padded[:, j:j + c]
    div = (total / size).to(x.dtype)
    return x / div.mul(alpha).add(k).pow(beta)


class LocalResponseNorm(nn.LocalResponseNorm):
    """AlexNet's LRN (A-LRN, Table 1), torch's module; on a GPU under
    ``torch.use_deterministic_algorithms`` (``--deterministic``) it takes :func:`local_response_norm`,
    whose backward is deterministic. On the CPU it is torch's, unchanged."""

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type != "cpu" and x.dim() == 4 and torch.are_deterministic_algorithms_enabled():
            return local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        return super().forward(x)


def make_features(config: str, batch_norm: bool, width: float, in_channels: int):
    """Build the flat feature stack for a Table 1 config; also return each layer's Caffe-style name."""
    layers: list[nn.Module] = []
    names: list[str] = []
    channels, block, index = in_channels, 1, 1
    for entry in CONFIGS[config]:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            names.append(f"pool{block}")
            block, index = block + 1, 1
        elif entry == "LRN":
            # AlexNet applies LRN to the rectified output of its first conv; so do we (conv, relu, norm).
            layers.append(LocalResponseNorm(LRN_SIZE, alpha=LRN_SIZE * LRN_ALPHA, beta=LRN_BETA, k=LRN_K))
            names.append(f"norm{block}")
        else:
            out, kernel = entry if isinstance(entry, tuple) else (entry, 3)
            out = scaled(out, width)
            layers.append(nn.Conv2d(channels, out, kernel_size=kernel, padding=kernel // 2))
            names.append(f"conv{block}_{index}")
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
                names.append(f"bn{block}_{index}")
            layers.append(nn.ReLU(inplace=True))
            names.append(f"relu{block}_{index}")
            channels, index = out, index + 1
    return nn.Sequential(*layers), names, channels


class VGG(nn.Module):
    """A VGG network (Table 1) whose head is the paper's three FC layers, applied convolutionally.

    ``model(images)`` returns (N, num_classes) logits: the spatial mean of the class score map, which
    is exactly the paper's classifier on a crop_size input and its dense evaluation on a larger one.
    Besides the weights a model carries what it needs to be used: ``classes`` (names or None),
    ``normalization`` (how uint8 pixels become input) and ``info`` (JSON-able facts such as the
    training scale).
    """

    def __init__(self, config: str, *, num_classes: int = 1000, batch_norm: bool = False,
                 dropout: float = 0.5, crop_size: int = 224, width: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        if config not in CONFIGS:
            raise ValueError(f"unknown config {config!r}; valid: {', '.join(CONFIGS)}")
        problems = []
        if crop_size < 32 or crop_size % 32:
            problems.append(f"crop_size must be a positive multiple of 32, got {crop_size}")
        if num_classes < 1:
            problems.append(f"num_classes must be at least 1, got {num_classes}")
        if not 0.0 <= dropout < 1.0:
            problems.append(f"dropout must be in [0, 1), got {dropout}")
        if width <= 0:
            problems.append(f"width must be positive, got {width}")
        if in_channels < 1:
            problems.append(f"in_channels must be at least 1, got {in_channels}")
        if problems:
            raise ValueError("; ".join(problems))
        self.config, self.batch_norm, self.width = config, batch_norm, float(width)
        self.crop_size, self.in_channels, self.dropout = crop_size, in_channels, dropout
        self.num_classes = num_classes
        self.features, self.feature_names, channels = make_features(config, batch_norm, width,
                                                                    in_channels)
        fc = scaled(FC_WIDTH, width)
        # Indices 0, 3, 6 as in torchvision: fc6, relu, dropout, fc7, relu, dropout, fc8.
        self.classifier = nn.Sequential(
            DenseLinear(channels, fc, kernel_size=crop_size // 32), nn.ReLU(inplace=True),
            nn.Dropout(dropout), DenseLinear(fc, fc), nn.ReLU(inplace=True), nn.Dropout(dropout),
            DenseLinear(fc, num_classes))
        self.head_names = ["fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
        self.classes: list[str] | None = None
        self.normalization = Normalization((0.0,) * in_channels, (1.0,) * in_channels)
        self.info: dict = {}

    @property
    def arch(self) -> str:
        """The usual name of this network, e.g. ``vgg16_bn``."""
        return NAMES[self.config] + ("_bn" if self.batch_norm else "")

    # -- forward ------------------------------------------------------------------------------------

    def check_input(self, images: Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (N, {self.in_channels}, H, W), "
                             f"got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if h < self.crop_size or w < self.crop_size:
            raise ValueError(f"input {h}x{w} is smaller than the crop size {self.crop_size}; "
                             f"the network needs at least {self.crop_size}x{self.crop_size}")

    def forward_features(self, images: Tensor) -> Tensor:
        """The last conv block's pooled feature map, (N, C, H/32, W/32)."""
        self.check_input(images)
        return self.features(images)

    def head_map(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """The head applied densely: class scores (or fc7 activations) at every map position."""
        layers = self.classifier[:-1] if pre_logits else self.classifier
        return layers(features)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits (N, num_classes), or the 4096-D fc7 activations with ``pre_logits``, averaged
        over the map (Sec. 3.2: "the class score map is spatially averaged"); the average of a
        bf16 / fp16 map (autocast) is taken, and returned, in float32."""
        scores = self.head_map(features, pre_logits)
        wide = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else None
        return scores.mean(dim=(2, 3), dtype=wide)

    def score_map(self, images: Tensor) -> Tensor:
        """The class score map (N, num_classes, h, w), h = H/32 - crop_size/32 + 1 (Sec. 3.2)."""
        return self.head_map(self.forward_features(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))

    # -- heads and taps -----------------------------------------------------------------------------

    def reset_classifier(self, num_classes: int, init_std: float = 0.01) -> None:
        """Replace the last FC layer with a fresh one for ``num_classes`` classes (fine-tuning)."""
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        old = self.classifier[6]
        new = DenseLinear(old.in_channels, num_classes).to(old.weight.device, old.weight.dtype)
        nn.init.normal_(new.weight, 0.0, init_std)
        nn.init.zeros_(new.bias)
        self.classifier[6] = new
        self.num_classes, self.classes = num_classes, None

    def tap_names(self) -> list[str]:
        return self.feature_names + self.head_names

    def feature_taps(self, names: list[str], images: Tensor) -> dict[str, Tensor]:
        """Activations of the named layers (``relu1_2``, ``relu3_3``, ``pool5``, ``fc7`` ...), the
        inputs of perceptual and style losses. Runs only as far as the deepest requested layer."""
        valid = self.tap_names()
        unknown = [n for n in names if n not in valid]
        if unknown:
            raise ValueError(f"unknown layer names {unknown}; valid for {self.arch}: "
                             f"{', '.join(valid)}")
        self.check_input(images)
        wanted = {valid.index(n) for n in names}
        # In-place ReLUs would overwrite a tapped conv output, so tapped layers are cloned.
        out, x = {}, images
        layers = list(self.features) + list(self.classifier)
        for i, layer in enumerate(layers[: max(wanted) + 1]):
            x = layer(x)
            if i in wanted:
                out[valid[i]] = x.clone() if i < max(wanted) else x
        return {n: out[n] for n in names}

    # -- metadata -----------------------------------------------------------------------------------

    def hparams(self) -> dict:
        """The keyword arguments that rebuild this architecture with :func:`create_model`."""
        return {"arch": self.arch, "num_classes": self.num_classes, "batch_norm": self.batch_norm,
                "dropout": self.dropout, "crop_size": self.crop_size, "width": self.width,
                "in_channels": self.in_channels}

    def metadata(self) -> dict:
        """Everything but the weights: architecture, classes, normalisation, info (JSON-able)."""
        return {"format": "vgg", "version": 1, "model": self.hparams(), "classes": self.classes,
                "normalization": self.normalization.to_dict(), "info": self.info}

    def metadata_json(self) -> str:
        return json.dumps(self.metadata())



def create_model(arch: str, num_classes: int = 1000, batch_norm: bool = False,
                 dropout: float = 0.5, crop_size: int = 224, width: float = 1.0,
                 init: str = "normal", in_channels: int = 3, init_std: float = 0.01) -> VGG:
    """Build a VGG network of Table 1.

    ``arch`` is a paper letter (A, A-LRN, B, C, D, E) or a usual name (vgg11, vgg11_lrn, vgg13,
    vgg16_c, vgg16, vgg19), optionally with ``_bn`` (BatchNorm after every conv, as is also set by
    ``batch_norm=True``). ``width`` scales every conv and FC width (0.25 gives 16-32-64-128-128 and
    FC 1024); ``crop_size`` (a multiple of 32) sets the first FC layer's kernel to crop_size/32;
    ``in_channels=1`` serves greyscale data.
    """
    config, bn = parse_arch(arch)
    model = VGG(config, num_classes=num_classes, batch_norm=batch_norm or bn, dropout=dropout,
                crop_size=crop_size, width=width, in_channels=in_channels)
    init_weights(model, init, init_std)
    return model
