"""The class score map of an image's top class (dense evaluation made visible): the same map and
the same decision as dense evaluation, and `vgg predict --heatmap DIR` writes one picture per image."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vgg
from vgg import evaluation as ev


def fm_image(i=0):
    from vgg.data import open_dataset

    return open_dataset("fashion-mnist", "test", limit=8).images[i]


@pytest.mark.parametrize("q", [37, 73])
def test_the_map_is_the_top_class_posterior_at_every_position(checkpoints, q):
    model = vgg.load_model(checkpoints["jitter"]).eval()
    image = fm_image(3)
    heat, top, p = ev.class_heatmap(model, image, q)
    # Independently: the score map of the rescaled image under Caffe's pooling, soft-max over classes.
    x = model.normalization(vgg.data.rescale_shorter(image, q).unsqueeze(0).float())
    with torch.no_grad(), ev.caffe_pooling(model):
        scores = model.score_map(x)[0]
    assert heat.shape == scores.shape[1:] and heat.numel() > 1  # a map, not one number
    torch.testing.assert_close(heat, F.softmax(scores, dim=0)[top], rtol=1e-4, atol=1e-5)
    # The top class is dense evaluation's decision: the posterior of the spatially averaged scores.
    with torch.no_grad(), ev.caffe_pooling(model):
        posterior = ev.posterior(model, vgg.data.rescale_shorter(image, q).unsqueeze(0))[0]
    assert top == int(posterior.argmax()) and p == pytest.approx(float(posterior.max()), rel=1e-4)


def test_cli_predict_heatmap_writes_a_picture_per_image(checkpoints, tmp_path, capsys):
    from PIL import Image

    from vgg.cli import main

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(fm_image(i)[0].numpy()).save(folder / f"im{i}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "maps"
    assert main(["predict", str(checkpoints["fixed"]), str(folder), "--heatmap", str(out), "--scales", "64",
                 "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "wrote 3 score map(s)" in err
    pictures = sorted(p.name for p in out.iterdir())
    assert pictures == ["im0.png", "im1.png", "im2.png"]
    with Image.open(out / "im0.png") as im:
        assert min(im.size) >= 224 and im.mode == "RGB"
    # Different images give different maps (the map is of the image, not a constant).
    maps = [ev.class_heatmap(vgg.load_model(checkpoints["fixed"]), fm_image(i), 64)[0] for i in range(2)]
    assert not torch.equal(maps[0], maps[1])
    assert main(["predict", str(checkpoints["fixed"]), str(folder / "im0.png"), "--heatmap", str(out),
                 "--classifier", str(checkpoints["fixed"]), "--device", "cpu"]) == 2
    assert "--heatmap draws a classification net's score map" in capsys.readouterr().err


def test_heatmap_scale_below_the_crop_is_refused(checkpoints, tmp_path):
    model = vgg.load_model(checkpoints["fixed"])
    with pytest.raises(ValueError, match="32"):
        ev.write_heatmaps([model], [Path("x.png")], tmp_path, scale=16)
