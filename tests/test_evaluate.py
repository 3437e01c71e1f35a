"""The paper's test protocols (Sec. 3.2, 4): views, scales, fusion, metrics, and the CLI."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vgg
from vgg import evaluate as ev
from vgg.models import Normalization

CROP = 32


def tiny(seed=0, classes=("a", "b", "c", "d", "e", "f"), in_channels=3, train_scale=(32, 48)):
    torch.manual_seed(seed)
    model = vgg.create_model("A", num_classes=len(classes), crop_size=CROP, width=0.125,
                             in_channels=in_channels, init="glorot")
    model.classes = list(classes)
    model.normalization = Normalization((120.0,) * in_channels, (60.0,) * in_channels)
    model.info = {"train_scale": list(train_scale)}
    return model.eval()


def images(n, h, w, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def rescale(x, q):
    """Shorter side to q, as the data pipeline does (a stand-in independent of data.py)."""
    h, w = x.shape[-2:]
    size = (q, round(w * q / h)) if h <= w else (round(h * q / w), q)
    y = F.interpolate(x.float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8)


def synthetic_batches(base):
    """batches(Q) over a list of images of different sizes, batched by size like eval_batches."""
    def batches(q):
        by_size = {}
        for i, x in enumerate(base):
            y = rescale(x[None], q)
            by_size.setdefault(tuple(y.shape[-2:]), []).append((i, y))
        for items in by_size.values():
            yield (torch.cat([y for _, y in items]), torch.zeros(len(items), dtype=torch.long),
                   torch.tensor([i for i, _ in items]))
    return batches


def softmax_of(model, x):
    """Independent reference: normalise by hand, run the net, soft-max."""
    mean = torch.tensor(model.normalization.mean).view(1, -1, 1, 1)
    std = torch.tensor(model.normalization.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return F.softmax(model((x.float() - mean) / std), dim=1)


# -- scales --------------------------------------------------------------------------------------------

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


# -- views ---------------------------------------------------------------------------------------------

def test_dense_at_crop_size_equals_the_centre_crop():
    model = tiny()
    x = images(3, CROP, CROP)
    dense = ev.view_posteriors(model, x, ev.method_views("dense", [CROP], flip=False))
    centre = ev.view_posteriors(model, x, ev.method_views("centre", [CROP], flip=False))
    torch.testing.assert_close(dense, centre, rtol=0, atol=0)
    torch.testing.assert_close(dense, softmax_of(model, x), rtol=1e-5, atol=1e-6)
    # and end to end: an image set already at the crop size, evaluated at Q = crop
    base = list(images(4, CROP, CROP, seed=1))
    run = [ev.fused_posteriors([model], [ev.method_views(p, [CROP], flip=True)],
                               synthetic_batches(base), 4)[0] for p in ("dense", "centre")]
    torch.testing.assert_close(run[0], run[1], rtol=0, atol=0)
    # on a larger image dense differs from a centre crop: it sees the whole image
    big = images(2, 64, 48)
    assert not torch.allclose(ev.view_posteriors(model, big, ev.method_views("dense", [48], False)),
                              ev.view_posteriors(model, big, ev.method_views("centre", [48], False)))


def test_multi_crop_is_5x5x2_views_per_scale_covering_the_corners():
    views = ev.method_views("multi-crop", [40, 48])
    assert len(views) == 2 * 5 * 5 * 2
    for q in (40, 48):
        mine = [v for v in views if v.scale == q]
        assert len(mine) == 50 and all(v.kind == "grid" for v in mine)
        assert {(v.cell, v.flip) for v in mine} == {((r, c), f) for r in range(5) for c in range(5)
                                                    for f in (False, True)}
    assert math.isclose(sum(v.weight for v in views), 1.0)
    assert ev.grid_offsets(48, 32) == [0, 4, 8, 12, 16]
    assert ev.grid_offsets(56, 32) == [0, 6, 12, 18, 24]
    assert ev.grid_offsets(32, 32) == [0] * 5
    for side in range(32, 60):  # symmetric, and the middle crop is the centre crop
        o = ev.grid_offsets(side, 32)
        assert o[0] + o[4] == o[1] + o[3] == side - 32 and o[4] == side - 32
        assert o[2] == ev.centre_offset(side, 32) and o == sorted(o)
    h, w = 40, 56  # a non-square image rescaled to Q = 40
    x = torch.arange(h * w, dtype=torch.int32).view(1, 1, h, w)
    rows, cols = ev.grid_offsets(h, CROP), ev.grid_offsets(w, CROP)
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


def test_flip_and_centre_crop_are_the_plain_operations():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.uint8).view(2, 3, 5, 7)
    torch.testing.assert_close(ev.hflip(x), x[..., torch.arange(6, -1, -1)])
    torch.testing.assert_close(ev.centre_crop(x, 3), x[..., 1:4, 2:5])
    with pytest.raises(ValueError, match="does not fit a 5x7 image"):
        ev.crop(x, 3, 0, 3)


def test_a_view_set_is_the_mean_of_its_views_posteriors():
    model = tiny()
    base = [images(1, 30, 40, seed=2)[0], images(1, 44, 36, seed=3)[0]]
    views = ev.method_views("dense", [32, 40], flip=True)
    assert len(views) == 4
    probs, met = ev.fused_posteriors([model], [views], synthetic_batches(base), 2)
    assert met.all()
    for i, img in enumerate(base):
        parts = []
        for q in (32, 40):
            y = rescale(img[None], q)
            parts += [softmax_of(model, y), softmax_of(model, y.flip(-1))]
        torch.testing.assert_close(probs[i:i + 1], torch.stack(parts).mean(0), rtol=1e-5, atol=1e-6)
    # dense+multi-crop: the dense and the multi-crop posteriors averaged (Sec. 4.3), each half 1/2
    both = ev.method_views("dense+multi-crop", [32], flip=True)
    assert len(both) == 2 + 50
    y = rescale(base[0][None], 32)
    dense = torch.stack([softmax_of(model, y), softmax_of(model, y.flip(-1))]).mean(0)
    rows, cols = ev.grid_offsets(y.shape[-2], CROP), ev.grid_offsets(y.shape[-1], CROP)
    crops = [y[..., r:r + CROP, c:c + CROP] for r in rows for c in cols]
    multi = torch.stack([softmax_of(model, z) for c in crops for z in (c, c.flip(-1))]).mean(0)
    got = ev.view_posteriors(model, y, both)
    torch.testing.assert_close(got, (dense + multi) / 2, rtol=1e-5, atol=1e-6)
    # the forward passes may be grouped differently; the result may not change
    torch.testing.assert_close(ev.view_posteriors(model, y, both, max_batch=1), got,
                               rtol=1e-5, atol=1e-6)


def test_fusion_of_a_net_with_itself_is_the_net_and_fusion_is_the_mean():
    a, b = tiny(0), tiny(1)
    base = [images(1, 36, 48, seed=s)[0] for s in range(3)] + [images(1, 40, 40, seed=9)[0]]
    batches = synthetic_batches(base)
    views = ev.method_views("dense+multi-crop", [32, 40])
    alone, _ = ev.fused_posteriors([a], [views], batches, 4)
    twice, _ = ev.fused_posteriors([a, a], [views, views], batches, 4)
    torch.testing.assert_close(twice, alone, rtol=1e-6, atol=1e-7)
    other, _ = ev.fused_posteriors([b], [views], batches, 4)
    fused, _ = ev.fused_posteriors([a, b], [views, views], batches, 4)
    torch.testing.assert_close(fused, (alone + other) / 2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fused.sum(1), torch.ones(4))


def test_grey_images_feed_a_colour_net_and_a_skipped_image_is_masked():
    model = tiny()
    grey = images(2, 32, 32, c=1)
    torch.testing.assert_close(ev.posterior(model, grey), softmax_of(model, grey.expand(-1, 3, -1, -1)))
    with pytest.raises(ValueError, match="expects 2-channel images, got 3"):
        ev.posterior(tiny(in_channels=2), images(1, 32, 32))
    base = [images(1, 32, 40, seed=s)[0] for s in range(3)]

    def batches(q):  # image 1 is "undecodable" at every scale
        for x, y, i in synthetic_batches(base)(q):
            keep = i != 1
            if keep.any():
                yield x[keep], y[keep], i[keep]
    _, met = ev.fused_posteriors([model], [ev.method_views("dense", [32, 40])], batches, 3)
    assert met.tolist() == [True, False, True]


# -- metrics and class lists ---------------------------------------------------------------------------

def test_topk_on_a_hand_made_set():
    probs = torch.tensor([
        [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 0: top-1
        [0.05, 0.10, 0.40, 0.20, 0.15, 0.10],  # label 3: 2nd -> top-5 only
        [0.30, 0.25, 0.20, 0.12, 0.08, 0.05],  # label 5: 6th -> neither
        [0.01, 0.02, 0.03, 0.04, 0.10, 0.80],  # label 4: 2nd
    ])
    labels = torch.tensor([0, 3, 5, 4])
    assert ev.topk_correct(probs, labels, 1).tolist() == [True, False, False, False]
    assert ev.topk_correct(probs, labels, 5).tolist() == [True, True, False, True]
    m = ev.metrics(probs, labels, list("abcdef"))
    assert m["images"] == 4
    assert m["top1_error"] == pytest.approx(75.0) and m["top5_error"] == pytest.approx(25.0)
    assert m["top1_accuracy"] == pytest.approx(25.0) and m["top5_accuracy"] == pytest.approx(75.0)
    assert m["per_class"]["a"] == {"images": 1, "accuracy": 100.0}
    assert m["per_class"]["d"] == {"images": 1, "accuracy": 0.0}
    assert m["per_class"]["b"] == {"images": 0, "accuracy": None}
    assert m["confusion"][3][2] == 1 and m["confusion"][4][5] == 1 and m["confusion"][5][0] == 1
    assert sum(map(sum, m["confusion"])) == 4
    # with fewer than five classes top-5 is every class: always right
    assert ev.topk_correct(probs[:, :3].softmax(1), torch.tensor([2, 1, 0, 2]), 5).all()


def test_class_list_mismatch_says_how():
    a = tiny(classes=("cat", "dog", "owl"))
    with pytest.raises(ValueError, match=r"a\.st and b\.st differ: class 2 is 'owl' vs 'emu'; "
                                         r"only in the first: owl; only in the second: emu"):
        ev.common_classes([a, tiny(classes=("cat", "dog", "emu"))], ["a.st", "b.st"])
    with pytest.raises(ValueError, match="differ: 3 classes vs 4"):
        ev.common_classes([a, tiny(classes=("cat", "dog", "owl", "emu"))], ["a.st", "b.st"])
    with pytest.raises(ValueError, match="same names, different order"):
        ev.common_classes([a, tiny(classes=("dog", "cat", "owl"))], ["a.st", "b.st"])
    with pytest.raises(ValueError, match="the classes of a.st and data set x differ"):
        ev.common_classes([a], ["a.st"], ["cat", "dog", "bat"], "data set x")
    unnamed = tiny(classes=("x", "y", "z"))
    unnamed.classes = None
    assert ev.common_classes([unnamed, a], ["u", "a"]) == ["cat", "dog", "owl"]
    assert ev.common_classes([unnamed], ["u"], ["p", "q", "r"]) == ["p", "q", "r"]
    with pytest.raises(ValueError, match="u has 3 outputs but the data has 2 classes"):
        ev.common_classes([unnamed], ["u"], ["p", "q"])


def test_confusion_png(tmp_path):
    path = ev.save_confusion_png([[3, 1], [0, 4]], ["cat", "dog"], tmp_path / "c" / "conf.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the data set path and the commands ----------------------------------------------------------------

FMNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
          "Ankle boot"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    fixed = tiny(0, classes=FMNIST, in_channels=1, train_scale=(37, 37))
    jitter = tiny(1, classes=FMNIST, in_channels=1, train_scale=(37, 73))
    other = tiny(2, classes=FMNIST[:9] + ["Boot"], in_channels=1)
    return {name: vgg.save_model(m, folder / f"{name}.safetensors")
            for name, m in (("fixed", fixed), ("jitter", jitter), ("other", other))}


def test_evaluate_on_a_data_set_matches_an_independent_computation(checkpoints):
    from vgg.data import open_dataset

    ds = open_dataset("fashion-mnist", "test", limit=40)
    model = vgg.load_model(checkpoints["fixed"])
    r = ev.evaluate(model, ds, protocol="dense", scales=[32], flip=False, batch_size=16)
    x = F.interpolate(ds.images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    probs = softmax_of(model, x.round().clamp(0, 255))
    top1 = (probs.argmax(1) == ds.labels).double().mean().item() * 100
    assert r.metrics["images"] == 40 and r.metrics["top1_accuracy"] == pytest.approx(top1)
    top5 = (probs.topk(5, 1).indices == ds.labels[:, None]).any(1).double().mean().item() * 100
    assert r.metrics["top5_error"] == pytest.approx(100 - top5)
    few = open_dataset("fashion-mnist", "test", limit=4)
    results = ev.evaluate_protocols([model], few, protocols=["dense", "multi-crop", "dense+multi-crop"],
                                    batch_size=16)
    assert [r.views for r in results] == [6, 150, 156]  # 3 scales x (1 or 25 crops + 2 flips)
    assert results[0].scales == [32, 37, 42]


def test_cli_evaluate_end_to_end(checkpoints, tmp_path, monkeypatch, capsys):
    import json

    from vgg.cli import main

    monkeypatch.chdir(tmp_path)
    ckpts = [str(checkpoints["fixed"]), str(checkpoints["jitter"])]
    argv = ["evaluate", *ckpts, "--split", "test", "--limit", "24", "--batch-size", "8",
            "--protocol", "dense+multi-crop", "--json", "out/eval.json", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "top-1 err %" in out and "dense+multi-crop" in out and "per-class accuracy" in out
    assert "37 / [37;73]" in out and "32,37,42 / 37,55,73" in out
    summary = json.loads((tmp_path / "out" / "eval.json").read_text())
    for key in ("protocol", "scales", "images", "top1_error", "top5_error", "top1_accuracy",
                "top5_accuracy", "images_per_second", "per_class", "confusion"):
        assert key in summary
    assert summary["protocol"] == "dense+multi-crop" and summary["images"] == 24
    assert summary["scales"] == [32, 37, 42, 55, 73]
    assert summary["top1_error"] + summary["top1_accuracy"] == pytest.approx(100)
    assert (tmp_path / "out" / "confusion_test_dense+multi-crop.png").read_bytes()[:4] == b"\x89PNG"
    # several protocols: one row each, a JSON list
    assert main(["evaluate", ckpts[0], "--split", "test", "--limit", "8", "--protocol", "centre",
                 "dense", "--scales", "32", "40", "--no-flip", "--json", "two.json",
                 "--confusion", "c.png", "--no-progress"]) == 0
    rows = json.loads((tmp_path / "two.json").read_text())
    assert [r["protocol"] for r in rows] == ["centre", "dense"] and rows[1]["flip"] is False
    assert (tmp_path / "c.png").is_file()
    # a run folder stands for its best checkpoint and, without --json, gets the confusion matrix
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "best.safetensors").write_bytes(Path(ckpts[0]).read_bytes())
    assert main(["evaluate", str(tmp_path / "run"), "--limit", "4", "--protocol", "centre",
                 "--no-progress"]) == 0
    assert (tmp_path / "run" / "confusion_val_centre.png").is_file()


def test_cli_evaluate_errors(checkpoints, tmp_path, capsys):
    from vgg.cli import main

    assert main(["evaluate", str(checkpoints["fixed"]), str(checkpoints["other"]), "--limit", "4",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "class lists of" in err and "class 9 is 'Ankle boot' vs 'Boot'" in err
    assert main(["evaluate", str(tmp_path / "none.safetensors"), "--no-progress"]) == 2
    assert "none.safetensors is neither a file or run folder" in capsys.readouterr().err
    assert main(["evaluate", "--no-progress"]) == 2
    assert "at least one checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(checkpoints["fixed"]), "--scales", "16", "--limit", "4",
                 "--no-progress"]) == 2
    assert "smaller than the crop size 32" in capsys.readouterr().err


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


def test_views_showing_the_same_pixels_run_once():
    model = tiny()
    seen = []
    model.features[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    x = images(3, CROP, CROP)
    multi = ev.view_posteriors(model, x, ev.method_views("multi-crop", [CROP]))
    assert sum(seen) == 2 * 3  # 25 identical crops and their 25 identical flips: two passes
    torch.testing.assert_close(multi, ev.view_posteriors(model, x, ev.method_views("dense", [CROP])))
    seen.clear()
    ev.view_posteriors(model, images(3, 40, 48), ev.method_views("multi-crop", [40]))
    assert sum(seen) == 50 * 3  # every crop different


def test_breakdown_rows_equal_separate_runs(checkpoints):
    from vgg.data import open_dataset

    ds = open_dataset("fashion-mnist", "test", limit=6)
    nets = [vgg.load_model(checkpoints["fixed"]), vgg.load_model(checkpoints["jitter"])]
    rows = ev.evaluate_protocols(nets, ds, names=["fixed", "jitter"], breakdown=True, batch_size=16,
                                 protocols=["centre", "dense", "dense+multi-crop"])
    got = [(r.protocol, [n["checkpoint"] for n in r.nets], r.scales) for r in rows]
    assert got == [
        ("centre", ["fixed"], [37]), ("dense", ["fixed"], [37]), ("dense+multi-crop", ["fixed"], [37]),
        ("dense", ["fixed"], [32, 37, 42]), ("dense+multi-crop", ["fixed"], [32, 37, 42]),
        ("centre", ["jitter"], [37]), ("dense", ["jitter"], [55]), ("dense+multi-crop", ["jitter"], [55]),
        ("dense", ["jitter"], [37, 55, 73]), ("dense+multi-crop", ["jitter"], [37, 55, 73]),
        ("centre", ["fixed", "jitter"], [37]), ("dense", ["fixed", "jitter"], [32, 37, 42, 55, 73]),
        ("dense+multi-crop", ["fixed", "jitter"], [32, 37, 42, 55, 73])]
    assert [r.views for r in rows[:5]] == [1, 2, 52, 6, 156]
    for r in rows:  # every row is what a run of that method alone gives
        i = [["fixed"], ["jitter"], ["fixed", "jitter"]].index([n["checkpoint"] for n in r.nets])
        models = [nets[i]] if i < 2 else nets
        alone = ev.evaluate(models, ds, protocol=r.protocol, batch_size=16,
                            scales=None if i == 2 or len(r.scales) > 1 or r.protocol == "centre"
                            else r.scales)
        torch.testing.assert_close(r.probs, alone.probs, rtol=1e-5, atol=1e-6)


def test_colour_images_for_a_grey_net_become_pillows_luma():
    from PIL import Image

    rgb = images(1, 9, 11, seed=5)
    expect = Image.fromarray(rgb[0].permute(1, 2, 0).numpy()).convert("L")
    got = ev.match_channels(rgb, 1)
    assert got.dtype == torch.uint8 and got.shape == (1, 1, 9, 11)
    assert got[0, 0].tolist() == np.asarray(expect).tolist()


def test_folder_of_mixed_sizes_is_batched_by_size_and_equals_one_at_a_time(tmp_path):
    from PIL import Image

    from vgg.data import decode_rescaled, open_dataset

    g = torch.Generator().manual_seed(3)
    sizes = {"cat": [(30, 40), (40, 30), (36, 36)], "dog": [(30, 40), (50, 34), (28, 28)]}
    for split in ("train", "val"):
        for cls, shapes in sizes.items():
            (tmp_path / split / cls).mkdir(parents=True)
            for j, (h, w) in enumerate(shapes):
                pixels = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{j}.png")
    (tmp_path / "val" / "dog" / "broken.png").write_bytes(b"\x89PNG broken")
    ds = open_dataset(str(tmp_path), "val")
    model = tiny(classes=("cat", "dog"))
    with pytest.warns(UserWarning, match="broken.png"):
        r = ev.evaluate(model, ds, protocol="dense", scales=[32, 40], batch_size=4)
    assert r.metrics["images"] == 6 and [Path(p).name for p, _ in r.skipped] == ["broken.png"]
    views = ev.method_views("dense", [32, 40])
    kept = [i for i, p in enumerate(ds.paths) if not p.endswith("broken.png")]
    for row, i in enumerate(kept):
        one = sum(ev.view_posteriors(model, decode_rescaled(ds.paths[i], q)[None],
                                     [v for v in views if v.scale == q]) for q in (32, 40))
        torch.testing.assert_close(r.probs[row:row + 1], one, rtol=1e-5, atol=1e-6)


def test_caffe_pooling_sees_a_side_that_is_not_a_multiple_of_32_whole():
    model = tiny()
    x = images(2, 37, 37)
    assert model.score_map(x.float()).shape[-2:] == (1, 1)  # PyTorch: cut to the top-left 32
    with ev.caffe_pooling(model):
        assert model.score_map(x.float()).shape[-2:] == (2, 2)  # Caffe: rounded up
    assert all(not m.ceil_mode for m in model.modules() if isinstance(m, torch.nn.MaxPool2d))
    views = ev.method_views("dense", [64])
    y = images(2, 64, 96)
    plain, _ = ev.fused_posteriors([model], [views], lambda q: [(y, torch.zeros(2), torch.arange(2))], 2)
    ceil, _ = ev.fused_posteriors([model], [views], lambda q: [(y, torch.zeros(2), torch.arange(2))], 2,
                                  ceil_mode=True)
    torch.testing.assert_close(plain, ceil, rtol=0, atol=0)  # multiples of 32: the same
    batches = lambda q: [(x, torch.zeros(2), torch.arange(2))]  # noqa: E731
    views = ev.method_views("dense", [37])
    assert not torch.allclose(ev.fused_posteriors([model], [views], batches, 2)[0],
                              ev.fused_posteriors([model], [views], batches, 2, ceil_mode=True)[0])
