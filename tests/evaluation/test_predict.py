"""Prediction of image files: unreadable files skipped, the same posteriors as the evaluation."""

from pathlib import Path

import pytest
import torch

import vgg
from evaluation.support import FMNIST
from vgg import evaluation as ev


def test_cli_predict_skips_unreadable_files(checkpoints, tmp_path, capsys):
    import json

    from PIL import Image

    from vgg.cli import main

    rng = torch.Generator().manual_seed(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name, size in (("a.png", (28, 28)), ("b.png", (30, 44)), ("c.jpg", (50, 36))):
        pixels = torch.randint(0, 256, size, generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).convert("RGB").save(folder / name)
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    assert main(["predict", str(checkpoints["fixed"]), str(folder), str(tmp_path / "gone.png"),
                 "--topk", "3", "--protocol", "dense+multi-crop", "--json"]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert [Path(p["file"]).name for p in result["predictions"]] == ["a.png", "b.png", "c.jpg"]
    for p in result["predictions"]:
        assert len(p["top"]) == 3 and all(t["class"] in FMNIST for t in p["top"])
        probs = [t["probability"] for t in p["top"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    assert sorted(Path(s["file"]).name for s in result["skipped"]) == ["broken.png", "gone.png"]
    assert "broken.png" in captured.err and "gone.png" in captured.err
    # the prediction is the evaluation rule: same posteriors as the library on the same image
    model = vgg.load_model(checkpoints["fixed"])
    grey = ev.read_image(folder / "b.png", 1)
    probs, _ = ev.fused_posteriors([model], ev.plan_views([model], "dense+multi-crop"),
                                   ev.batches_by_size([grey]), 1)
    assert result["predictions"][1]["top"][0]["probability"] == pytest.approx(probs.max().item())
    assert main(["predict", "--pretrained", str(checkpoints["fixed"]), str(folder / "a.png")]) == 0
    assert "a.png" in capsys.readouterr().out
    assert main(["predict", str(checkpoints["fixed"]), str(folder / "broken.png")]) == 2
    assert "none of the 1 files could be read" in capsys.readouterr().err
