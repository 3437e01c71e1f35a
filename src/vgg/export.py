"""Models for other runtimes: ONNX and TorchScript graphs of the paper's dense evaluation (any image
size), our safetensors checkpoint, and a plain torchvision state dict.

The exported graph computes every FC layer as a convolution (Sec. 3.2: "the first FC layer is
converted to a 7x7 conv layer, the last two FC layers to 1x1 conv layers"), never through
``DenseLinear``'s matmul shortcut, which is chosen by the map size and would fix the input size of
a traced graph. Its input is the normalised float image; the preprocessing (mean, std, channel
order) and the class names travel in the file's metadata.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .files import atomic_write
from .models import TORCHVISION_NORMALIZATION, VGG, DenseLinear
from .weights import save_model

FORMATS = ("onnx", "torchscript", "safetensors", "torchvision")
TORCHVISION_CONFIGS = ("A", "B", "D", "E")  # torchvision's vgg11, vgg13, vgg16, vgg19 (+ _bn)
INPUT_DOC = ("float32 (N, C, H, W), H and W >= crop_size: (pixel - mean) / std per channel on the 0-255 "
             "scale, channels reversed to BGR first when bgr is true")
OUTPUT_DOC = "logits (N, K): the spatial mean of score_map (N, K, h, w), h = floor(H/32) - crop_size/32 + 1"
BOX_OUTPUT_DOC = ("boxes (N, K, 4, h, w): the box (x1, y1, x2, y2) in input pixels that the window at map "
                  "position (i, j), input pixels [32j, 32j + crop) x [32i, 32i + crop), predicts for class "
                  "k (K = classes for per-class regression, 1 for a single box); box_params (N, 4K, h, w): "
                  "the raw outputs, (cx, cy, w, h) relative to the window, divided by crop_size")


class DenseGraph(nn.Module):
    """The model as one size-generic graph: the features, then every FC layer as a convolution.
    Returns (logits, score_map); logits equal ``model(x)`` at every input size."""

    def __init__(self, model: VGG):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        x = self.model.features(images)
        for layer in self.model.classifier:
            x = F.conv2d(x, layer.conv_weight(), layer.bias) if isinstance(layer, DenseLinear) else layer(x)
        return x.mean(dim=(2, 3)), x


class BoxGraph(nn.Module):
    """A localisation net (App. A.1) as one size-generic graph: the dense box map (the score map of
    its box outputs, Sec. 3.2), and every window's box decoded in input pixels (the encoding of
    :mod:`vgg.localization.boxes`). Returns (boxes (N, K, 4, h, w), box_params (N, 4K, h, w))."""

    def __init__(self, model: VGG):
        super().__init__()
        self.dense, self.crop = DenseGraph(model), float(model.crop_size)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        _, params = self.dense(images)
        n, _, h, w = params.shape
        p = params.view(n, -1, 4, h, w)
        # Window (i, j) starts at input pixel (32 j, 32 i), five 2x2 poolings (localization.dense_windows).
        x0 = (torch.arange(w, device=p.device) * 32).to(p.dtype).view(1, 1, 1, w)
        y0 = (torch.arange(h, device=p.device) * 32).to(p.dtype).view(1, 1, h, 1)
        cx, cy = x0 + p[:, :, 0] * self.crop, y0 + p[:, :, 1] * self.crop
        half_w, half_h = p[:, :, 2] * (self.crop / 2), p[:, :, 3] * (self.crop / 2)
        return torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2), params


def _is_localization(model: VGG) -> bool:
    return bool((model.info or {}).get("localization"))


def export_metadata(model: VGG) -> dict[str, str]:
    """String metadata for a runtime file: everything needed to use the graph without this package."""
    n = model.normalization
    return {"vgg": model.metadata_json(), "arch": model.arch, "crop_size": str(model.crop_size),
            "mean": json.dumps(list(n.mean)), "std": json.dumps(list(n.std)),
            "bgr": json.dumps(n.bgr), "classes": json.dumps(model.classes), "input": INPUT_DOC,
            "outputs": BOX_OUTPUT_DOC if _is_localization(model) else OUTPUT_DOC}


def _example(model: VGG) -> Tensor:
    # Batch 2 and twice the crop size: torch.export specialises dimensions of size 1, and at the
    # crop size the conv path and the matmul path would agree on a fixed shape anyway.
    return torch.randn(2, model.in_channels, 2 * model.crop_size, 2 * model.crop_size)


def export_onnx(model: VGG, path: str | Path, opset: int | None = None) -> Path:
    """ONNX with dynamic batch, height and width (dense evaluation at any size >= the crop), the
    preprocessing and classes in ``metadata_props``; a localisation net's graph gives every window's
    box (:class:`BoxGraph`). Needs the ``onnx`` extra (onnx, onnxscript)."""
    try:
        import onnx
    except ImportError as e:
        raise ValueError("ONNX export needs onnx and onnxscript: pip install 'vgg[onnx]'") from e
    localization = _is_localization(model)
    graph = (BoxGraph(model) if localization else DenseGraph(model)).eval()
    outputs = ["boxes", "box_params"] if localization else ["logits", "score_map"]
    batch = torch.export.Dim("batch", min=1)
    height = torch.export.Dim("height", min=model.crop_size)
    width = torch.export.Dim("width", min=model.crop_size)

    def write(tmp: Path) -> None:
        # The exporter logs a line per missing torchvision op; torchvision is not used here.
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, (_example(model),), str(tmp), dynamo=True, verbose=False,
                                  input_names=["images"], output_names=outputs,
                                  dynamic_shapes=({0: batch, 2: height, 3: width},),
                                  opset_version=opset, external_data=False)
        finally:
            quiet.setLevel(level)
        proto = onnx.load(str(tmp))
        for key, value in export_metadata(model).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.doc_string = f"VGG {model.arch} (Simonyan & Zisserman, ICLR 2015), dense evaluation"
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def export_torchscript(model: VGG, path: str | Path) -> Path:
    """A traced TorchScript module of :class:`DenseGraph` (any input size >= the crop), with the
    metadata as the extra file ``vgg.json``."""
    # torch.jit is deprecated in favour of torch.export, but TorchScript is what C++/mobile runtimes load.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(DenseGraph(model).eval(), (_example(model),))
    extra = {"vgg.json": json.dumps(export_metadata(model))}

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, str(tmp), _extra_files=extra)

    return atomic_write(path, write)


def torchvision_problems(model: VGG) -> list[str]:
    """Why torchvision's ``vgg*`` constructors could not load this model's state dict (empty: they can)."""
    problems = []
    if model.config not in TORCHVISION_CONFIGS:
        problems.append(f"{model.arch} is not one of torchvision's vgg11/13/16/19")
    if model.width != 1.0:
        problems.append(f"width {model.width:g} (torchvision's are 1)")
    if model.in_channels != 3:
        problems.append(f"{model.in_channels} input channels (torchvision's take 3)")
    if model.crop_size != 224:
        k = model.crop_size // 32
        problems.append(f"fc6 reads a {k}x{k} map (crop {model.crop_size}); torchvision's read 7x7")
    return problems


def export_torchvision(model: VGG, path: str | Path) -> Path:
    """A plain state dict ``.pth`` in torchvision's layout: ``torchvision.models.vgg16(num_classes=K)
    .load_state_dict(torch.load(path))`` takes it. Preprocessing and classes are not in it."""
    problems = torchvision_problems(model)
    if problems:
        raise ValueError(f"torchvision's VGG cannot hold this model: {'; '.join(problems)}; "
                         "use --format safetensors for its state dict with metadata")
    if model.normalization != TORCHVISION_NORMALIZATION:
        warnings.warn(f"{model.arch} expects other preprocessing than torchvision's ({model.normalization});"
                      " a .pth does not carry it, so users of the file must apply it themselves",
                      stacklevel=2)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return atomic_write(path, lambda tmp: torch.save(state, str(tmp)))


def export_model(model: VGG, path: str | Path, fmt: str) -> Path:
    """Write ``model`` to ``path`` in ``fmt`` (onnx, torchscript, safetensors, torchvision), atomically."""
    writers = {"onnx": export_onnx, "torchscript": export_torchscript, "safetensors": save_model,
               "torchvision": export_torchvision}
    if fmt not in writers:
        raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    return writers[fmt](model.eval(), path)
