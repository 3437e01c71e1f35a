"""The network of Table 1: arguments, state-dict layout, shapes, dense evaluation, LRN, heads, taps."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import vgg
from support import assert_close_relative, assert_order_one, lively
from vgg.models import CONFIGS, conv_layers


def tiny(arch="A", **kw):
    kw = {"num_classes": 7, "crop_size": 32, "width": 0.125, **kw}
    torch.manual_seed(0)
    return vgg.create_model(arch, **kw).eval()


@pytest.mark.parametrize("bad,match", [
    ({"crop_size": 48}, "multiple of 32"), ({"num_classes": 0}, "num_classes"),
    ({"width": 0}, "width"), ({"dropout": 1.0}, "dropout"),
])
def test_bad_arguments(bad, match):
    with pytest.raises(ValueError, match=match):
        vgg.create_model("A", **bad)


# -- torchvision's layout, from an independent reference ------------------------------------------

def torchvision_reference(config, batch_norm, num_classes, width=1.0, crop=224, in_ch=3):
    """torchvision's VGG, rewritten here: cfgs + make_layers + Linear classifier after an
    adaptive pool to (crop/32)^2 (identity on a crop_size input)."""
    layers, c = [], in_ch
    for v in CONFIGS[config]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        elif v == "LRN":
            layers.append(nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0))
        else:
            out, k = v if isinstance(v, tuple) else (v, 3)
            out = max(1, round(out * width))
            layers.append(nn.Conv2d(c, out, k, padding=k // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU(inplace=True))
            c = out
    fc, k = max(1, round(4096 * width)), crop // 32

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((k, k))
            self.classifier = nn.Sequential(
                nn.Linear(c * k * k, fc), nn.ReLU(True), nn.Dropout(), nn.Linear(fc, fc),
                nn.ReLU(True), nn.Dropout(), nn.Linear(fc, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    return Ref()


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("bn", [False, True])
def test_state_dict_is_torchvisions(config, bn, meta_model):
    ours = meta_model(config, batch_norm=bn).state_dict()
    with torch.device("meta"):
        ref = torchvision_reference(config, bn, 1000).state_dict()
    assert list(ours) == list(ref)
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in ref.items()}


def test_vgg16_conv_indices_as_spec(meta_model):
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    convs_bn = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    assert conv_layers(meta_model("vgg16")) == convs
    assert conv_layers(meta_model("vgg16_bn")) == convs_bn
    sd = meta_model("vgg16").state_dict()
    assert sd["classifier.0.weight"].shape == (4096, 25088)
    assert sd["classifier.3.weight"].shape == (4096, 4096)
    assert sd["classifier.6.weight"].shape == (1000, 4096)


@pytest.mark.parametrize("config", ["A-LRN", "C", "D"])
@pytest.mark.parametrize("bn", [False, True])
def test_logits_equal_torchvision_reference(config, bn):
    # Order-1 logits from a 2x2 fc6 map: a wrong flattening order or layer order shows.
    model = lively(config, batch_norm=bn, crop_size=64)
    ref = torchvision_reference(config, bn, 7, width=0.125, crop=64).eval()
    ref.load_state_dict(model.state_dict())
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert_close_relative(model(x), ref(x), rtol=1e-5)


# -- shapes, gradients ----------------------------------------------------------------------------

@pytest.mark.parametrize("crop,size,map_side", [(32, 32, 1), (32, 64, 2), (32, 100, 3),
                                                 (64, 64, 1), (64, 128, 3), (96, 160, 3)])
def test_score_map_shapes(crop, size, map_side):
    model = tiny("B", crop_size=crop, num_classes=5)
    x = torch.randn(2, 3, size, size + 32)
    assert model.score_map(x).shape == (2, 5, map_side, map_side + 1)
    assert model(x).shape == (2, 5)


@pytest.mark.parametrize("width,channels,fc", [(0.25, [16, 32, 64, 128, 128], 1024),
                                               (0.5, [32, 64, 128, 256, 256], 2048)])
def test_width(width, channels, fc, meta_model):
    model = meta_model("A", width=width)
    outs = [model.features[i].out_channels for i in conv_layers(model)]
    assert sorted(set(outs)) == sorted(set(channels))
    assert model.classifier[0].out_features == fc


def test_greyscale_input():
    model = tiny("A", in_channels=1, num_classes=10)
    assert model(torch.randn(4, 1, 32, 32)).shape == (4, 10)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_every_parameter_gets_a_gradient(config):
    model = tiny(config, batch_norm=True).train()
    model(torch.randn(2, 3, 32, 32)).logsumexp(1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_too_small_input_is_an_error():
    model = tiny("A")
    with pytest.raises(ValueError, match="31x40 is smaller than the crop size 32"):
        model(torch.randn(1, 3, 31, 40))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.randn(1, 1, 32, 32))


# -- dense evaluation (Sec. 3.2) ------------------------------------------------------------------

@pytest.mark.parametrize("crop,extra", [(32, 1), (32, 3), (64, 2)])
@pytest.mark.parametrize("bn", [False, True])
def test_dense_equals_fc_layers_on_each_window(crop, extra, bn):
    model = lively("D", crop_size=crop, batch_norm=bn)
    x = torch.randn(2, 3, crop + 32 * extra, crop + 32 * (extra + 1))
    with torch.no_grad():
        scores = model.score_map(x)
        feats = model.forward_features(x)
    assert_order_one(scores)
    assert_order_one(scores - scores.mean((2, 3), keepdim=True), "the score map's variation")
    k = crop // 32
    fc = [model.classifier[i] for i in (0, 3, 6)]
    for i in range(scores.shape[2]):
        for j in range(scores.shape[3]):
            window = feats[:, :, i:i + k, j:j + k].flatten(1)
            h = F.relu(F.linear(window, fc[0].weight, fc[0].bias))
            h = F.relu(F.linear(h, fc[1].weight, fc[1].bias))
            expected = F.linear(h, fc[2].weight, fc[2].bias)
            assert_close_relative(scores[:, :, i, j], expected.detach(), rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(model(x), scores.mean((2, 3)))


def test_dense_differs_from_running_the_crop_alone():
    # Inside the whole image the convolutions see real pixels where the lone crop sees zero padding
    # (Sec. 3.2): this is why the paper combines dense and multi-crop evaluation.
    model = tiny("A", crop_size=32, init="glorot")
    x = torch.randn(1, 3, 64, 64)
    dense = model.score_map(x)[:, :, 1, 1]
    crop = model(x[:, :, 32:64, 32:64])
    assert (dense - crop).abs().max() > 0.01 * crop.abs().max()
    torch.testing.assert_close(model.score_map(x[:, :, :32, :32])[:, :, 0, 0], model(x[:, :, :32, :32]))


# -- LRN convention, heads, taps ------------------------------------------------------------------

def test_lrn_is_alexnets():
    model = tiny("A-LRN")
    lrn = model.features[2]
    x = torch.rand(1, 16, 4, 4) * 10
    # AlexNet: b_i = a_i / (k + alpha * sum_{j in window of n=5} a_j^2)^beta, alpha = 1e-4
    sq = F.pad(x.pow(2), (0, 0, 0, 0, 2, 2))
    window = sum(sq[:, j:j + 16] for j in range(5))
    torch.testing.assert_close(lrn(x), x / (2 + 1e-4 * window) ** 0.75)


def test_reset_classifier_and_heads():
    model = tiny("A")
    model.classes = list("abcdefg")
    model.reset_classifier(3)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert model.num_classes == 3 and model.classes is None
    feats = model.forward_features(torch.randn(2, 3, 64, 64))
    assert model.forward_head(feats, pre_logits=True).shape == (2, 512)


def test_feature_taps():
    model = lively("D", crop_size=32)
    x = torch.randn(2, 3, 64, 64)
    names = ["relu1_2", "relu3_3", "conv5_3", "relu5_3", "pool5", "fc7"]
    with torch.no_grad():
        taps = model.feature_taps(names, x)
    assert list(taps) == names
    assert taps["relu1_2"].shape == (2, 8, 64, 64)
    assert taps["relu3_3"].shape == (2, 32, 16, 16)
    for name in names:
        assert_order_one(taps[name], name)
    assert (taps["conv5_3"] < -0.1).any()  # taken before the in-place ReLU
    assert (taps["relu1_2"] >= 0).all() and (taps["relu1_2"] == 0).any()  # after the ReLU
    torch.testing.assert_close(taps["relu5_3"], F.relu(taps["conv5_3"]))
    # Each tap is the named layer's output, from an independent run of the layers.
    with torch.no_grad():
        h = x
        for i, layer in enumerate(model.features):
            h = layer(h.clone())
            name = model.feature_names[i]
            if name in taps:
                torch.testing.assert_close(taps[name], h, rtol=1e-5, atol=1e-5)
        fc7 = model.classifier[:4](h)  # fc6, relu6, drop6, fc7
    torch.testing.assert_close(taps["fc7"], fc7, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="unknown layer names \\['relu6_1'\\]"):
        model.feature_taps(["relu6_1"], x)


def test_config_c_has_one_by_one_convs(meta_model):
    model = meta_model("C")
    kernels = [model.features[i].kernel_size[0] for i in conv_layers(model)]
    assert kernels == [3] * 6 + [1] + [3, 3, 1] + [3, 3, 1]


# -- the GPU's branches, on the CPU ---------------------------------------------------------------

@pytest.mark.parametrize("scale, alpha, beta, k", [(30.0, 5e-4, 0.75, 2.0), (1.0, 1.0, 0.75, 1.0)])
def test_deterministic_lrn_formula_equals_torchs(scale, alpha, beta, k):
    # The paper's constants on first-layer-sized activations, and a strong normalisation on order-1 inputs.
    from vgg.models.vgg import local_response_norm

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 16, 5, 6, generator=g) * scale).requires_grad_()
    ref = F.local_response_norm(x, 5, alpha, beta, k)
    out = local_response_norm(x, 5, alpha, beta, k)
    assert (x / ref).std() > 0.05 * (x / ref).mean()  # the window matters: not a constant divisor
    torch.testing.assert_close(out, ref)
    (grad_ref,) = torch.autograd.grad(ref.square().sum(), x)
    (grad,) = torch.autograd.grad(out.square().sum(), x)
    assert_close_relative(grad, grad_ref, rtol=1e-5)
    # bf16 (autocast keeps the first conv's output in it): the window is summed in float32
    xb = x.detach().bfloat16()
    torch.testing.assert_close(local_response_norm(xb, 5, alpha, beta, k).float(),
                               F.local_response_norm(xb.float(), 5, alpha, beta, k), rtol=2e-2, atol=1e-2)


class _Ops(TorchDispatchMode):
    """The aten ops a piece of code runs (forward and backward)."""

    def __init__(self):
        super().__init__()
        self.names = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


def test_lrn_avoids_avg_pool3d_off_the_cpu_under_deterministic_algorithms():
    # The meta device stands in for CUDA (both are "not the CPU"): avg_pool3d's CUDA backward has no
    # deterministic kernel, so --deterministic A-LRN must not reach it there; the CPU keeps torch's LRN.
    lrn = tiny("A-LRN").features[2]

    def pools(device, deterministic):
        x = torch.randn(1, 16, 4, 4, device=device, requires_grad=True)
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(deterministic)
        try:
            with _Ops() as ops:
                lrn(x).sum().backward()
        finally:
            torch.use_deterministic_algorithms(before)
        return {n for n in ops.names if "avg_pool3d" in n}

    assert pools("meta", False) == {"aten.avg_pool3d.default", "aten.avg_pool3d_backward.default"}
    assert pools("meta", True) == set()
    assert pools("cpu", True) == {"aten.avg_pool3d.default", "aten.avg_pool3d_backward.default"}


def test_logits_are_averaged_in_float32_under_autocast():
    # Dense evaluation averages a bf16 score map under autocast: the mean is taken (and returned) in
    # float32, not rounded to bf16 first (CPU autocast runs the same code as CUDA's).
    model = lively("A")
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model.score_map(x)
        logits = model(x)
    assert scores.dtype == torch.bfloat16 and scores.shape[-2:] == (3, 3)
    assert logits.dtype == torch.float32
    assert_close_relative(logits, scores.float().mean((2, 3)), rtol=1e-6)
    with torch.no_grad():  # float32 without autocast: as before, bit for bit
        assert torch.equal(model(x), model.score_map(x).mean((2, 3)))


@pytest.mark.cuda
def test_deterministic_lrn_backward_runs_on_cuda(monkeypatch):
    # --deterministic with A-LRN: torch's LRN would raise at the first backward (avg_pool3d on CUDA).
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # as seed_everything sets it (cuBLAS)
    model = lively("A-LRN").cuda()  # eval mode: no dropout, the same function every call
    x = torch.randn(4, 3, 32, 32, device="cuda")
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        ref = torch.autograd.grad(model(x).square().sum(), model.features[0].weight)[0]
        torch.use_deterministic_algorithms(True)
        grads = [torch.autograd.grad(model(x).square().sum(), model.features[0].weight)[0] for _ in range(2)]
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.allow_tf32 = before[1]
    assert torch.equal(grads[0], grads[1])
    assert_close_relative(grads[0], ref, rtol=1e-3)
