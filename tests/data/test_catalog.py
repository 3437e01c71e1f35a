"""Tests for vgg.data.catalog: open_dataset's arguments, describe_dataset and `vgg data`."""

from __future__ import annotations

import os

import pytest

from vgg import data as D
from vgg.data import open_dataset

from .samples import broken_files, make_folder


def test_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        open_dataset("fashion-mnist", "training")
    with pytest.raises(ValueError, match="limit"):
        open_dataset("fashion-mnist", "train", limit=0)


def test_describe_dataset_lists_counts_bad_files_and_statistics(tmp_path):
    root = make_folder(tmp_path, per_class=2)
    broken_files(root / "val" / "dog")
    info = D.describe_dataset(str(root), check=True, stats=True)
    assert info["classes"] == ["cat", "dog"] and info["channels"] == 3
    assert info["splits"]["train"] == {"images": 4, "per_class": [2, 2], "bad": []}
    assert info["splits"]["val"]["per_class"] == [2, 8] and "test" not in info["splits"]
    assert {os.path.basename(p) for p, _ in info["splits"]["val"]["bad"]} == {
        "corrupt.png", "truncated.jpg", "empty.jpg", "notes.png", "download.jpg", "bomb.png"}
    assert len(info["statistics"]["mean"]) == 3


def test_cli_data(tmp_path, capsys):
    from vgg.cli import main

    root = make_folder(tmp_path, per_class=2)
    broken_files(root / "train" / "dog")
    assert main(["data", str(root), "--check"]) == 0
    out = capsys.readouterr().out
    assert "2 classes, 3 channel(s)" in out and "6 unreadable file(s)" in out
    assert "train: unreadable " in out and "bomb.png: too large to decode safely" in out
    assert main(["data", str(tmp_path / "nowhere")]) == 2
    assert "vgg data: error: " in capsys.readouterr().err
