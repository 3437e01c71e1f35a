"""The fused feature runner against the modules it runs."""

import copy

import pytest
import torch
from torch import nn

from vgg.engine import FusedFeatures, prepare_for_inference
from vgg.engine import winograd as W

pytestmark = pytest.mark.skipif(not FusedFeatures.available(), reason="needs torch's oneDNN CPU ops")


@pytest.mark.parametrize("winograd", [False, True])
@pytest.mark.parametrize("arch,crop", [("vgg16", 32), ("vgg16_bn", 32), ("vgg11_lrn", 64), ("vgg16_c", 32)])
def test_fused_runner_matches_the_modules(arch, crop, winograd, monkeypatch, tiny):
    # The tiny nets have at most 128 channels: lower the Winograd threshold to run it in every 3x3 conv.
    monkeypatch.setattr(W, "WINOGRAD_MIN_CHANNELS", 1 if winograd else 10**6)
    monkeypatch.setattr(W, "WINOGRAD_MIN_MACS", 0)
    monkeypatch.setattr(W, "WINOGRAD_MIN_SIDE", 1)
    base = tiny(arch, crop)
    fast = prepare_for_inference(copy.deepcopy(base))
    assert isinstance(fast.features, FusedFeatures)
    with torch.inference_mode():
        fast(torch.randn(1, 3, crop, crop))
    n_winograd = sum(getattr(step, "winograd", None) is not None for step in fast.features._plan)
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


def test_fused_runner_follows_weight_changes_and_copies(tiny):
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


def test_fused_runner_stays_out_of_training_and_autograd(tiny):
    model = prepare_for_inference(tiny("vgg11"))
    fused = model.features
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


def fp32_and_bf16(monkeypatch, tiny):
    """A tiny VGG16-BN's float32 and bf16 engines (bf16 allowed on any machine), and their outputs
    on the same crop-size batch."""
    from vgg import distributed

    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: True)  # any machine runs the test
    base = tiny("vgg16_bn", 32)
    fp32 = prepare_for_inference(copy.deepcopy(base))
    bf16 = prepare_for_inference(copy.deepcopy(base), bf16=True)
    x = 50 * torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        return bf16, fp32(x), bf16(x)


def test_bf16_runner_computes_in_bf16_and_stays_close_to_float32(monkeypatch, tiny):
    # --bf16 (opt-in): the convs and the crop-size FC layers in bfloat16, float32 in and out.
    bf16, ref, out = fp32_and_bf16(monkeypatch, tiny)
    with torch.inference_mode():
        big = bf16(50 * torch.randn(2, 3, 64, 96))  # a dense call: the head as convs, in float32
    assert out.dtype == big.dtype == torch.float32 and big.shape == (2, 7)
    assert all(step.weight.dtype == torch.bfloat16 for step in bf16.features._plan
               if hasattr(step, "weight_shape"))
    err = float((out - ref).abs().max() / ref.abs().max())
    assert 1e-5 < err < 3e-2, err  # bf16's rounding, not float32's, and no more
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_bf16_runner_takes_bf16_winograd_on_the_big_convs(monkeypatch, tiny):
    # Lower the thresholds so the tiny net's 3x3 convs take it; the result stays bf16-close.
    monkeypatch.setattr(W, "WINOGRAD_MIN_CHANNELS_BF16", 1)
    monkeypatch.setattr(W, "WINOGRAD_MIN_MACS", 0)
    monkeypatch.setattr(W, "WINOGRAD_MIN_SIDE", 1)
    bf16, ref, out = fp32_and_bf16(monkeypatch, tiny)
    runners = [step.winograd for step in bf16.features._plan if getattr(step, "winograd", None)]
    assert len(runners) == 13 and all(r.tile == 2 and r.weights[0].dtype == torch.bfloat16 for r in runners)
    err = float((out - ref).abs().max() / ref.abs().max())
    assert 1e-5 < err < 5e-2, err
    assert (out.argmax(1) == ref.argmax(1)).all()


def test_bf16_is_refused_where_the_cpu_would_emulate_it(monkeypatch, tiny):
    from vgg import distributed

    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bfloat16"):
        prepare_for_inference(tiny("vgg11", 32), bf16=True)
