"""Test scales and views (Sec. 3.2, 4.1, 4.2): the paper's scales, the 5x5 grid, channel matching."""

import math

import numpy as np
import pytest
import torch

from evaluation.support import CROP, images, tiny
from vgg import evaluation as ev
from vgg.data import centre_offset, grid_offsets


def test_default_scales_follow_the_paper():
    assert ev.default_scales(224, (256, 256)) == [224, 256, 288]  # Sec. 4.2, fixed S
    assert ev.default_scales(224, (384, 384)) == [352, 384, 416]
    assert ev.default_scales(224, (256, 512)) == [256, 384, 512]  # jittered S
    assert ev.default_scales(224, (256, 512), single=True) == [384]  # Table 3, Q = (Smin+Smax)/2
    assert ev.default_scales(224, (256, 256), single=True) == [256]
    # proportionate for small crops: step round(32 * 32 / 224) = 5, never below the crop
    assert ev.default_scales(32, (37, 37)) == [32, 37, 42]
    assert ev.default_scales(32, (32, 32)) == [32, 37]
    assert ev.default_scales(32, (37, 73)) == [37, 55, 73]
    assert ev.library_scale(224) == 256 and ev.library_scale(32) == 37


def test_plan_uses_the_checkpoints_training_scale_and_overrides():
    fixed, jitter = tiny(train_scale=(37, 37)), tiny(train_scale=(37, 73))
    plans = ev.plan_views([fixed, jitter], "dense")
    assert sorted({v.scale for v in plans[0]}) == [32, 37, 42]
    assert sorted({v.scale for v in plans[1]}) == [37, 55, 73]
    assert [v.scale for v in ev.plan_views([fixed], "centre")[0]] == [37]  # libraries: 256/224
    assert {v.scale for v in ev.plan_views([fixed], "dense", scales=[40, 33])[0]} == {33, 40}
    with pytest.raises(ValueError, match=r"test scales \[30\] are smaller than the crop size 32"):
        ev.plan_views([fixed], "dense", scales=[30, 40])
    no_info = tiny()
    no_info.info = {}
    assert sorted({v.scale for v in ev.plan_views([no_info], "dense")[0]}) == [32, 37, 42]
    with pytest.raises(ValueError, match="unknown protocol 'tencrop'"):
        ev.method_views("tencrop", [32])


def test_multi_crop_is_5x5x2_views_per_scale_covering_the_corners():
    views = ev.method_views("multi-crop", [40, 48])
    assert len(views) == 2 * 5 * 5 * 2
    for q in (40, 48):
        mine = [v for v in views if v.scale == q]
        assert len(mine) == 50 and all(v.kind == "grid" for v in mine)
        assert {(v.cell, v.flip) for v in mine} == {((r, c), f) for r in range(5) for c in range(5)
                                                    for f in (False, True)}
    assert math.isclose(sum(v.weight for v in views), 1.0)
    assert grid_offsets(48, 32) == [0, 4, 8, 12, 16]
    assert grid_offsets(56, 32) == [0, 6, 12, 18, 24]
    assert grid_offsets(32, 32) == [0] * 5
    for side in range(32, 60):  # symmetric, and the middle crop is the centre crop
        o = grid_offsets(side, 32)
        assert o[0] + o[4] == o[1] + o[3] == side - 32 and o[4] == side - 32
        assert o[2] == centre_offset(side, 32) and o == sorted(o)
    h, w = 40, 56  # a non-square image rescaled to Q = 40
    x = torch.arange(h * w, dtype=torch.int32).view(1, 1, h, w)
    rows, cols = grid_offsets(h, CROP), grid_offsets(w, CROP)
    assert rows == [0, 2, 4, 6, 8] and cols == [0, 6, 12, 18, 24]
    covered = torch.zeros(h, w, dtype=torch.bool)
    for v in [v for v in views if v.scale == 40]:
        out = ev.view_images(x, v, CROP)
        assert out.shape == (1, 1, CROP, CROP)
        r, c = v.cell
        expect = x[..., rows[r]:rows[r] + CROP, cols[c]:cols[c] + CROP]
        torch.testing.assert_close(out, expect.flip(-1) if v.flip else expect)
        covered[rows[r]:rows[r] + CROP, cols[c]:cols[c] + CROP] = True
    corners = {(0, 0): (0, 0), (0, 4): (0, w - 1), (4, 0): (h - 1, 0), (4, 4): (h - 1, w - 1)}
    for cell, (py, px) in corners.items():
        crop = ev.view_images(x, ev.View(40, "grid", cell), CROP)
        assert (crop == x[0, 0, py, px]).any(), f"cell {cell} misses corner {(py, px)}"
    assert covered.all()


def test_colour_images_for_a_grey_net_become_pillows_luma():
    from PIL import Image

    rgb = images(1, 9, 11, seed=5)
    expect = Image.fromarray(rgb[0].permute(1, 2, 0).numpy()).convert("L")
    got = ev.match_channels(rgb, 1)
    assert got.dtype == torch.uint8 and got.shape == (1, 1, 9, 11)
    assert got[0, 0].tolist() == np.asarray(expect).tolist()
