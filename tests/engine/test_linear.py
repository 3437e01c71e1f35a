"""The packed FC layers against F.linear."""

import copy

import pytest
import torch

from vgg.engine import PackedLinear, prepare_for_inference

pytestmark = pytest.mark.skipif(not PackedLinear.available(), reason="needs torch's oneDNN CPU ops")


def test_packed_head_matches_linear_and_follows_changes(tiny):
    base = tiny("vgg11")
    fast = prepare_for_inference(copy.deepcopy(base))
    assert all(isinstance(fast.classifier[i], PackedLinear) for i in (0, 3, 6))
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
    assert not fast.classifier[0].usable(feats.flatten(1))  # autograd on: plain F.linear
