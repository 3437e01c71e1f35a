"""vgg.localization.cluttered: shapes, determinism, exact boxes (checked on the garment's own mask),
and the cached splits (on a few hundred synthetic garments: no data set is read)."""

import numpy as np
import pytest

from vgg.localization import cluttered as C


def garments(n=300, seed=0):
    """Stand-ins for Fashion-MNIST: a bright rectangle-ish blob of random size and place in 28 x 28
    (some touch the border, as real garments do), with a dimmer texture."""
    rng = np.random.default_rng(seed)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    for i in range(n):
        h, w = rng.integers(6, 29, size=2)
        y, x = rng.integers(0, 29 - h), rng.integers(0, 29 - w)
        images[i, y:y + h, x:x + w] = rng.integers(40, 256, size=(h, w))
    return images, rng.integers(0, 10, size=n).astype(np.uint8)


def own_mask_box(canvas):
    """Tight box of a canvas's non-zero pixels, the long way round."""
    ys, xs = np.nonzero(canvas)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_shapes_types_and_ranges():
    x, y = garments()
    canvases, boxes, labels = C.make_cluttered(x, y, seed=1)
    assert canvases.shape == (300, 64, 64) and canvases.dtype == np.uint8
    assert boxes.shape == (300, 4) and boxes.dtype == np.float32
    assert labels.dtype == np.int64 and (labels == y).all()
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= 64).all()
    assert (boxes[:, 2:] > boxes[:, :2]).all()
    # A garment rescaled to 20..44 px: its box is at most that big, and the sizes spread out.
    sides = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert sides.max() <= 44 and sides.max() - sides.min() > 20
    small, _, _ = C.make_cluttered(x[:20], y[:20], seed=1, canvas=40, sizes=(10, 12), clutter=2, patch=4)
    assert small.shape == (20, 40, 40)


def test_deterministic_from_the_seed():
    x, y = garments()
    a = C.make_cluttered(x, y, seed=(3, 1))
    b = C.make_cluttered(x.copy(), y, seed=(3, 1))
    for u, v in zip(a, b):
        assert np.array_equal(u, v)
    c = C.make_cluttered(x, y, seed=(3, 2))
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_boxes_are_the_garments_own_tight_boxes():
    x, y = garments()
    clean, boxes, _ = C.make_cluttered(x, y, seed=5, clutter=0)
    cluttered, boxes_c, _ = C.make_cluttered(x, y, seed=5)
    # Clutter is drawn after the garments' draws: the same garments, the same places.
    assert np.array_equal(boxes, boxes_c)
    for i in range(len(x)):  # without clutter the canvas is the garment alone
        assert own_mask_box(clean[i]) == boxes[i].tolist()
    # Clutter only adds light (pixel-wise maximum), and adds some on most canvases.
    assert (cluttered >= clean).all()
    assert ((cluttered > clean).any(axis=(1, 2))).mean() > 0.8
    assert np.array_equal(C.tight_boxes(clean > 0), boxes)


def test_clutter_comes_from_other_garments():
    # Each garment a flat square of its own grey level: a patch's level names the garment it came from.
    levels = np.arange(40, 240, dtype=np.uint8)
    x = np.repeat(levels[:, None, None], 28, axis=1).repeat(28, axis=2)
    y = np.zeros(len(x), dtype=np.uint8)
    clean, _, _ = C.make_cluttered(x, y, seed=2, clutter=0)
    cluttered, _, _ = C.make_cluttered(x, y, seed=2)
    for i in range(len(x)):
        added = cluttered[i][cluttered[i] > clean[i]]
        assert len(added) and levels[i] not in added and np.isin(added, levels).all()


def test_tight_boxes():
    masks = np.zeros((3, 10, 12), dtype=bool)
    masks[0, 2:5, 3:9] = True
    masks[1, 0, 11] = True
    assert C.tight_boxes(masks).tolist() == [[3, 2, 9, 5], [11, 0, 12, 1], [0, 0, 0, 0]]


def test_bad_arguments():
    x, y = garments(5)
    with pytest.raises(ValueError, match="sizes"):
        C.make_cluttered(x, y, seed=0, sizes=(30, 70))
    with pytest.raises(ValueError, match="clutter needs"):
        C.make_cluttered(x[:1], y[:1], seed=0)


def test_load_cluttered_splits_and_cache(tmp_path, monkeypatch):
    import vgg.data.fashion_mnist

    monkeypatch.setenv("VGG_HOME", str(tmp_path))
    x, y = garments(60000 // 100)
    fake_train_x = np.repeat(x, 100, axis=0)[:60000]  # the official split sizes, cheap content
    fake_train_y = np.repeat(y, 100)[:60000]
    test_x, test_y = garments(200, seed=1)
    calls = []

    def fake_load():
        calls.append(1)
        return fake_train_x, fake_train_y, test_x, test_y

    monkeypatch.setattr(vgg.data.fashion_mnist, "load_fashion_mnist", fake_load)
    test = C.load_cluttered("test", canvas=32, sizes=(10, 20), clutter=1, patch=4)
    assert test[0].shape == (200, 32, 32) and (test[2] == test_y).all()
    path = C.cache_path("test", canvas=32, sizes=(10, 20), clutter=1, patch=4)
    assert path.parent == tmp_path / "fashion-mnist-loc" and path.is_file()
    again = C.load_cluttered("test", canvas=32, sizes=(10, 20), clutter=1, patch=4, limit=50)
    assert len(calls) == 1  # read from the cache
    assert all(np.array_equal(u[:50], v) for u, v in zip(test, again))
    # train and val: the classification split of the 60,000 (val_size held out), own streams.
    val = C.load_cluttered("val", canvas=32, sizes=(10, 20), clutter=1, patch=4, val_size=300, cache=False)
    assert len(val[2]) == 300 and not (tmp_path / "fashion-mnist-loc" / "val").exists()
    perm = np.random.default_rng(0).permutation(60000)
    assert (val[2] == fake_train_y[np.sort(perm[:300])]).all()
    # A damaged cache file is regenerated, not trusted.
    path.write_bytes(b"torn")
    assert np.array_equal(C.load_cluttered("test", canvas=32, sizes=(10, 20), clutter=1, patch=4)[1], test[1])
    with pytest.raises(ValueError, match="split"):
        C.load_cluttered("dev")
