"""vgg.localization.draw: the outline lands on the box's edge pixels, and the grid is a PNG."""

import numpy as np
import torch
from PIL import Image

from vgg.localization import draw as D

GREEN, RED = D.COLORS[0], D.COLORS[1]


def test_outline_on_the_box_edge_pixels():
    image = np.zeros((20, 30), dtype=np.uint8)
    im = np.asarray(D.draw_boxes(image, [[4, 6, 14, 10]], colors=GREEN))
    assert im.shape == (20, 30, 3)
    # Box (x1, y1, x2, y2) = (4, 6, 14, 10) covers columns 4..13 and rows 6..9.
    assert tuple(im[6, 4]) == GREEN and tuple(im[9, 13]) == GREEN and tuple(im[6, 13]) == GREEN
    assert tuple(im[9, 4]) == GREEN
    assert im[5, 4].sum() == 0 and im[6, 14].sum() == 0 and im[10, 13].sum() == 0 and im[6, 3].sum() == 0
    assert im[8, 8].sum() == 0  # outline only


def test_scale_tensor_input_and_several_colours():
    image = torch.full((3, 8, 8), 0.5)
    im = np.asarray(D.draw_boxes(image, torch.tensor([[0.0, 0, 4, 4], [4, 4, 8, 8]]), scale=3))
    assert im.shape == (24, 24, 3)
    assert tuple(im[0, 0]) == GREEN and tuple(im[11, 11]) == GREEN and tuple(im[12, 12]) == RED
    assert tuple(im[5, 5]) == (128, 128, 128)
    # A NaN box (a class without a prediction) is left out.
    D.draw_boxes(image, [[float("nan")] * 4])


def test_sample_grid_writes_a_png(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 16, 16), dtype=np.uint8)
    boxes = np.tile(np.array([[2.0, 3, 10, 12]]), (20, 1))
    path = tmp_path / "samples" / "grid.png"
    grid = D.sample_grid(images, boxes, [f"c{i}" for i in range(20)], path, n=6, predicted=boxes + 1,
                         columns=3, scale=2, pad=1)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (3 * 33 + 1, 2 * 33 + 1) == grid.size
        tile = np.asarray(im.convert("RGB"))[1:33, 1:33]
    assert tuple(tile[2 * 12 - 1, 2 * 10 - 1]) == GREEN  # the true box's last pixel, scaled
    assert tuple(tile[2 * 13 - 1, 2 * 11 - 1]) == RED  # the prediction's
