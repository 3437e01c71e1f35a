"""Localisation testing (App. A.2): boxes of the centre crop and of dense windows mapped back to the
original image under rescale and flip, OverFeat's merge over views, the top-k criterion, and the
commands (vgg evaluate / predict / data --draw) on nets that learned."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vgg
from vgg import cli, data
from vgg.evaluation.localization import evaluate_localization, localize
from vgg.models import Normalization
from vgg.training.localization import build_localization_net

CLASSES = ["a", "b", "c", "d", "e", "f"]
CLASS_BIAS = torch.tensor([0.0, 3.0, 2.5, 2.0, 1.0, 0.5])  # class ranking: b, c, d, e, f, a


def constant_nets(box, head="scr", width_px=32):
    """A localisation net whose every window predicts ``box`` (encoded, relative to the window), and
    a classifier whose every window scores the classes by CLASS_BIAS: an exact reference for where
    each view's boxes must land in the original image."""
    torch.manual_seed(0)
    cls = vgg.create_model("A", num_classes=len(CLASSES), width=0.125, crop_size=width_px, in_channels=1)
    cls.classes, cls.normalization = list(CLASSES), Normalization((100.0,), (50.0,))
    cls.info = {"train_scale": [36, 36]}
    loc = build_localization_net(vgg.create_model("A", num_classes=6, width=0.125, crop_size=width_px,
                                                  in_channels=1), head, CLASSES)
    loc.normalization, loc.info["train_scale"] = Normalization((100.0,), (50.0,)), [36, 36]
    with torch.no_grad():
        cls.classifier[6].weight.zero_()
        cls.classifier[6].bias.copy_(CLASS_BIAS)
        loc.classifier[6].weight.zero_()
        loc.classifier[6].bias.copy_(torch.tensor(box).repeat(1 if head == "scr" else len(CLASSES)))
    return loc.eval(), cls.eval()


def boxed(h, w, labels, boxes):
    n = len(labels)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, h, w), dtype=torch.uint8, generator=g)
    y = torch.tensor(labels)
    return data.BoxTensorDataset(images, y, CLASSES, "const", "val", torch.tensor(boxes).float()[:, None],
                                 y[:, None].clone())


def test_centre_crop_box_maps_back_to_the_original_image_with_flips():
    # 40x57 at Q=36 is 36x51: the centre crop starts at x = round(9.5) = 10, the mirrored one covers
    # x in [51 - 42, 51 - 10] = [9, 41] of the unmirrored image: not the same pixels.
    loc, cls = constant_nets([0.5, 0.5, 0.5, 0.25])  # a 16x8 box in the middle of the window
    fx, fy = 51 / 57, 36 / 40
    plain = torch.tensor([10 + 8, 2 + 12, 10 + 24, 2 + 20.0])
    mirrored = torch.tensor([9 + 8, 2 + 12, 9 + 24, 2 + 20.0])
    for flip, expected in ((False, plain), (True, (plain + mirrored) / 2)):  # merged: their mean
        want = expected / torch.tensor([fx, fy, fx, fy])
        ds = boxed(40, 57, [1, 3], [want.tolist()] * 2)
        found = localize([loc], [cls], lambda q, ds=ds: data.eval_batches(ds, scale=q, batch_size=8),
                         ds.image_sizes(), protocol="centre", plans=[[36]], flip=flip, labels=ds.labels)
        torch.testing.assert_close(found.gt_box, want.expand(2, 4), atol=1e-4, rtol=0)
        torch.testing.assert_close(found.boxes[0][0], want, atol=1e-4, rtol=0)
        assert found.labels[0].tolist() == [1, 2, 3, 4, 5]  # ranked by the classifier's scores
    # The criterion: image 0's class is the top guess, image 1's only the third: top-1 50%, top-5 0%.
    r = evaluate_localization([loc], ds, classifiers=[cls], protocol="centre", gt_class=True, scales=[36],
                              flip=True)
    assert r.errors == {"gt_class": 0.0, "top1": 50.0, "top5": 0.0}


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_dense_windows_boxes_map_back_and_merge_into_one(ceil_mode):
    # Every window predicts a box four windows wide around its centre: neighbours overlap at IoU 0.6
    # and merge (OverFeat), so the image's box is the mean of every window's box, flips included.
    loc, cls = constant_nets([0.5, 0.5, 4.0, 4.0])
    q, (h, w) = 64, (40, 57)
    # 64 x 91: a 2x2 map of 32-pixel windows with PyTorch's floor pooling; Caffe's ceil adds a third
    # column of windows, at x = 64, that runs past the image's last pixel (the whole image is seen).
    H, W, columns = 64, round(57 * 64 / 40), 3 if ceil_mode else 2
    boxes = []
    for flipped in (False, True):
        for i in range(2):
            for j in range(columns):
                cx, cy = 32 * j + 16, 32 * i + 16
                box = torch.tensor([cx - 64, cy - 64, cx + 64, cy + 64.0])
                boxes.append(torch.stack([W - box[2], box[1], W - box[0], box[3]]) if flipped else box)
    want = torch.stack(boxes).mean(0) / torch.tensor([W / w, H / h, W / w, H / h])
    ds = boxed(h, w, [2], [want.tolist()])
    found = localize([loc], [cls], lambda s: data.eval_batches(ds, scale=s, batch_size=8), ds.image_sizes(),
                     protocol="dense", plans=[[q]], flip=True, labels=ds.labels, ceil_mode=ceil_mode)
    torch.testing.assert_close(found.boxes[0][0], want, atol=1e-3, rtol=0)
    torch.testing.assert_close(found.gt_box[0], want, atol=1e-3, rtol=0)
    # Two nets: the union of their boxes (here the same boxes twice: the same merged box).
    twice = localize([loc, loc], [cls], lambda s: data.eval_batches(ds, scale=s, batch_size=8),
                     ds.image_sizes(), protocol="dense", plans=[[q], [q]], flip=True, labels=ds.labels,
                     ceil_mode=ceil_mode)
    torch.testing.assert_close(twice.boxes[0][0], want, atol=1e-3, rtol=0)
    assert float(twice.scores[0][0]) == pytest.approx(2 * float(found.scores[0][0]), rel=1e-5)


def test_pcr_takes_each_class_its_own_box():
    loc, cls = constant_nets([0.5, 0.5, 0.5, 0.25], head="pcr")
    with torch.no_grad():  # class "d" (3) predicts its box at the window's left edge
        loc.classifier[6].bias[12:16] = torch.tensor([0.25, 0.5, 0.5, 0.25])
    ds = boxed(32, 32, [3, 1], [[0, 12, 16, 20], [8, 12, 24, 20]])
    r = evaluate_localization([loc], ds, classifiers=[cls], protocol="centre", gt_class=True, scales=[32])
    assert r.errors["gt_class"] == 0.0 and r.errors["top5"] == 0.0 and r.errors["top1"] == 50.0


def test_evaluation_needs_the_true_class_or_a_classifier(loc_runs):
    model = vgg.load_model(loc_runs["loc"])
    ds = data.open_box_dataset(str(loc_runs["data"]), "val", limit=8)
    with pytest.raises(ValueError, match="--gt-class"):
        evaluate_localization([model], ds)
    with pytest.raises(ValueError, match="classification net"):
        evaluate_localization([vgg.load_model(loc_runs["cls"])], ds, gt_class=True)


def test_vgg_evaluate_centre_true_class_agrees_with_the_runs_validation(loc_runs, tmp_path, capsys):
    out = tmp_path / "centre.json"
    # No --data: a localisation net is evaluated on the data it was trained on.
    assert cli.main(["evaluate", str(loc_runs["loc"]), "--protocol", "centre", "--gt-class", "--json",
                     str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "GT-class loc err %" in text and "PCR" in text
    r = json.loads(out.read_text())
    assert {"protocol", "scales", "images", "localization_error_gt_class"} <= r.keys()
    assert r["protocol"] == "centre" and r["scales"] == [64] and r["images"] == 128
    best = vgg.load_model(loc_runs["loc"]).info["val_loc_accuracy"]
    # The same images, scale and crop as the run's validation: the same number (an IoU at 0.5 may
    # round differently on the inference engine: one image at most).
    assert abs((100 - r["localization_error_gt_class"]) - best) <= 100 / 128 + 1e-9


def test_vgg_evaluate_dense_with_a_classifier(loc_runs, tmp_path, capsys):
    out = tmp_path / "both.json"
    assert cli.main(["evaluate", str(loc_runs["loc"]), "--classifier", str(loc_runs["cls"]), "--data",
                     str(loc_runs["data"]), "--protocol", "centre", "dense", "--scales", "64", "96",
                     "--limit", "48", "--json", str(out), "--no-progress"]) == 0
    rows = json.loads(out.read_text())
    assert [r["protocol"] for r in rows] == ["centre", "dense"]
    for r in rows:
        assert r["scales"] == [64, 96] and r["images"] == 48
        assert 0 <= r["localization_error_top5"] <= r["localization_error_top1"] <= 100
        assert "localization_error_gt_class" not in r
    assert rows[1]["flip"] and not rows[0]["flip"]
    assert "top-5 loc err %" in capsys.readouterr().out


def test_vgg_predict_json_and_pictures(loc_runs, tmp_path, capsys):
    from PIL import Image

    ds = data.open_box_dataset(str(loc_runs["data"]), "val", limit=2)
    wide = tmp_path / "wide.png"  # another size than the training images: boxes in its own pixels
    Image.open(ds.paths[0]).resize((96, 64)).save(wide)
    draw = tmp_path / "pictures"
    assert cli.main(["predict", str(loc_runs["loc"]), "--classifier", str(loc_runs["cls"]), ds.paths[1],
                     str(wide), "--json", "--draw", str(draw), "--topk", "3"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert [p["file"] for p in got["predictions"]] == [ds.paths[1], str(wide)]
    for image, size in zip(got["predictions"], ([64, 64], [96, 64])):
        assert image["size"] == size and len(image["predictions"]) == 3
        for p in image["predictions"]:
            assert p["class"] in ds.classes and 0 <= p["probability"] <= 1
            x1, y1, x2, y2 = p["box"]
            assert all(map(math.isfinite, p["box"])) and x2 > x1 and y2 > y1
    # Boxes are in each file's own pixels: the same garment twice as large gives boxes twice as large
    # (the net sees nearly the same input at each test scale Q).
    big = tmp_path / "big.png"
    Image.open(ds.paths[1]).resize((128, 128), Image.Resampling.BICUBIC).save(big)
    assert cli.main(["predict", str(loc_runs["loc"]), "--classifier", str(loc_runs["cls"]), ds.paths[1],
                     str(big), "--json", "--topk", "1"]) == 0
    small, large = (p["predictions"][0] for p in json.loads(capsys.readouterr().out)["predictions"])
    assert small["class"] == large["class"]
    # Within a tenth of the large image's side: the two inputs differ by resampling, and the tiny
    # net's boxes move by a few pixels; a box left in the net's input frame would be off by ~40 px.
    assert max(abs(2 * a - b) for a, b in zip(small["box"], large["box"])) < 12.8, (small, large)
    pictures = sorted(draw.glob("*.png"))
    assert [p.name for p in pictures] == [f"{Path(ds.paths[1]).stem}.png", "wide.png"]
    assert Image.open(draw / "wide.png").size == (96 * 2, 64 * 2)  # enlarged to be seen
    # A localisation net's boxes need a classifier's scores.
    assert cli.main(["predict", str(loc_runs["loc"]), str(wide)]) == 2
    assert "--classifier" in capsys.readouterr().err


def test_vgg_data_draws_samples_with_their_boxes(loc_runs, tmp_path, capsys):
    from PIL import Image

    png = tmp_path / "grid.png"
    assert cli.main(["data", str(loc_runs["data"]), "--draw", str(png)]) == 0
    assert "16 training images" in capsys.readouterr().out
    grid = Image.open(png).convert("RGB")
    assert grid.size[0] > 4 * 64
    # The boxes are drawn: green pixels (COLORS[0]) are there, and the images are grey.
    pixels = np.asarray(grid).reshape(-1, 3).astype(int)
    assert ((pixels[:, 0] < 50) & (pixels[:, 1] > 200) & (pixels[:, 2] < 50)).any()
