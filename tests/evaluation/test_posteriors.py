"""Posteriors (Sec. 3.2, 4.3, 4.4): a view set is the mean of its views, fusion the mean of nets."""

import pytest
import torch

import vgg
from evaluation.support import CROP, images, rescale, softmax_of, synthetic_batches, tiny
from vgg import evaluation as ev
from vgg.data import grid_offsets


def test_dense_at_crop_size_equals_the_centre_crop():
    model = tiny()
    x = images(3, CROP, CROP)
    dense = ev.view_posteriors(model, x, ev.method_views("dense", [CROP], flip=False))
    centre = ev.view_posteriors(model, x, ev.method_views("centre", [CROP], flip=False))
    torch.testing.assert_close(dense, centre, rtol=0, atol=0)
    torch.testing.assert_close(dense, softmax_of(model, x), rtol=1e-5, atol=1e-6)
    # and end to end: an image set already at the crop size, evaluated at Q = crop
    base = list(images(4, CROP, CROP, seed=1))
    run = [ev.fused_posteriors([model], [ev.method_views(p, [CROP], flip=True)],
                               synthetic_batches(base), 4)[0] for p in ("dense", "centre")]
    torch.testing.assert_close(run[0], run[1], rtol=0, atol=0)
    # on a larger image dense differs from a centre crop: it sees the whole image
    big = images(2, 64, 48)
    assert not torch.allclose(ev.view_posteriors(model, big, ev.method_views("dense", [48], False)),
                              ev.view_posteriors(model, big, ev.method_views("centre", [48], False)))


def test_a_view_set_is_the_mean_of_its_views_posteriors():
    model = tiny()
    base = [images(1, 30, 40, seed=2)[0], images(1, 44, 36, seed=3)[0]]
    views = ev.method_views("dense", [32, 40], flip=True)
    assert len(views) == 4
    probs, met = ev.fused_posteriors([model], [views], synthetic_batches(base), 2)
    assert met.all()
    for i, img in enumerate(base):
        parts = []
        for q in (32, 40):
            y = rescale(img[None], q)
            with ev.caffe_pooling(model):  # the default of dense views (the sides are not multiples of 32)
                parts += [softmax_of(model, y), softmax_of(model, y.flip(-1))]
        torch.testing.assert_close(probs[i:i + 1], torch.stack(parts).mean(0), rtol=1e-5, atol=1e-6)
    # dense+multi-crop: the dense and the multi-crop posteriors averaged (Sec. 4.3), each half 1/2
    both = ev.method_views("dense+multi-crop", [32], flip=True)
    assert len(both) == 2 + 50
    y = rescale(base[0][None], 32)
    dense = torch.stack([softmax_of(model, y), softmax_of(model, y.flip(-1))]).mean(0)
    rows, cols = grid_offsets(y.shape[-2], CROP), grid_offsets(y.shape[-1], CROP)
    crops = [y[..., r:r + CROP, c:c + CROP] for r in rows for c in cols]
    multi = torch.stack([softmax_of(model, z) for c in crops for z in (c, c.flip(-1))]).mean(0)
    got = ev.view_posteriors(model, y, both)
    torch.testing.assert_close(got, (dense + multi) / 2, rtol=1e-5, atol=1e-6)
    # the forward passes may be grouped differently; the result may not change
    torch.testing.assert_close(ev.view_posteriors(model, y, both, max_batch=1), got,
                               rtol=1e-5, atol=1e-6)


def test_fusion_of_a_net_with_itself_is_the_net_and_fusion_is_the_mean():
    a, b = tiny(0), tiny(1)
    base = [images(1, 36, 48, seed=s)[0] for s in range(3)] + [images(1, 40, 40, seed=9)[0]]
    batches = synthetic_batches(base)
    views = ev.method_views("dense+multi-crop", [32, 40])
    alone, _ = ev.fused_posteriors([a], [views], batches, 4)
    twice, _ = ev.fused_posteriors([a, a], [views, views], batches, 4)
    torch.testing.assert_close(twice, alone, rtol=1e-6, atol=1e-7)
    other, _ = ev.fused_posteriors([b], [views], batches, 4)
    fused, _ = ev.fused_posteriors([a, b], [views, views], batches, 4)
    torch.testing.assert_close(fused, (alone + other) / 2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused.sum(1), torch.ones(4))


def test_grey_images_feed_a_colour_net_and_a_skipped_image_is_masked():
    model = tiny()
    grey = images(2, 32, 32, c=1)
    torch.testing.assert_close(ev.posterior(model, grey), softmax_of(model, grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="expects 2-channel images, got 3"):
        ev.posterior(tiny(in_channels=2), images(1, 32, 32))
    base = [images(1, 32, 40, seed=s)[0] for s in range(3)]

    def batches(q):  # image 1 is "undecodable" at every scale
        for x, y, i in synthetic_batches(base)(q):
            keep = i != 1
            if keep.any():
                yield x[keep], y[keep], i[keep]
    _, met = ev.fused_posteriors([model], [ev.method_views("dense", [32, 40])], batches, 3)
    assert met.tolist() == [True, False, True]


def test_views_showing_the_same_pixels_run_once():
    model = tiny()
    seen = []
    model.features[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = images(3, CROP, CROP)
    multi = ev.view_posteriors(model, x, ev.method_views("multi-crop", [CROP]))
    assert sum(seen) == 2 * 3  # 25 identical crops and their 25 identical flips: two passes
    torch.testing.assert_close(multi, ev.view_posteriors(model, x, ev.method_views("dense", [CROP])))
    seen.clear()
    ev.view_posteriors(model, images(3, 40, 48), ev.method_views("multi-crop", [40]))
    assert sum(seen) == 50 * 3  # every crop different


def test_caffe_pooling_sees_a_side_that_is_not_a_multiple_of_32_whole():
    model = tiny()
    x = images(2, 37, 37)
    assert model.score_map(x.float()).shape[-2:] == (1, 1)  # PyTorch: cut to the top-left 32
    with ev.caffe_pooling(model):
        assert model.score_map(x.float()).shape[-2:] == (2, 2)  # Caffe: rounded up
    assert all(not m.ceil_mode for m in model.modules() if isinstance(m, torch.nn.MaxPool2d))
    views = ev.method_views("dense", [64])
    y = images(2, 64, 96)
    plain, _ = ev.fused_posteriors([model], [views], lambda q: [(y, torch.zeros(2), torch.arange(2))], 2,
                                   ceil_mode=False)
    ceil, _ = ev.fused_posteriors([model], [views], lambda q: [(y, torch.zeros(2), torch.arange(2))], 2)
    torch.testing.assert_close(plain, ceil, rtol=0, atol=0)  # multiples of 32: the same
    batches = lambda q: [(x, torch.zeros(2), torch.arange(2))]  # noqa: E731
    views = ev.method_views("dense", [37])
    assert not torch.allclose(ev.fused_posteriors([model], [views], batches, 2, ceil_mode=False)[0],
                              ev.fused_posteriors([model], [views], batches, 2)[0])


def test_dense_views_pool_as_caffe_by_default():
    # At Q = 34 (the demo's validation scale, not a multiple of 32) the default is Caffe's rounding,
    # on the plain modules and on the CPU engine alike; --floor-pooling gives PyTorch's.
    from vgg.engine import prepare_for_inference

    views = ev.method_views("dense", [34], flip=True)
    x = images(2, 34, 45, seed=4)
    for model in (tiny(), prepare_for_inference(tiny())):
        def run(batch, model=model, **kw):
            return ev.fused_posteriors([model], [views], lambda q: [(batch, torch.zeros(2), torch.arange(2))],
                                       2, **kw)[0]
        with ev.caffe_pooling(model):
            reference = torch.stack([softmax_of(model, x), softmax_of(model, x.flip(-1))]).mean(0)
        torch.testing.assert_close(run(x), reference, rtol=1e-5, atol=1e-6)
        assert (run(x) - run(x, ceil_mode=False)).abs().max() > 1e-3


def test_a_4_3_image_at_q_256_is_seen_to_its_last_column():
    # The example at the paper's own size: a 4:3 image at Q = 256 is 256 x 341. PyTorch's
    # pooling gives a 2 x 4 score map, whose pooling windows end at column 320; Caffe's gives 2 x 5,
    # a fifth position whose windows reach the last column. The first positions agree (the two differ
    # only near the right edge, where one pads with zeros what the other sees).
    torch.manual_seed(0)
    model = vgg.create_model("A", num_classes=5, width=0.0625, init="glorot").eval()
    x = (images(1, 256, 341, seed=5).float() - 120) / 60
    with torch.no_grad():
        floor = model.score_map(x)
        with ev.caffe_pooling(model):
            ceil = model.score_map(x)
    assert floor.shape[-2:] == (2, 4) and ceil.shape[-2:] == (2, 5)
    assert floor.abs().mean() > 1e-3  # scores of order 1, so the comparison means something
    torch.testing.assert_close(ceil[..., :2], floor[..., :2], rtol=1e-5, atol=1e-6)
    assert (ceil[..., 4:] - floor[..., 3:]).abs().max() > 1e-3


# -- the GPU's branches, on the CPU -------------------------------------------------------------------

def test_bf16_autocast_evaluation_runs_the_nets_in_bf16_and_averages_in_float32(monkeypatch):
    # CUDA's amp path, run on the CPU: the convolutions in bf16, posteriors and averages in float32.
    from vgg import distributed

    model = tiny()
    base = [images(1, 40, 52, seed=4)[0], images(1, 44, 36, seed=5)[0], images(1, 40, 52, seed=6)[0]]
    plan = [ev.method_views("dense", [32, 40], flip=True)]
    dtypes = []
    hook = model.features[0].register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    fp32 = ev.posteriors_by_scale([model], plan, synthetic_batches(base), 3)
    assert set(dtypes) == {torch.float32}
    dtypes.clear()
    monkeypatch.setattr(distributed, "AMP_DEVICES", ("cuda", "cpu"))
    bf16 = ev.posteriors_by_scale([model], plan, synthetic_batches(base), 3)
    hook.remove()
    assert set(dtypes) == {torch.bfloat16}
    for key, p in bf16.probs.items():
        assert p.dtype == torch.float32 and p.sum(1).sub(1).abs().max() < 1e-5, key
        assert (p - fp32.probs[key]).abs().max() < 0.03  # bf16's 8 bits, on posteriors of order 1
        assert (p - fp32.probs[key]).abs().max() > 0  # ... and not the float32 run itself
        assert bf16.seconds[key] > 0
    assert ev.posteriors_by_scale([model], plan, synthetic_batches(base), 3, amp=False).probs.keys() == \
        fp32.probs.keys()


@pytest.mark.cuda
def test_the_evaluation_loop_does_not_wait_for_the_gpu_after_each_batch():
    # Each batch's host-to-GPU copies and the GPU's work are queued without waiting: the number of
    # synchronising calls does not grow with the number of batches (decoding overlaps the GPU).
    import warnings

    from vgg import data

    model = tiny().cuda()
    plan = [ev.method_views("dense", [40], flip=True)]

    def syncs(n_images):
        labels = torch.zeros(n_images, dtype=torch.long)
        dataset = data.TensorDataset(images(n_images, 44, 36, seed=7), labels, ["a"], "toy", "test")

        def batches(q):
            return data.eval_batches(dataset, scale=q, batch_size=4, device="cuda")

        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                sp = ev.posteriors_by_scale([model], plan, batches, n_images)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert sp.met.all().item() and all(s > 0 for s in sp.seconds.values())
        return sum("synchroniz" in str(w.message) for w in seen)

    syncs(8)  # warm-up: cuDNN, cuBLAS, the allocator
    assert syncs(8) == syncs(24)
