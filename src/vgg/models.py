"""The VGG networks of Table 1, as one table and one builder.

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

# Table 1 as data. An int is a 3x3 conv with that many channels, (C, 1) a 1x1 conv (config C),
# "M" a 2x2 max-pool with stride 2, "LRN" AlexNet's local response normalisation (config A-LRN).
CONFIGS: dict[str, list] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "A-LRN": [64, "LRN", "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "C": [64, 64, "M", 128, 128, "M", 256, 256, (256, 1), "M", 512, 512, (512, 1), "M",
          512, 512, (512, 1), "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
          512, 512, 512, 512, "M"],
}

# The names people use for each configuration (torchvision's where it has one).
NAMES: dict[str, str] = {
    "A": "vgg11", "A-LRN": "vgg11_lrn", "B": "vgg13", "C": "vgg16_c", "D": "vgg16", "E": "vgg19",
}

FC_WIDTH = 4096
# AlexNet's LRN (Krizhevsky et al. 2012, Sec. 3.3): b = a / (k + alpha * sum(a^2))^beta over n=5
# channels. PyTorch's LocalResponseNorm divides alpha by n (as Caffe does), so it gets n * alpha.
LRN_SIZE, LRN_ALPHA, LRN_BETA, LRN_K = 5, 1e-4, 0.75, 2.0


def arch_names() -> list[str]:
    """Every accepted architecture name: the usual names, then the paper's letters."""
    usual = [n + bn for n in NAMES.values() for bn in ("", "_bn")]
    return usual + [c + bn for c in CONFIGS for bn in ("", "_bn")]


def parse_arch(arch: str) -> tuple[str, bool]:
    """Map a name (``vgg16_bn``, ``D``, ``a-lrn``, ``vgg11_lrn`` ...) to (config letter, batch_norm)."""
    name = arch.strip().lower().replace("-", "_")
    batch_norm = name.endswith("_bn")
    if batch_norm:
        name = name[: -len("_bn")]
    for config, usual in NAMES.items():
        if name in (usual, config.lower().replace("-", "_"), config.lower().replace("-", "")):
            return config, batch_norm
    raise ValueError(f"unknown architecture {arch!r}; valid names: {', '.join(arch_names())}")


def scaled(channels: int, width: float) -> int:
    """Channels of a layer at a given width multiplier (never below 1)."""
    return max(1, int(round(channels * width)))


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
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
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
            flat = x.flatten(1)
            packed = self.__dict__.get("packed")
            if packed is not None and packed.usable(flat):
                return packed(flat).view(n, -1, 1, 1)
            return F.linear(flat, self.weight, self.bias).view(n, -1, 1, 1)
        return F.conv2d(x, self.conv_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}"


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
            layers.append(nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_SIZE * LRN_ALPHA, beta=LRN_BETA,
                                               k=LRN_K))
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
        fused = self.__dict__.get("fused_features")
        if fused is not None and fused.features is self.features and fused.usable(images):
            return fused(images)
        return self.features(images)

    def head_map(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """The head applied densely: class scores (or fc7 activations) at every map position."""
        layers = self.classifier[:-1] if pre_logits else self.classifier
        return layers(features)

    def forward_head(self, features: Tensor, pre_logits: bool = False) -> Tensor:
        """Logits (N, num_classes), or the 4096-D fc7 activations with ``pre_logits``, averaged
        over the map (Sec. 3.2: "the class score map is spatially averaged")."""
        return self.head_map(features, pre_logits).mean(dim=(2, 3))

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


def init_weights(model: VGG, init: str = "normal", std: float = 0.01) -> None:
    """Initialise a model in place (Sec. 3.1).

    ``normal``: weights ~ N(0, std^2), biases zero. The paper says "normal distribution with zero mean
    and 10^-2 variance", literally std 0.1; its released Caffe nets and torchvision's FC layers use
    std 0.01, which is the default here (std=0.1 is the literal reading).
    ``glorot``: Glorot & Bengio's uniform initialisation, which the paper found to work without
    pre-training. BatchNorm layers start at weight 1, bias 0 either way.
    """
    if init not in ("normal", "glorot"):
        raise ValueError(f"unknown init {init!r}; valid: normal, glorot")
    if std <= 0:
        raise ValueError(f"init std must be positive, got {std}")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if init == "normal":
                nn.init.normal_(m.weight, 0.0, std)
            else:
                # An FC layer keeps its Linear fans (in, out) even though it runs as a conv.
                nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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


def conv_layers(model: VGG) -> list[int]:
    """Indices in ``model.features`` of the conv layers, in order."""
    return [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def init_from_shallow(model: VGG, trained_a: VGG) -> list[str]:
    """The paper's transfer from net A (Sec. 3.1): copy the first four conv layers and the three FC
    layers of a trained shallow net into ``model``; the layers in between keep their random init.
    Each conv goes to the layer of the same name (conv1_1, conv2_1, conv3_1, conv3_2).

    When both nets have BatchNorm, the BN layer after each copied conv is copied with it. Returns
    the names of the copied tensors. A shape mismatch raises an error naming the layer and both shapes.
    """
    # A's first four convs are conv1_1, conv2_1, conv3_1, conv3_2; they go to the layers of the same
    # name in the deeper net, the only reading under which the shapes agree (conv1_2 of D is 64->64).
    src_convs = conv_layers(trained_a)[:4]
    if len(src_convs) < 4:
        raise ValueError("init_from_shallow needs a source net with at least four conv layers")
    pairs = []  # (target prefix, source prefix)
    for s in src_convs:
        name = trained_a.feature_names[s]
        if name not in model.feature_names:
            raise ValueError(f"init_from_shallow: {model.arch} has no layer {name} to take "
                             f"features.{s} of the source")
        d = model.feature_names.index(name)
        pairs.append((f"features.{d}", f"features.{s}"))
        src_bn = isinstance(trained_a.features[s + 1], nn.BatchNorm2d)
        dst_bn = isinstance(model.features[d + 1], nn.BatchNorm2d)
        if src_bn and dst_bn:
            pairs.append((f"features.{d + 1}", f"features.{s + 1}"))
    pairs += [(f"classifier.{i}", f"classifier.{i}") for i in (0, 3, 6)]
    src, dst = trained_a.state_dict(), model.state_dict()
    copies = []
    for d_prefix, s_prefix in pairs:
        for key in [k for k in dst if k.startswith(d_prefix + ".")]:
            s_key = s_prefix + key[len(d_prefix):]
            if s_key not in src:
                raise ValueError(f"init_from_shallow: source net has no {s_key} for {key}")
            if src[s_key].shape != dst[key].shape:
                raise ValueError(f"init_from_shallow: layer {key} has shape {tuple(dst[key].shape)} "
                                 f"but the source's {s_key} has {tuple(src[s_key].shape)}")
            copies.append((key, src[s_key]))
    for key, value in copies:
        dst[key].copy_(value)
    return [key for key, _ in copies]


# -- layer table (vgg summary, vgg models) ------------------------------------------------------------

def layer_table(model: VGG, size: int | None = None) -> list[dict]:
    """One row per layer at a square input of ``size`` (default crop_size): name, output shape,
    receptive field, parameters and multiply-adds (convolutions and FC layers; BN, ReLU, pooling and
    LRN counted as zero, as the paper and torchvision do)."""
    size = size or model.crop_size
    if size < model.crop_size:
        raise ValueError(f"size {size} is smaller than the crop size {model.crop_size}")
    rows, c, h, w = [], model.in_channels, size, size
    rf, jump = 1, 1
    for name, m in zip(model.tap_names(), list(model.features) + list(model.classifier)):
        params = sum(p.numel() for p in m.parameters())
        macs = 0
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0]
            h, w = h + 2 * m.padding[0] - k + 1, w + 2 * m.padding[1] - k + 1
            rf, c = rf + (k - 1) * jump, m.out_channels
            macs = h * w * c * m.in_channels * k * k
        elif isinstance(m, nn.MaxPool2d):
            rf, jump, h, w = rf + jump, jump * 2, h // 2, w // 2
        elif isinstance(m, DenseLinear):
            k = m.kernel_size
            h, w = h - k + 1, w - k + 1
            rf, c = rf + (k - 1) * jump, m.out_features
            macs = h * w * m.in_features * m.out_features
        rows.append({"layer": name, "shape": (c, h, w), "receptive_field": rf, "params": params,
                     "macs": macs})
    return rows


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def tensors_key(tensors) -> tuple:
    """What identifies the current values of some tensors, so that packed copies know when to rebuild:
    each tensor's identity, storage and in-place version. Inference tensors (made under
    inference_mode) keep no version counter; their storage is still watched, and they cannot be
    changed in place outside inference_mode."""
    return tuple((id(t), -1 if t.is_inference() else t._version, t.data_ptr()) for t in tensors)


def cpu_inference_call(x: Tensor, module: nn.Module) -> bool:
    """Whether a call of ``module`` on ``x`` is one the packed CPU runners may take: float32 on the
    CPU, no autograd, eval mode, no autocast (otherwise the modules run as usual)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not module.training and not torch.is_autocast_enabled("cpu"))


# Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
# CVPR 2016): F(m x m, 3x3) makes an m x m output tile from an (m+2) x (m+2) input tile with (m+2)^2
# multiplications per channel pair instead of 9 m^2. Y = A^T [(G g G^T) * (B^T d B)] A; the matrices
# are Lavin & Gray's, with interpolation points 0, +-1 (m = 2) and 0, +-1, +-2 (m = 4).
WINOGRAD = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],                   # B^T
        [[1, 0, 0], [1 / 2, 1 / 2, 1 / 2], [1 / 2, -1 / 2, 1 / 2], [0, 0, 1]],          # G
        [[1, 1, 1, 0], [0, 1, -1, -1]]),                                               # A^T
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
         [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}
# F(4x4, 3x3): measured 1.1-1.6x faster than F(2x2, 3x3) on VGG16's 256- and 512-channel layers
# (batch 8, one thread), with a relative error of ~1e-5 against the direct conv instead of ~2e-6.
WINOGRAD_TILE = 4
# When a 3x3 conv runs as Winograd: from 128 input channels, and when the call is big enough that the
# (m+2)^2 matrix products outweigh their fixed cost (about 1.5 ms on one core). Measured on a 2-core
# AVX-512 CPU, one thread, batch 8, against the direct oneDNN conv: F(4x4, 3x3) in cache-sized pieces
# 1.15-1.3x on 128 channels at 56-112 px, 1.6-1.9x on 256 at 56 px and 512 at
# 28 px; but 0.8x on 64 channels at 224 px (the transforms cost more than the saved multiplications),
# 0.8-0.9x on calls of ~250M multiply-adds (256 x 7 x 7, 512 x 4 x 4), far slower on 1-2 px maps.
# Small maps lose too: at batch 128, 128 channels on 8 x 8 ran 0.7x, and a validation pass at 10 x 10
# and 5 x 5 maps (tiles hanging over the edge waste 44% and 156% of the work) 0.75x the direct conv.
WINOGRAD_MIN_CHANNELS = 128
WINOGRAD_MIN_MACS = 400_000_000
WINOGRAD_MIN_SIDE = 14
# Bytes of transformed input per piece of a batch (see Winograd3x3.__call__).
WINOGRAD_CHUNK_BYTES = 8 << 20


def _sparse_rows(matrix: list[list[float]]) -> list[list[tuple[float, int]]]:
    """Each row's nonzero (coefficient, column) terms, a coefficient of 1 first when there is one."""
    return [sorted(((c, j) for j, c in enumerate(row) if c != 0), key=lambda t: t[0] != 1) for row in matrix]


def _combine(rows: list[list[tuple[float, int]]], parts: list[Tensor], out: list[Tensor]) -> None:
    """out[i] = sum over row i's terms of c * parts[j], one fused multiply-add pass per term, no
    temporaries; ``rows`` from :func:`_sparse_rows`."""
    for terms, o in zip(rows, out):
        (c0, j0), rest = terms[0], terms[1:]
        if c0 != 1:
            torch.mul(parts[j0], c0, out=o)
        elif rest:
            (c1, j1), rest = rest[0], rest[1:]
            torch.add(parts[j0], parts[j1], alpha=c1, out=o)
        else:
            o.copy_(parts[j0])
        for c, j in rest:
            o.add_(parts[j], alpha=c)


class Winograd3x3:
    """Inference-only CPU runner of one 3x3, stride-1, pad-1 convolution (+ optional ReLU) as Winograd
    F(m x m, 3x3), m = ``tile``: the input is cut into overlapping (m+2)^2 tiles and transformed with
    a few multiply-adds, the (m+2)^2 tile positions become as many matrix products (C -> K channels
    over all tiles, oneDNN-packed weights), and those are transformed back into m x m output tiles.
    F(4x4, 3x3) does 4x fewer multiplications than the direct convolution and matches it to a
    relative ~1e-5 (float32 rounding of the transforms)."""

    def __init__(self, weight: Tensor, bias: Tensor, relu: bool, rows_hint: int, tile: int = WINOGRAD_TILE):
        bt, g, at = WINOGRAD[tile]
        g = torch.tensor(g, dtype=torch.float64)
        k, c = weight.shape[:2]
        n = tile + 2
        u = torch.einsum("ai,kcij,bj->abkc", g, weight.double(), g).float().reshape(n * n, k, c)
        self.weights = [torch.ops.mkldnn._reorder_linear_weight(u[i].contiguous(), max(rows_hint, 1))
                        for i in range(n * n)]
        self.bt, self.at, self.tile = _sparse_rows(bt), _sparse_rows(at), tile
        self.bias, self.relu, self.out_channels = bias.float(), relu, k

    @staticmethod
    def applies(conv: nn.Conv2d) -> bool:
        return (conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
                and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
                and conv.in_channels >= WINOGRAD_MIN_CHANNELS and PackedLinear.available())

    def __call__(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        m = self.tile
        th, tw = -(-h // m), -(-w // m)  # output tiles; the last ones may hang over the edge (zeros)
        y = x.new_empty(n, th * m, tw * m, self.out_channels)
        # A few images at a time, so that the transformed tiles stay in cache: at batch 32 on
        # 256 x 56 x 56, 1.3x the direct conv in one piece, 1.9x in pieces of 8 images.
        tile_bytes = (m + 2) ** 2 * x.shape[1] * x.element_size()
        step = max(1, WINOGRAD_CHUNK_BYTES // (tile_bytes * th * tw))
        for i in range(0, n, step):
            self._tiles(x[i:i + step], y[i:i + step])
        if (h, w) != (th * m, tw * m):
            y = y[:, :h, :w].contiguous()
        y.add_(self.bias)
        if self.relu:
            y.relu_()
        return y.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory, as the oneDNN convs give

    def _tiles(self, x: Tensor, out: Tensor) -> None:
        """The convolution of ``x`` (N, C, H, W) without bias into ``out`` (N, th*m, tw*m, K)."""
        n, c, h, w = x.shape
        m, a = self.tile, self.tile + 2
        th, tw = out.shape[1] // m, out.shape[2] // m
        # Zero-padded input, channels last: the tile transforms then work on contiguous channel rows.
        xp = x.new_empty(n, m * th + 2, m * tw + 2, c)
        xp[:, 0].zero_(), xp[:, h + 1:].zero_(), xp[:, :, 0].zero_(), xp[:, :, w + 1:].zero_()
        xp[:, 1:h + 1, 1:w + 1].copy_(x.permute(0, 2, 3, 1))
        # V = B^T d B, over rows then columns; a tile's rows/columns are strided views (tiles overlap).
        rows = xp.new_empty(a, n, th, xp.shape[2], c)
        _combine(self.bt, [xp[:, i:i + m * th:m] for i in range(a)], list(rows))
        v = xp.new_empty(a, a, n, th, tw, c)
        _combine(self.bt, [rows[:, :, :, i:i + m * tw:m] for i in range(a)], [v[:, j] for j in range(a)])
        v = v.view(a * a, n * th * tw, c)
        prods = [torch.ops.mkldnn._linear_pointwise(v[i], self.weights[i], None, "none", [], "")
                 .view(n, th, tw, self.out_channels) for i in range(a * a)]
        # Y = A^T M A: over the products' rows, then their columns, straight into the output tiles.
        half = x.new_empty(m, a, n, th, tw, self.out_channels)
        for j in range(a):
            _combine(self.at, [prods[a * i + j] for i in range(a)], [half[r, j] for r in range(m)])
        y = out.view(n, th, m, tw, m, self.out_channels)
        columns = [y[:, :, :, :, s].permute(2, 0, 1, 3, 4) for s in range(m)]  # (r, n, th, tw, K) views
        _combine(self.at, [half[:, j] for j in range(a)], columns)


class FusedFeatures:
    """Inference-only CPU runner of a feature stack: every conv (with the BatchNorm after it folded in)
    and its ReLU run as one oneDNN primitive, the ReLU a post-op (no extra pass over the activations),
    the weight reordered once into oneDNN's blocked layout instead of on every call. The arithmetic
    is the convolution's own, except in the big convs of many channels, which run as Winograd
    F(4x4, 3x3) (:class:`Winograd3x3`, equal to float32 rounding, ~1e-5 relative). (Max-pooling as
    three elementwise maxima, skipping the index map that ``F.max_pool2d`` writes, was measured too:
    0.90-0.99x, so the module runs as it is.)

    The packed weights are rebuilt when a weight changes (``load_state_dict``, an optimizer step), so
    the runner never computes with stale weights. ``usable(x)`` says when it applies: float32 on the
    CPU, no autograd, eval mode, no autocast; otherwise the model runs its modules as usual.
    """

    def __init__(self, features: nn.Sequential):
        self.features = features
        self._key: tuple | None = None
        self._plan: list = []

    def __deepcopy__(self, memo):
        import copy

        return FusedFeatures(copy.deepcopy(self.features, memo))

    def __getstate__(self):
        return {"features": self.features, "_key": None, "_plan": []}

    @staticmethod
    def available() -> bool:
        return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and \
            hasattr(torch.ops.mkldnn, "_convolution_pointwise")

    def usable(self, images: Tensor) -> bool:
        return cpu_inference_call(images, self.features) and self.available()

    def _state_key(self) -> tuple:
        return tensors_key(t for m in self.features for t in (*m.parameters(), *m.buffers()))

    def _pack(self, images: Tensor) -> None:
        layers, plan, i = list(self.features), [], 0
        while i < len(layers):
            m = layers[i]
            if not isinstance(m, nn.Conv2d):
                plan.append(m)
                i += 1
                continue
            w, b = m.weight.detach().float(), m.bias.detach().float()
            j = i + 1
            if j < len(layers) and isinstance(layers[j], nn.BatchNorm2d):
                bn = layers[j]  # eval-mode BatchNorm is an affine map: fold it into the conv
                scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
                w = w * scale.view(-1, 1, 1, 1)
                b = (b - bn.running_mean) * scale + bn.bias.detach()
                j += 1
            relu = j < len(layers) and isinstance(layers[j], nn.ReLU)
            i = j + 1 if relu else j
            plan.append(FusedConv(m, w, b, relu, (images.shape[0], m.in_channels, *images.shape[-2:])))
        self._plan = plan

    def __call__(self, images: Tensor) -> Tensor:
        key = self._state_key()
        if key != self._key:
            self._pack(images)
            self._key = key
        x = images
        for step in self._plan:
            x = step(x)
        return x


class FusedConv:
    """One conv (BatchNorm folded in) and its ReLU as one oneDNN primitive with a prepacked weight;
    a 3x3 conv of :data:`WINOGRAD_MIN_CHANNELS` or more input channels also gets a :class:`Winograd3x3`
    runner, taken for the calls of at least :data:`WINOGRAD_MIN_MACS` multiply-adds on maps of at least
    :data:`WINOGRAD_MIN_SIDE` pixels a side."""

    def __init__(self, conv: nn.Conv2d, weight: Tensor, bias: Tensor, relu: bool, input_hint: tuple):
        self.args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
                     "relu" if relu else "none")
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.contiguous().to_mkldnn(), *self.args[:4], list(input_hint))
        self.bias = bias.contiguous()
        self.weight_shape = tuple(weight.shape[:2])
        # The Winograd weights (4x the conv's: 36 positions instead of 9) are built on first use, so
        # nets that only ever see small maps never hold them.
        self.dense_weight = weight if Winograd3x3.applies(conv) else None
        self.relu = relu
        self.winograd: Winograd3x3 | None = None

    def takes_winograd(self, shape: tuple) -> bool:
        """Whether a call on input of ``shape`` (N, C, H, W) runs as Winograd."""
        k, c = self.weight_shape
        macs = shape[0] * shape[2] * shape[3] * k * c * 9
        return (self.dense_weight is not None and macs >= WINOGRAD_MIN_MACS
                and min(shape[2], shape[3]) >= WINOGRAD_MIN_SIDE)

    def __call__(self, x: Tensor) -> Tensor:
        if self.takes_winograd(x.shape):
            if self.winograd is None:
                self.winograd = Winograd3x3(self.dense_weight, self.bias, self.relu, x.shape[0] * 64)
            return self.winograd(x)
        return torch.ops.mkldnn._convolution_pointwise(x, self.weight, self.bias, *self.args, [], "")


class PackedLinear:
    """Inference-only CPU matmul of a :class:`DenseLinear` with its weight reordered once into
    oneDNN's blocked layout: at small batches fc6 (a 25088 x 4096 matrix) ran about 4x faster than
    ``F.linear`` (BENCHMARKS.md). Costs one more copy of the weight in memory (411 MB for VGG16's
    fc6); rebuilt when the weight changes. ``usable`` as :class:`FusedFeatures`."""

    def __init__(self, layer: DenseLinear):
        self.layer = layer
        self._key: tuple | None = None
        self._packed: Tensor | None = None

    def __deepcopy__(self, memo):
        import copy

        return PackedLinear(copy.deepcopy(self.layer, memo))

    def __getstate__(self):
        return {"layer": self.layer, "_key": None, "_packed": None}

    @staticmethod
    def available() -> bool:
        ops = torch.ops.mkldnn
        return torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled and \
            hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")

    def usable(self, x: Tensor) -> bool:
        return (cpu_inference_call(x, self.layer) and self.layer.weight.dtype == torch.float32
                and self.available())

    def __call__(self, x: Tensor) -> Tensor:
        w, b = self.layer.weight, self.layer.bias
        key = tensors_key((w, b))
        if key != self._key:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), x.shape[0])
            self._key = key
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self._packed, b.detach(), "none", [], "")


def prepare_for_inference(model: VGG, device: str | torch.device = "cpu") -> VGG:
    """The model as every inference path runs it: eval mode, on ``device``, channels_last, and on
    the CPU the fused feature runner (:class:`FusedFeatures`).

    channels_last lets oneDNN (CPU) and cuDNN (GPU) pick their fastest convolutions: VGG16 at 224,
    batch 8, ran about 1.3x faster than NCHW on a 2-core CPU, the fused conv+ReLU with prepacked
    weights about 1.1x more, Winograd for the big convs of 128 channels and more
    (:class:`Winograd3x3`) about 1.25x more, and the prepacked FC layers (:class:`PackedLinear`) a
    few percent more (BENCHMARKS.md). The input needs no conversion: a channels_last weight
    makes the convolution produce channels_last output.
    """
    model = model.eval().to(device, memory_format=torch.channels_last)
    if torch.device(device).type == "cpu":
        attach_cpu_inference(model)
    return model


def attach_cpu_inference(model: VGG) -> VGG:
    """Give a CPU model the fused feature runner and the prepacked FC layers for its inference calls
    (eval mode, no autograd, float32); training steps keep running the modules. A training loop may
    call this once so that its validation passes take the fast path too."""
    if FusedFeatures.available():
        model.fused_features = FusedFeatures(model.features)
    if PackedLinear.available():
        for layer in model.classifier:
            if isinstance(layer, DenseLinear):
                layer.packed = PackedLinear(layer)
    return model
