"""A data set under the paper's protocols: class lists, independent reference, breakdown rows."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import vgg
from evaluation.support import softmax_of, tiny
from vgg import evaluation as ev


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


def test_evaluate_on_a_data_set_matches_an_independent_computation(checkpoints):
    from vgg.data import open_dataset

    ds = open_dataset("fashion-mnist", "test", limit=40)
    model = vgg.load_model(checkpoints["fixed"])
    r = ev.evaluate(model, ds, protocol="dense", scales=[32], flip=False, batch_size=16)
    x = F.interpolate(ds.images.float(), size=(32, 32), mode="bilinear", align_corners=False)
    probs = softmax_of(model, x.round().clamp(0, 255))
    assert len(set(probs.argmax(1).tolist())) >= 5  # the net tells the images apart
    torch.testing.assert_close(r.probs, probs, rtol=1e-4, atol=1e-5)
    top1 = (probs.argmax(1) == ds.labels).double().mean().item() * 100
    assert r.metrics["images"] == 40 and r.metrics["top1_accuracy"] == pytest.approx(top1)
    top5 = (probs.topk(5, 1).indices == ds.labels[:, None]).any(1).double().mean().item() * 100
    assert r.metrics["top5_error"] == pytest.approx(100 - top5)
    few = open_dataset("fashion-mnist", "test", limit=4)
    results = ev.evaluate_protocols([model], few, protocols=["dense", "multi-crop", "dense+multi-crop"],
                                    batch_size=16)
    assert [r.views for r in results] == [6, 150, 156]  # 3 scales x (1 or 25 crops + 2 flips)
    assert results[0].scales == [32, 37, 42]


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
        with ev.caffe_pooling(model):  # the default of dense views
            one = sum(ev.view_posteriors(model, decode_rescaled(ds.paths[i], q)[None],
                                         [v for v in views if v.scale == q]) for q in (32, 40))
        torch.testing.assert_close(r.probs[row:row + 1], one, rtol=1e-5, atol=1e-6)
