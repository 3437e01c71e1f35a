"""vgg.localization.boxes: IoU against a plain re-implementation and torchvision, the encoding, the
dense windows against a real fully-convolutional application, the box under the training transforms
against the same transforms applied to a mask image."""

import json
import math
import os
import subprocess

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vgg.localization import boxes as B

SYSTEM_PYTHON = "/usr/bin/python3"


def random_boxes(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2 + 0.5
    return torch.cat([xy, xy + wh], dim=1)


def plain_iou(a, b):
    """IoU of two boxes, written out the long way."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


# -- geometry -------------------------------------------------------------------------------------------

def test_iou_matches_plain_reimplementation():
    a = random_boxes(30, 0)
    b = torch.cat([random_boxes(20, 1), a[:3], a[:2] + 1000])  # overlapping, identical, disjoint
    got = B.box_iou(a, b)
    want = torch.tensor([[plain_iou(x.tolist(), y.tolist()) for y in b] for x in a], dtype=torch.float64)
    assert got.shape == (30, 25)
    torch.testing.assert_close(got, want)
    assert (got[:3, 20:23].diagonal() == 1).all() and (got[:, 23:] == 0).all()
    torch.testing.assert_close(B.elementwise_iou(a[:25], b), got[:25].diagonal())


def test_iou_known_values_and_empty_boxes():
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[5.0, 0, 15, 10], [0, 0, 10, 20], [10, 10, 20, 20], [3, 3, 3, 8]])
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor([[1 / 3, 0.5, 0.0, 0.0]]))
    assert B.box_iou(b[3:], b[3:]).item() == 0  # two empty boxes: 0, not NaN


def _clean_env():
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def test_iou_matches_torchvision():
    """Against ``torchvision.ops.box_iou`` of the system python (Debian's python3-torchvision; the
    project's venv has no torchvision), in a subprocess; skipped where it is not installed."""
    a, b = random_boxes(25, 2), torch.cat([random_boxes(15, 3), random_boxes(2, 2)])
    code = ("import json, sys\n"
            "try:\n    import torch; from torchvision.ops import box_iou\n"
            "except ImportError:\n    sys.exit(3)\n"
            "d = json.load(sys.stdin)\n"
            "print(json.dumps(box_iou(torch.tensor(d['a'], dtype=torch.float64), "
            "torch.tensor(d['b'], dtype=torch.float64)).tolist()))")
    try:
        run = subprocess.run([SYSTEM_PYTHON, "-c", code], capture_output=True, text=True, timeout=120,
                             input=json.dumps({"a": a.tolist(), "b": b.tolist()}), env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot run {SYSTEM_PYTHON}: {e}")
    if run.returncode == 3:
        pytest.skip(f"no torchvision in {SYSTEM_PYTHON} (apt-get install python3-torchvision)")
    assert run.returncode == 0, run.stderr
    torch.testing.assert_close(B.box_iou(a, b), torch.tensor(json.loads(run.stdout), dtype=torch.float64))


def test_area_clip_and_conversions():
    b = torch.tensor([[2.0, 3, 12, 7], [-5, -4, 3, 50], [60, 60, 70, 70]])
    torch.testing.assert_close(B.area(b), torch.tensor([40.0, 432, 100]))
    torch.testing.assert_close(B.clip_boxes(b, 64, 32),
                               torch.tensor([[2.0, 3, 12, 7], [0, 0, 3, 32], [60, 32, 64, 32]]))
    assert B.area(B.clip_boxes(b, 64, 32))[2] == 0  # below the image: empty
    c = B.xyxy_to_cxcywh(b[:1])
    torch.testing.assert_close(c, torch.tensor([[7.0, 5, 10, 4]]))  # x then y, width then height
    torch.testing.assert_close(B.cxcywh_to_xyxy(c), b[:1])
    r = random_boxes(50, 4)
    torch.testing.assert_close(B.cxcywh_to_xyxy(B.xyxy_to_cxcywh(r)), r)


def test_rescale_and_flip():
    b = torch.tensor([[2.0, 3, 12, 7]])
    torch.testing.assert_close(B.rescale_boxes(b, (2, 3)), torch.tensor([[4.0, 9, 24, 21]]))
    torch.testing.assert_close(B.rescale_boxes(B.rescale_boxes(b, 1.5), 1 / 1.5), b)
    torch.testing.assert_close(B.to_original(B.rescale_boxes(b, (2, 0.75)), (2, 0.75)), b)
    torch.testing.assert_close(B.to_original(torch.tensor([[4.0, 9, 24, 21]]), (2, 3)), b)
    torch.testing.assert_close(B.hflip_boxes(b, 20), torch.tensor([[8.0, 3, 18, 7]]))
    torch.testing.assert_close(B.hflip_boxes(B.hflip_boxes(b, 20), 20), b)


# -- encoding and dense windows -------------------------------------------------------------------------

def test_encode_decode_round_trip_and_crop_range():
    boxes = random_boxes(40, 5)
    windows = random_boxes(40, 6) * 2
    torch.testing.assert_close(B.decode(B.encode(boxes, windows), windows), boxes)
    # A box inside a 224 crop encodes to [0, 1]; centre and size relative to the crop's side.
    inside = torch.tensor([[20.0, 40, 120, 200]])
    p = B.encode(inside, torch.tensor([0.0, 0, 224, 224]))
    torch.testing.assert_close(p, torch.tensor([[70 / 224, 120 / 224, 100 / 224, 160 / 224]]))
    # A non-square window: x by its width, y by its height.
    p = B.encode(inside, torch.tensor([10.0, 20, 110, 420]))
    torch.testing.assert_close(p, torch.tensor([[0.6, 0.25, 1.0, 0.4]]))


def test_dense_windows_are_the_crops_of_a_fully_convolutional_net():
    # A net with the VGG head's geometry and no padding (so no boundary effects): stride 32, then a
    # crop/32 kernel. Its output at (i, j) on a large input must equal its output on that window.
    torch.manual_seed(0)
    crop = 64
    net = nn.Sequential(nn.AvgPool2d(32), nn.Conv2d(2, 3, kernel_size=crop // 32))
    x = torch.randn(1, 2, 160, 224)
    out = net(x)[0]
    windows = B.dense_windows(out.shape[1], out.shape[2], crop)
    assert windows.shape == (4, 6, 4) and out.shape[1:] == (4, 6)
    for i, j in [(0, 0), (1, 4), (3, 5), (2, 1)]:
        x1, y1, x2, y2 = windows[i, j].int().tolist()
        assert (x2 - x1, y2 - y1) == (crop, crop)
        torch.testing.assert_close(net(x[:, :, y1:y2, x1:x2])[0, :, 0, 0], out[:, i, j])


# -- the box under the training transforms --------------------------------------------------------------

def mask_box(mask):
    """Tight box (pixel edges) of a 2-D boolean mask."""
    ys, xs = np.nonzero(mask.numpy())
    return torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float64)


CASES = [  # (height, width, box, S, crop offset (x, y), crop size, flip)
    (37, 53, (5, 9, 31, 30), 48, (3, 0), 40, False),
    (37, 53, (5, 9, 31, 30), 48, (3, 0), 40, True),
    (60, 41, (2, 30, 17, 58), 32, (0, 6), 24, True),   # crop cuts the box: clipped
    (45, 45, (0, 0, 45, 20), 70, (20, 5), 50, False),  # box on the image's edge
    (50, 80, (10, 5, 70, 40), 100, (60, 30), 64, True),
]


@pytest.mark.parametrize("h,w,box,s,offset,crop,flip", CASES)
def test_transform_matches_transforming_a_mask(h, w, box, s, offset, crop, flip):
    """Draw the box as a filled mask, rescale it to shorter side S, crop, flip; its tight box is the
    transformed box to within half a pixel (nearest resampling snaps edges to pixel centres)."""
    mask = torch.zeros(h, w)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 1
    nh, nw = (s, math.floor(w * s / h + 0.5)) if h <= w else (math.floor(h * s / w + 0.5), s)
    big = F.interpolate(mask[None, None], size=(nh, nw), mode="nearest-exact")[0, 0]
    cx, cy = offset
    cut = big[cy:cy + crop, cx:cx + crop]
    assert cut.shape == (crop, crop)
    if flip:
        cut = cut.flip(-1)
    got, weight = B.transform_boxes(torch.tensor(box, dtype=torch.float64), (nw / w, nh / h),
                                    (cx, cy, cx + crop, cy + crop), flip, crop)
    torch.testing.assert_close(got, mask_box(cut > 0.5), atol=0.5 + 1e-6, rtol=0)
    kept = (cut > 0.5).sum() / (big > 0.5).sum()
    assert abs(kept - 0.5) > 0.05  # the cases are chosen away from the rule's edge
    assert weight.item() == float(kept >= 0.5)


def test_transform_with_the_crop_box_in_source_pixels():
    """scale=1 and a crop box in source pixels, resampled to the crop size: what the project's
    batched crops do (``grid_sample`` over the source box). Checked the same way with a mask."""
    h, w, crop = 30, 40, 32
    mask = torch.zeros(h, w)
    mask[6:21, 11:33] = 1
    src = torch.tensor([8.5, 2.25, 38.5, 27.25], dtype=torch.float64)  # 30 x 25 source pixels
    t = (torch.arange(crop, dtype=torch.float64) + 0.5) / crop  # output pixel centres, in [0, 1]
    gx = (src[0] + t * (src[2] - src[0])) / w * 2 - 1
    gy = (src[1] + t * (src[3] - src[1])) / h * 2 - 1
    grid = torch.stack([gx[None, :].expand(crop, crop), gy[:, None].expand(crop, crop)], -1)
    cut = F.grid_sample(mask[None, None].double(), grid[None], mode="nearest", align_corners=False)[0, 0]
    got, weight = B.transform_boxes(torch.tensor([11.0, 6, 33, 21]), 1, src, False, crop)
    torch.testing.assert_close(got.double(), mask_box(cut > 0.5), atol=0.5 * crop / 25 + 1e-6, rtol=0)
    assert weight.item() == 1


def test_transform_batch_and_the_weight_rule():
    boxes = torch.tensor([[0.0, 0, 10, 10]] * 5)
    crops = torch.tensor([[0.0, 0, 32, 32],   # box inside: kept 1.0
                          [6.0, 0, 38, 32],   # kept 0.4 -> weight 0
                          [4.0, 0, 36, 32],   # kept 0.6 -> weight 1
                          [5.0, 0, 37, 32],   # kept exactly 0.5 -> weight 1 (below 0.5 is 0)
                          [20.0, 20, 52, 52]])  # box outside the crop: empty, weight 0
    got, weight = B.transform_boxes(boxes, 1, crops, torch.tensor([False, False, True, False, False]), 32)
    assert weight.tolist() == [1, 0, 1, 1, 0]
    torch.testing.assert_close(got[:4], torch.tensor([[0.0, 0, 10, 10], [0, 0, 4, 10], [26, 0, 32, 10],
                                                      [0, 0, 5, 10]]))
    assert B.area(got[4]) == 0
    # Per-sample scale factors (N, 2) and (N, 1), against one at a time.
    scales = torch.tensor([[1.0, 2.0], [2.0, 1.0], [1.5, 1.5], [1.0, 1.0], [3.0, 0.5]])
    together, _ = B.transform_boxes(boxes, scales, crops, False, 32)
    for i in range(5):
        alone, _ = B.transform_boxes(boxes[i], tuple(scales[i].tolist()), crops[i], False, 32)
        torch.testing.assert_close(together[i], alone)
    column, _ = B.transform_boxes(boxes, scales[:, :1], crops, False, 32)
    expanded, _ = B.transform_boxes(boxes, scales[:, :1].expand(5, 2), crops, False, 32)
    torch.testing.assert_close(column, expanded)


def test_localization_correct():
    truth = torch.tensor([[10.0, 10, 50, 50]])
    near, far = [12.0, 10, 52, 48], [60.0, 60, 90, 90]
    assert B.localization_correct([3, 7], [far, near], [7], truth)
    assert not B.localization_correct([3, 7], [near, far], [7], truth)  # right box, wrong class
    assert not B.localization_correct([7], [[10.0, 10, 50, 30]], [7], truth)  # IoU exactly 0.5: not > 0.5
    assert B.localization_correct([1, 2], [far, near], [9, 2], torch.cat([truth + 40, truth]))
