"""Tests for vgg.data.loaders: training and evaluation batches, determinism (resume, ranks,
workers), bad files skipped."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vgg import data as D
from vgg.data import Augment, eval_batches, open_dataset, train_batches
from vgg.data.loaders import _finish
from vgg.models import Normalization

from .samples import broken_files, make_folder, smooth_image, tensor_dataset


def _collect(batches):
    return [(x.clone(), y.clone()) for x, y in batches]


@pytest.mark.parametrize("bgr", [False, True])
def test_device_side_equals_flip_lighting_normalise(bgr):
    """The fused in-place finishing pass equals hflip, then pca_lighting, then Normalization."""
    crops = torch.randint(0, 256, (6, 3, 5, 7), dtype=torch.uint8)
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    aug = Augment(5, (5, 9), pca={"eigval": [30.0, 5.0, 1.0], "eigvec": q.tolist()})
    p = D.augment_parameters(aug, 0, 0, np.arange(6))
    norm = Normalization((100.0, 110.0, 120.0), (50.0, 60.0, 70.0), bgr=bgr)
    expected = D.hflip(crops.float(), torch.from_numpy(p["flip"]))
    expected = norm(D.pca_lighting(expected, torch.from_numpy(p["alpha"]), [30.0, 5.0, 1.0], q.tolist()))
    for channels_last in (False, True):
        out = _finish(crops.clone(), p["flip"], p["alpha"], aug, norm, channels_last)
        torch.testing.assert_close(out, expected)
        assert out.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_train_batches_shapes_and_epoch():
    ds = tensor_dataset(40)
    aug = Augment(32, (32, 48))
    norm = Normalization((100.0,), (50.0,))
    b = train_batches(ds, augment=aug, normalization=norm, batch_size=8, seed=0, epoch=0)
    assert len(b) == 5
    out = _collect(b)
    assert all(x.shape == (8, 1, 32, 32) and x.dtype == torch.float32 for x, _ in out)
    labels = torch.cat([y for _, y in out])
    assert sorted(labels.tolist()) == sorted(ds.labels.tolist())  # each image once per epoch
    assert len(train_batches(ds, augment=aug, normalization=norm, batch_size=12, seed=0, epoch=0)) == 3
    assert len(train_batches(ds, augment=aug, normalization=norm, batch_size=12, seed=0, epoch=0,
                             drop_last=False)) == 4
    other = _collect(train_batches(ds, augment=aug, normalization=norm, batch_size=8, seed=0, epoch=1))
    assert not torch.equal(out[0][1], other[0][1])  # a new order each epoch


def test_train_batch_is_normalised_crop_of_the_right_image():
    # Constant images: every crop is that constant; normalisation (x - mean) / std applied.
    images = torch.arange(10, dtype=torch.uint8).mul(20).view(10, 1, 1, 1).expand(10, 1, 28, 28).clone()
    ds = D.TensorDataset(images, torch.arange(10), [str(i) for i in range(10)], "const", "train")
    norm = Normalization((10.0,), (2.0,))
    for x, y in train_batches(ds, augment=Augment(32, (32, 64)), normalization=norm, batch_size=5,
                              seed=1, epoch=0):
        expected = ((y.float() * 20 - 10) / 2).view(-1, 1, 1, 1).expand_as(x)
        torch.testing.assert_close(x, expected)


def test_train_batches_deterministic_resume_and_world_size():
    ds = tensor_dataset(64, 28, 28, channels=3)
    aug = Augment(32, (32, 64), pca={"eigval": [20.0, 4.0, 1.0], "eigvec": np.eye(3).tolist()})
    norm = Normalization((120.0, 110.0, 100.0), (60.0, 60.0, 60.0))
    kw = dict(augment=aug, normalization=norm, batch_size=16, seed=7, epoch=2)
    full = _collect(train_batches(ds, **kw))
    assert len(full) == 4
    again = _collect(train_batches(ds, **kw))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(full, again))
    # Resuming at batch 2 yields exactly batches 2 and 3 of the uninterrupted epoch.
    resumed = _collect(train_batches(ds, **kw, start_batch=2))
    assert len(resumed) == 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # Two processes: rank 0 and 1 get the two halves of every global batch, with identical crops.
    r0 = _collect(train_batches(ds, **kw, rank=0, world_size=2))
    r1 = _collect(train_batches(ds, **kw, rank=1, world_size=2))
    for a, b, c in zip(full, r0, r1):
        assert b[0].shape[0] == c[0].shape[0] == 8
        assert torch.equal(torch.cat([b[0], c[0]]), a[0]) and torch.equal(torch.cat([b[1], c[1]]), a[1])
    # Another seed changes the crops.
    other = _collect(train_batches(ds, **{**kw, "seed": 8}))
    assert not torch.equal(other[0][0], full[0][0])


def test_train_batches_bad_arguments():
    ds = tensor_dataset(10)
    aug = Augment(32, (32, 32))
    norm = Normalization((0.0,), (1.0,))
    with pytest.raises(ValueError, match="channels"):
        train_batches(ds, augment=aug, normalization=Normalization(), batch_size=2, seed=0, epoch=0)
    with pytest.raises(ValueError, match="less than one batch"):
        train_batches(ds, augment=aug, normalization=norm, batch_size=11, seed=0, epoch=0)
    with pytest.raises(ValueError, match="start_batch"):
        train_batches(ds, augment=aug, normalization=norm, batch_size=2, seed=0, epoch=0, start_batch=9)
    with pytest.raises(ValueError, match="rank"):
        train_batches(ds, augment=aug, normalization=norm, batch_size=2, seed=0, epoch=0, rank=2,
                      world_size=2)


def test_eval_batches_tensor_dataset():
    ds = tensor_dataset(10, 28, 28)
    seen = []
    for x, y, idx in eval_batches(ds, scale=40, batch_size=4):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 40, 40)
        torch.testing.assert_close(x, D.rescale_shorter(ds.images[idx], 40))
        assert torch.equal(y, ds.labels[idx])
        seen += idx.tolist()
    assert seen == list(range(10))


def test_small_images_are_upscaled(tmp_path):
    root = make_folder(tmp_path, per_class=2, size=(9, 14))
    ds = open_dataset(str(root), "train")
    norm = Normalization((0.0,) * 3, (1.0,) * 3)
    batches = list(train_batches(ds, augment=Augment(32, (32, 40)), normalization=norm, batch_size=2,
                                 seed=0, epoch=0))
    assert len(batches) == 2 and all(x.shape == (2, 3, 32, 32) for x, _ in batches)
    sizes = [x.shape[-2:] for x, _, _ in eval_batches(ds, scale=36, batch_size=8)]
    assert sizes == [(36, 56)]


def test_folder_batches_deterministic_with_workers_resume_and_ranks(tmp_path):
    root = make_folder(tmp_path, per_class=6, size=(40, 56), ext="jpg")
    ds = open_dataset(str(root), "train")
    aug = Augment(32, (32, 48), pca={"eigval": [10.0, 2.0, 1.0], "eigvec": np.eye(3).tolist()})
    norm = Normalization((120.0, 110.0, 100.0), (60.0, 60.0, 60.0))
    kw = dict(augment=aug, normalization=norm, batch_size=4, seed=3, epoch=1)
    full = _collect(train_batches(ds, **kw))
    assert len(full) == 3
    with_workers = _collect(train_batches(ds, **kw, workers=2))
    resumed = _collect(train_batches(ds, **kw, start_batch=1, workers=2))
    r1 = _collect(train_batches(ds, **kw, rank=1, world_size=2, workers=2))
    for a, b in zip(full, with_workers):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(full[1:], resumed):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    for a, b in zip(full, r1):
        assert torch.equal(a[0][2:], b[0]) and torch.equal(a[1][2:], b[1])
    # The persistent workers serve the next epoch too, with that epoch's order.
    nxt = _collect(train_batches(ds, **{**kw, "epoch": 2}, workers=2))
    nxt_ref = _collect(train_batches(ds, **{**kw, "epoch": 2}))
    assert len(ds._loaders) == 1  # one persistent loader, reused
    for a, b in zip(nxt, nxt_ref):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(full[0][0], nxt[0][0])


def test_eval_batches_folder_grouped_by_size(tmp_path):
    root = tmp_path / "d"
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
    sizes = {"a/0.png": (30, 40), "a/1.png": (60, 80), "a/2.png": (40, 30), "b/0.png": (30, 40),
             "b/1.png": (50, 50), "b/2.jpg": (300, 400)}
    for name, (h, w) in sizes.items():
        smooth_image(h, w, seed=len(name)).save(root / "val" / name)
        smooth_image(h, w).save(root / "train" / name)
    ds = open_dataset(str(root), "val")
    seen = []
    batches = eval_batches(ds, scale=30, batch_size=2, workers=0)
    for x, y, idx in batches:
        assert x.dtype == torch.uint8 and min(x.shape[-2:]) == 30
        assert torch.equal(y, ds.labels[idx])
        for img, i in zip(x, idx.tolist()):
            assert torch.equal(img, D.decode_rescaled(ds.paths[i], 30))
        seen += idx.tolist()
    assert sorted(seen) == list(range(6))
    # 3:4 landscape (4 images incl. the 300x400 JPEG) in 2 batches; portrait and square alone.
    assert len(batches) == 4 and batches.skipped == []
    assert sorted(seen) == sorted(i for _, _, idx in eval_batches(ds, scale=30, batch_size=2, workers=2)
                                  for i in idx.tolist())


def test_bad_files_are_skipped_with_warnings(tmp_path):
    root = make_folder(tmp_path, per_class=2)
    expected = broken_files(root / "train" / "cat")
    ds = open_dataset(str(root), "train")
    assert len(ds) == 10
    norm = Normalization((0.0,) * 3, (1.0,) * 3)
    with pytest.warns(UserWarning) as record:
        batches = train_batches(ds, augment=Augment(32, (32, 40)), normalization=norm, batch_size=5,
                                seed=0, epoch=0)
        out = list(batches)
    assert sum(x.shape[0] for x, _ in out) == 4  # only the good images, in batches of their epoch slot
    reasons = {os.path.basename(p): r for p, r in batches.skipped}
    assert reasons.keys() == expected.keys()
    for name, prefix in expected.items():
        assert reasons[name].startswith(prefix), (name, reasons[name])
        assert any(name in str(w.message) and reasons[name] in str(w.message) for w in record)
    with pytest.warns(UserWarning):
        ev = eval_batches(ds, scale=32, batch_size=4, workers=2)
        got = [i for _, _, idx in ev for i in idx.tolist()]
    assert len(got) == 4 and {os.path.basename(p) for p, _ in ev.skipped} == expected.keys()
    # strict: the first bad file (in listing order) stops everything, named with its reason.
    with pytest.raises(ValueError, match=r"bomb\.png: too large to decode safely"):
        open_dataset(str(root), "train", strict=True)
    assert open_dataset(str(root), "val", strict=True).classes == ["cat", "dog"]


def test_pinned_non_blocking_transfers_give_the_same_batches(tmp_path, monkeypatch):
    """The CUDA path of every loader: host batches in page-locked memory (DataLoader's pin_memory for
    folders, ``pin_memory()`` for in-memory data), copied with non_blocking=True. A CPU-only torch
    cannot pin, so only the pinning is mocked (a copy, counted); the rest is the code CUDA runs."""
    import warnings

    import vgg.data.loaders as L

    tensors = tensor_dataset(24, 36, 40, channels=3)
    folder = open_dataset(str(make_folder(tmp_path, per_class=4)), "train")
    aug = Augment(32, (32, 48))
    norm = Normalization((100.0, 110.0, 120.0), (50.0, 60.0, 70.0))

    def passes():
        train = [_collect(train_batches(ds, augment=aug, normalization=norm, batch_size=4, seed=0, epoch=0,
                                        workers=workers))
                 for ds, workers in ((tensors, 0), (folder, 1))]
        evals = [[tuple(t.clone() for t in b)
                  for b in eval_batches(ds, scale=40, batch_size=4, workers=workers)]
                 for ds, workers in ((tensors, 0), (folder, 1))]
        return train, evals

    plain = passes()
    pinned = []
    monkeypatch.setattr(L, "pinned_transfers", lambda device: True)
    monkeypatch.setattr(torch.Tensor, "pin_memory",
                        lambda self, *a, **k: pinned.append(self.dtype) or self.clone())
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*pin_memory.*", UserWarning)  # DataLoader: no accelerator here
        got = passes()
    assert pinned == [torch.uint8, torch.int64] * 6  # images and labels of each in-memory training batch
    for a, b in zip(plain, got):
        for batches_a, batches_b in zip(a, b):
            assert len(batches_a) == len(batches_b) > 0
            for x, y in zip(batches_a, batches_b):
                assert all(torch.equal(s, t) for s, t in zip(x, y))
