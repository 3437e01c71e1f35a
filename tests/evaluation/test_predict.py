"""Prediction of image files: unreadable files skipped, the same posteriors as the evaluation."""

import json
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
    # --device cpu: on a GPU machine `auto` takes CUDA + bf16, and the comparison below is with the
    # library's float32 CPU call.
    assert main(["predict", str(checkpoints["fixed"]), str(folder), str(tmp_path / "gone.png"),
                 "--topk", "3", "--protocol", "dense+multi-crop", "--json", "--device", "cpu"]) == 0
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
    assert main(["predict", "--pretrained", str(checkpoints["fixed"]), str(folder / "a.png"),
                 "--device", "cpu"]) == 0
    assert "a.png" in capsys.readouterr().out
    assert main(["predict", str(checkpoints["fixed"]), str(folder / "broken.png"), "--device", "cpu"]) == 2
    assert "error: the file could not be read" in capsys.readouterr().err


def test_colour_images_on_a_grey_net_are_said_to_be_converted(checkpoints, tmp_path, capsys):
    from PIL import Image

    from vgg.cli import main

    rng = torch.Generator().manual_seed(1)
    colour = torch.randint(0, 256, (36, 40, 3), generator=rng, dtype=torch.uint8).numpy()
    Image.fromarray(colour).save(tmp_path / "colour.png")
    Image.fromarray(colour[..., 0]).convert("RGB").save(tmp_path / "grey_as_rgb.png")  # R = G = B
    Image.fromarray(colour[..., 1]).save(tmp_path / "grey.png")
    for name in ("grey.png", "grey_as_rgb.png"):
        assert main(["predict", str(checkpoints["fixed"]), str(tmp_path / name), "--device", "cpu"]) == 0
        assert "converted to grey" not in capsys.readouterr().err
    assert main(["predict", str(checkpoints["fixed"]), str(tmp_path), "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert "note: 1 colour image was converted to grey" in captured.err
    flags = {Path(p["file"]).name: p.get("colour_to_grey", False)
             for p in json.loads(captured.out)["predictions"]}
    assert flags == {"colour.png": True, "grey.png": False, "grey_as_rgb.png": False}


def test_predict_pools_as_caffe_by_default(checkpoints, tmp_path):
    from PIL import Image

    rng = torch.Generator().manual_seed(2)
    Image.fromarray(torch.randint(0, 256, (37, 45), generator=rng, dtype=torch.uint8).numpy()).save(
        tmp_path / "a.png")
    model = vgg.load_model(checkpoints["fixed"])
    grey = ev.read_image(tmp_path / "a.png", 1)
    views = ev.plan_views([model], "dense", scales=[37])
    got = {ceil: ev.predict([model], [tmp_path / "a.png"], scales=[37], topk=10, **kw)[0][0]["top"]
           for ceil, kw in ((True, {}), (False, {"ceil_mode": False}))}
    for ceil in (True, False):
        probs, _ = ev.fused_posteriors([model], views, ev.batches_by_size([grey]), 1, ceil_mode=ceil)
        assert got[ceil][0]["probability"] == pytest.approx(probs.max().item())
    assert got[True][0]["probability"] != pytest.approx(got[False][0]["probability"])
