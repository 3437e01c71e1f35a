"""Winograd F(m x m, 3x3) against the direct convolution, and which convs take it."""

import pytest
import torch
from torch import nn

from vgg.engine import guards
from vgg.engine import winograd as W
from vgg.engine.winograd import Winograd3x3

pytestmark = pytest.mark.skipif(not guards.has_ops(guards.LINEAR_OPS), reason="needs torch's oneDNN CPU ops")


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
    monkeypatch.setattr(W, "WINOGRAD_CHUNK_BYTES", 2000)  # 9 tiles of 576 bytes: one image per piece
    assert torch.equal(winograd(x), whole)


def test_bf16_winograd_rounds_about_as_the_direct_bf16_conv():
    """bf16 Winograd (F(2x2), the bf16 engine's tile) stays within 3x the direct bf16 conv's error
    against a float64 reference; F(4x4) in bf16 would be ~15x (WINOGRAD_TILE_BF16)."""
    from vgg.engine.fused import FusedConv

    torch.manual_seed(0)
    conv = nn.Conv2d(64, 32, 3, padding=1)
    nn.init.kaiming_normal_(conv.weight)
    x = torch.randn(2, 64, 12, 12).relu()
    w, b = conv.weight.detach(), conv.bias.detach()
    ref = torch.nn.functional.conv2d(x.double(), w.double(), b.double(), padding=1).relu()
    xb = x.bfloat16().contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        direct = FusedConv(conv, w, b, True, tuple(x.shape), torch.bfloat16)(xb)
        winograd = Winograd3x3(w, b, True, 16, dtype=torch.bfloat16)(xb)
    assert winograd.dtype == torch.bfloat16 and winograd.is_contiguous(memory_format=torch.channels_last)

    def err(y):
        return float((y.double() - ref).norm() / ref.norm())

    assert 1e-4 < err(direct) < err(winograd) < 3 * err(direct), (err(direct), err(winograd))


def test_winograd_takes_only_plain_3x3_convolutions():
    assert Winograd3x3.applies(nn.Conv2d(512, 512, 3, padding=1))
    assert not Winograd3x3.applies(nn.Conv2d(64, 64, 3, padding=1))  # too few channels to pay
    # in bf16 the direct conv is twice as fast, so Winograd pays only from 256 channels
    assert Winograd3x3.applies(nn.Conv2d(128, 128, 3, padding=1))
    assert not Winograd3x3.applies(nn.Conv2d(128, 128, 3, padding=1), torch.bfloat16)
    assert Winograd3x3.applies(nn.Conv2d(256, 256, 3, padding=1), torch.bfloat16)
    for conv in (nn.Conv2d(512, 512, 3, padding=1, stride=2), nn.Conv2d(512, 512, 1),
                 nn.Conv2d(512, 512, 3, padding=2, dilation=2), nn.Conv2d(512, 512, 3, padding=1, groups=2),
                 nn.Conv2d(512, 512, 3, padding=1, padding_mode="reflect")):
        assert not Winograd3x3.applies(conv)
