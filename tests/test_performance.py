"""The inference fast path (prepare_for_inference's fused CPU runner) and the `vgg bench` entry."""

import copy

import pytest
import torch
from torch import nn

import vgg
from vgg import models
from vgg.cli import COMMANDS, build_parser
from vgg.models import FusedFeatures, PackedLinear, Winograd3x3, prepare_for_inference

pytestmark = pytest.mark.skipif(not FusedFeatures.available(), reason="needs torch's oneDNN CPU ops")


def tiny(arch: str, crop: int = 32, seed: int = 0) -> vgg.VGG:
    torch.manual_seed(seed)
    model = vgg.create_model(arch, width=0.25, crop_size=crop, num_classes=7, init="glorot")
    for m in model.modules():  # BatchNorm with non-trivial statistics, so folding is exercised
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


@pytest.mark.parametrize("winograd", [False, True])
@pytest.mark.parametrize("arch,crop", [("vgg16", 32), ("vgg16_bn", 32), ("vgg11_lrn", 64), ("vgg16_c", 32)])
def test_fused_runner_matches_the_modules(arch, crop, winograd, monkeypatch):
    # The tiny nets have at most 128 channels: lower the Winograd threshold to run it in every 3x3 conv.
    monkeypatch.setattr(models, "WINOGRAD_MIN_CHANNELS", 1 if winograd else 10**6)
    monkeypatch.setattr(models, "WINOGRAD_MIN_MACS", 0)
    monkeypatch.setattr(models, "WINOGRAD_MIN_SIDE", 1)
    base = tiny(arch, crop)
    fast = prepare_for_inference(copy.deepcopy(base))
    assert isinstance(fast.__dict__.get("fused_features"), FusedFeatures)
    with torch.inference_mode():
        fast(torch.randn(1, 3, crop, crop))
    n_winograd = sum(getattr(step, "winograd", None) is not None for step in fast.fused_features._plan)
    n_3x3 = sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in base.features)
    assert n_winograd == (n_3x3 if winograd else 0)
    for shape in [(1, 3, crop, crop), (3, 3, crop + 32, crop + 64), (2, 3, crop, crop)]:
        x = 50 * torch.randn(*shape)
        with torch.inference_mode():
            ref, out = base(x), fast(x)
            ref_map, out_map = base.score_map(x), fast.score_map(x)
        # the same convolutions (BN folded into them reorders the arithmetic a little)
        tol = dict(rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out, ref, **tol)
        torch.testing.assert_close(out_map, ref_map, **tol)


@pytest.mark.parametrize("shape", [(2, 5, 8, 8), (1, 5, 7, 9), (3, 5, 1, 2), (1, 5, 13, 4)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("tile", [2, 4])
def test_winograd_equals_the_direct_convolution(shape, relu, tile):
    torch.manual_seed(0)
    conv = nn.Conv2d(shape[1], 6, 3, padding=1)
    x = torch.randn(*shape)
    ref = conv(x).relu() if relu else conv(x)
    for layout in (torch.contiguous_format, torch.channels_last):
        winograd = Winograd3x3(conv.weight.detach(), conv.bias.detach(), relu, rows_hint=16, tile=tile)
        out = winograd(x.contiguous(memory_format=layout))
        assert out.shape == ref.shape and out.is_contiguous(memory_format=torch.channels_last)
        # float32 rounding of the transforms, relative to the output's scale (the larger tile's
        # points +-2 amplify it a little more)
        scale = ref.abs().max().item() * (1e-6 if tile == 2 else 1e-5)
        torch.testing.assert_close(out, ref.detach(), rtol=0, atol=scale)


def test_winograd_in_pieces_of_a_batch_equals_one_piece(monkeypatch):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    winograd = Winograd3x3(conv.weight.detach(), conv.bias.detach(), True, rows_hint=16)
    x = torch.randn(5, 4, 9, 10)
    whole = winograd(x)
    monkeypatch.setattr(models, "WINOGRAD_CHUNK_BYTES", 2000)  # 9 tiles of 576 bytes: one image per piece
    assert torch.equal(winograd(x), whole)


def test_winograd_takes_only_plain_3x3_convolutions():
    assert Winograd3x3.applies(nn.Conv2d(512, 512, 3, padding=1))
    assert not Winograd3x3.applies(nn.Conv2d(64, 64, 3, padding=1))  # too few channels to pay
    for conv in (nn.Conv2d(512, 512, 3, padding=1, stride=2), nn.Conv2d(512, 512, 1),
                 nn.Conv2d(512, 512, 3, padding=2, dilation=2), nn.Conv2d(512, 512, 3, padding=1, groups=2),
                 nn.Conv2d(512, 512, 3, padding=1, padding_mode="reflect")):
        assert not Winograd3x3.applies(conv)


def test_fused_runner_follows_weight_changes_and_copies():
    base = tiny("vgg11_bn")
    fast = prepare_for_inference(copy.deepcopy(base))
    x = 50 * torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        fast(x)  # packs the weights
    state = {k: v * 1.5 if v.is_floating_point() else v for k, v in base.state_dict().items()}
    base.load_state_dict(state)
    fast.load_state_dict(state)
    with torch.no_grad():
        fast.features[0].bias.add_(0.25)
        base.features[0].bias.add_(0.25)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), base(x), rtol=1e-4, atol=1e-5)
        copied = copy.deepcopy(fast)
        torch.testing.assert_close(copied(x), fast(x))


def test_fused_runner_stays_out_of_training_and_autograd():
    model = prepare_for_inference(tiny("vgg11"))
    fused = model.fused_features
    x = 50 * torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert fused.usable(x)
    assert not fused.usable(x)  # autograd on: the modules run, gradients flow
    model(x).sum().backward()
    assert model.features[0].weight.grad is not None
    model.train()
    with torch.no_grad():
        assert not fused.usable(x)
    model.eval()
    with torch.no_grad():
        assert not fused.usable(x.double())


def test_bench_command_is_registered():
    assert "bench" in COMMANDS
    args = build_parser().parse_args(["bench", "--quick", "--only", "inference"])
    assert args.quick and args.only == ["inference"]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--only", "nothing"])


def test_packed_head_matches_linear_and_follows_changes():
    base = tiny("vgg11")
    fast = prepare_for_inference(copy.deepcopy(base))
    assert all(isinstance(fast.classifier[i].__dict__.get("packed"), PackedLinear) for i in (0, 3, 6))
    feats = torch.randn(3, base.classifier[0].in_channels, 1, 1)
    with torch.inference_mode():
        torch.testing.assert_close(fast.forward_head(feats), base.forward_head(feats), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        for m in (base, fast):
            m.classifier[6].weight.mul_(-2.0)
    with torch.inference_mode():
        for n in (1, 5):  # packed once, any batch size
            f = torch.randn(n, base.classifier[0].in_channels, 1, 1)
            torch.testing.assert_close(fast.forward_head(f), base.forward_head(f), rtol=1e-5, atol=1e-6)
    assert not fast.classifier[0].packed.usable(feats.flatten(1))  # autograd on: plain F.linear
