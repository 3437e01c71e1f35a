"""Tests for vgg.data.folders: the folder layout and its errors."""

from __future__ import annotations

import pytest

from vgg.data import open_dataset

from .samples import make_folder, smooth_image


def test_open_folder_layout(tmp_path):
    root = make_folder(tmp_path, classes=("zebra", "ant", "Bee"), per_class=3)
    (root / "train" / "ant" / "nested").mkdir()
    smooth_image(20, 20).save(root / "train" / "ant" / "nested" / "deep.jpg")
    (root / "train" / "ant" / "README.txt").write_text("not an image, ignored")
    (root / "train" / "ant" / ".hidden.png").write_bytes(b"")
    ds = open_dataset(str(root), "train")
    assert ds.classes == ["Bee", "ant", "zebra"]  # sorted by name, as torchvision's ImageFolder
    assert len(ds) == 10 and ds.channels == 3
    assert ds.labels.tolist() == [0] * 3 + [1] * 4 + [2] * 3
    assert any(p.endswith("deep.jpg") for p in ds.paths)
    assert not any(p.endswith((".txt", ".hidden.png")) for p in ds.paths)
    small = open_dataset(str(root), "train", limit=4)
    assert small.labels.tolist() == [0, 1, 2, 0]  # round-robin over classes: every class in a quick run
    assert open_dataset(str(root), "val").classes == ds.classes


def test_open_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        open_dataset(str(tmp_path / "missing"), "train")
    root = make_folder(tmp_path / "a", splits=("train",))
    with pytest.raises(FileNotFoundError, match=r"val.*found: \['train'\]"):
        open_dataset(str(root), "val")
    (root / "val").mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        open_dataset(str(root), "val")
    (root / "val" / "cat").mkdir()
    (root / "val" / "dog").mkdir()
    smooth_image(20, 20).save(root / "val" / "cat" / "a.png")
    with pytest.raises(ValueError, match=r"val/dog: class folder with no images"):
        open_dataset(str(root), "val")
    (root / "val" / "dog").rename(root / "val" / "dingo")
    smooth_image(20, 20).save(root / "val" / "dingo" / "a.png")
    with pytest.raises(ValueError, match=r"differ.*only in val: \['dingo'\].*only in train: \['dog'\]"):
        open_dataset(str(root), "val")
    with pytest.raises(ValueError, match="class folders differ"):
        open_dataset(str(root), "train")  # checked from either side, before any training
