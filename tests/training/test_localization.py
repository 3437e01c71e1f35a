"""The localisation task (App. A.1): box targets that follow the crop, the Euclidean loss of the true
class's box, the net built from a classifier, fine-tuning FC only, a run that learns, exact resume."""

import math

import numpy as np
import pytest
import torch

import vgg
from support import epochs_of, weights_of
from vgg import cli, data
from vgg import training as T
from vgg.localization import decode, elementwise_iou, tight_boxes
from vgg.models import Normalization
from vgg.training.localization import Localization, box_outputs, build_localization_net, is_localization

UNIT = torch.tensor([0.0, 0.0, 1.0, 1.0])


def mask_dataset(n=24, h=40, w=56, seed=0):
    """Images that *are* their box: a white rectangle on black (an independent reference of where the
    box goes under any crop and flip: the crop of the mask is the mask of the transformed box)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.zeros(n, 1, h, w, dtype=torch.uint8)
    boxes = torch.zeros(n, 1, 4)
    for i in range(n):
        bw, bh = (int(v) for v in torch.randint(6, 15, (2,), generator=g))  # small: most crops keep them
        x1 = int(torch.randint(0, w - bw + 1, (1,), generator=g))
        y1 = int(torch.randint(0, h - bh + 1, (1,), generator=g))
        x2, y2 = x1 + bw, y1 + bh
        images[i, 0, y1:y2, x1:x2] = 255
        boxes[i, 0] = torch.tensor([x1, y1, x2, y2])
    labels = torch.arange(n) % 2
    return data.BoxTensorDataset(images, labels, ["a", "b"], "masks", "train", boxes, labels[:, None].clone())


# 40x56 images: enlarged (one resampling of the crop's window), shrunk (a rescale, then the crop), both
@pytest.mark.parametrize("scale", [(40, 48), (36, 36), (32, 44)])
def test_box_targets_follow_the_crop_and_the_flip(scale):
    ds = mask_dataset(n=40)
    task = Localization("scr", crop_size=32)
    augment = data.Augment(crop_size=32, scale=scale, flip=True)
    batches = task.train_batches(ds, augment=augment, normalization=Normalization((0.0,), (1.0,)),
                                 batch_size=8, seed=3, epoch=1, start_batch=1)
    seen, kept = 0, 0
    for images, targets in batches:
        mask = images[:, 0] > 127  # bilinear resampling blurs the edges: half-way is the edge
        truth = torch.from_numpy(tight_boxes(mask.numpy()))
        box = decode(targets["boxes"], UNIT * 32)
        keep = targets["weights"] > 0
        # The clipped box is the mask's box, to a pixel (resampling puts edges within one pixel).
        assert ((box[keep] - truth[keep]).abs() <= 1.01).all(), (box[keep], truth[keep])
        seen, kept = seen + len(images), kept + int(keep.sum())
    assert seen == 32 and kept >= 10  # batches 1 to 4 of 5 (start_batch=1)


def test_small_kept_part_gives_weight_zero_and_no_loss():
    ds = mask_dataset(n=64)
    task = Localization("scr", crop_size=32)
    augment = data.Augment(crop_size=32, scale=(90, 90), flip=False)  # big rescale: many boxes cut
    images, targets = next(iter(task.train_batches(ds, augment=augment, batch_size=64, seed=0, epoch=0,
                                                   normalization=Normalization((0.0,), (1.0,)))))
    w = targets["weights"]
    assert 0 < w.sum() < len(w)  # some crops keep less than half of their box
    # Outputs far from the targets of weight-0 samples change nothing.
    out = targets["boxes"].clone()
    out[w == 0] += 5.0
    assert task.loss(out, targets).item() == pytest.approx(0.0, abs=1e-9)
    out[w > 0] += 0.1
    assert task.loss(out, targets).item() == pytest.approx(0.04 * float(w.sum()), rel=1e-5)


def test_val_targets_are_the_centre_crop_of_the_image_at_q():
    ds = mask_dataset(n=10, h=40, w=56)
    task = Localization("pcr", crop_size=32)
    crops, targets, index = next(iter(task.val_batches(ds, scale=36, batch_size=10)))
    assert crops.shape[-2:] == (32, 32)
    truth = torch.from_numpy(tight_boxes((crops[:, 0] > 127).numpy()))
    kept = decode(targets["boxes"], UNIT * 32)[targets["weights"] > 0]
    assert (kept - truth[targets["weights"] > 0]).abs().max() <= 1.01
    # gt: the whole box in the crop's frame (not clipped): rescaled by 36/40, shifted by the crop.
    gt = decode(targets["gt"][:, 0], UNIT * 32)
    f = 36 / 40
    left, top = round((round(56 * f) - 32) / 2), round((36 - 32) / 2)
    expected = ds.gt_boxes[index, 0] * torch.tensor([round(56 * f) / 56, f, round(56 * f) / 56, f]) - \
        torch.tensor([left, top, left, top])
    torch.testing.assert_close(gt, expected, atol=1e-4, rtol=0)


def test_pcr_loss_is_the_true_class_box_only_and_correct_counts_iou_above_half():
    task = Localization("pcr", crop_size=32)
    target = torch.tensor([[0.5, 0.5, 0.4, 0.4], [0.3, 0.6, 0.2, 0.5]])
    targets = {"labels": torch.tensor([2, 0]), "boxes": target, "weights": torch.ones(2),
               "gt": target[:, None]}
    out = torch.randn(2, 3, 4)
    out[0, 2], out[1, 0] = target[0], target[1]
    assert task.loss(out.reshape(2, 12), targets).item() == pytest.approx(0.0, abs=1e-12)
    assert task.correct(out.reshape(2, 12), targets).item() == 2
    out[1, 0, 0] += 0.1  # shifted by half its width: IoU 1/3
    assert task.loss(out.reshape(2, 12), targets).item() == pytest.approx(0.01, rel=1e-5)
    assert task.correct(out.reshape(2, 12), targets).item() == 1
    # SCR: one box for every class
    assert task.loss(target, targets).item() == 0.0


def test_a_subset_of_classes_keeps_their_images_and_boxes():
    from vgg.training.localization import select_box_classes

    ds = mask_dataset(n=12)
    ds.gt_boxes = torch.cat([ds.gt_boxes, ds.gt_boxes + 1], dim=1)  # a second box, of the other class
    ds.gt_labels = torch.stack([ds.labels, 1 - ds.labels], dim=1)
    sub = select_box_classes(ds, ["b"])
    assert sub.classes == ["b"] and len(sub) == 6 and (sub.labels == 0).all()
    assert torch.equal(sub.gt_boxes[:, 0], ds.gt_boxes[1::2, 0]) and sub.gt_boxes[:, 1].isnan().all()
    assert (sub.gt_labels == torch.tensor([0, -1])).all()
    assert torch.equal(sub.target_boxes(), ds.gt_boxes[1::2, 0])


def test_the_net_is_the_classifier_with_a_new_box_layer(tmp_path):
    source = vgg.create_model("A", num_classes=3, width=0.125, crop_size=32, in_channels=1)
    source.classes = ["a", "b", "c"]
    before = {k: v.clone() for k, v in source.state_dict().items()}
    model = build_localization_net(source, "pcr", ["a", "b", "c"], origin="cls")
    assert model.num_classes == box_outputs("pcr", 3) == 12 and box_outputs("scr", 3) == 4
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("classifier.6."))
    assert after["classifier.6.weight"].shape == (12, 512) and not after["classifier.6.bias"].any()
    assert is_localization(model) and model.info["localization"]["head"] == "pcr"
    path = vgg.save_model(model, tmp_path / "loc.safetensors")
    back = vgg.load_model(path)
    assert back.info["localization"]["classes"] == ["a", "b", "c"]
    assert "relative to the window" in back.info["localization"]["encoding"]


def test_config_needs_a_classifier_and_brings_the_papers_rate(tmp_path):
    with pytest.raises(ValueError, match="init_from"):
        T.TrainConfig(task="localization")
    with pytest.raises(ValueError, match="head must be"):
        T.TrainConfig(head="box")
    c = T.make_config(None, {"task": "localization", "init_from": "x"})
    assert c.lr == 1e-3 and c.output == "runs/localization"  # App. A.1: initial rate 1e-3
    assert T.make_config(None, {"task": "localization", "init_from": "x", "lr": 0.01}).lr == 0.01
    assert T.make_config(None, {}).lr == 0.01  # classification's recipe is untouched
    recipe = T.make_config(vgg_repo() / "recipes" / "fashion_mnist_loc.toml")
    # The CPU recipe's own rate and no dropout (README: what its 376 steps need) override the defaults.
    assert (recipe.task, recipe.head, recipe.data, recipe.lr, recipe.dropout) == \
        ("localization", "pcr", "fashion-mnist-loc", 0.005, 0.0)


def vgg_repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[2]


def constant_box_baseline(folder):
    """The best a net without eyes can do: the mean training box, on val (accuracy %, and the
    Euclidean loss of that constant)."""
    train = data.open_box_dataset(str(folder), "train")
    val = data.open_box_dataset(str(folder), "val")
    mean = train.target_boxes().mean(0)
    accuracy = 100 * (elementwise_iou(mean, val.target_boxes()) > 0.5).float().mean().item()
    enc = lambda b: torch.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0],  # noqa: E731
                                 b[:, 3] - b[:, 1]], 1) / 64
    loss = ((enc(val.target_boxes()) - enc(train.target_boxes()).mean(0)) ** 2).sum(1).mean().item()
    return accuracy, loss


def test_a_localisation_run_learns_and_keeps_classifications_records(loc_runs):
    history = loc_runs["loc_result"].history
    baseline_accuracy, baseline_loss = constant_box_baseline(loc_runs["data"])
    assert history[-1]["train_loss"] < history[0]["train_loss"] / 3
    assert history[-1]["val_loss"] < 0.7 * baseline_loss, (history[-1]["val_loss"], baseline_loss)
    best = max(h["val_loc_accuracy"] for h in history)
    assert best > baseline_accuracy + 20, (best, baseline_accuracy)
    assert all("val_accuracy" not in h and "train_loc_accuracy" in h for h in history)
    # The classifier it started from kept classification's records and learned too (4 classes).
    cls = loc_runs["cls_result"].history
    assert all("val_accuracy" in h and "val_loc_accuracy" not in h for h in cls)
    assert cls[-1]["val_accuracy"] > 50
    model = vgg.load_model(loc_runs["loc"])
    assert model.info["localization"]["head"] == "pcr" and model.num_classes == 16
    assert model.info["val_loc_accuracy"] == best and model.info["train_config"]["task"] == "localization"
    assert (loc_runs["loc"] / "curves.png").is_file()


def test_finetune_fc_leaves_the_conv_layers_as_the_classifier_had_them(loc_runs, tmp_path):
    out = tmp_path / "fc"
    T.train(T.TrainConfig(task="localization", head="scr", finetune="fc", init_from=str(loc_runs["cls"]),
                          data=str(loc_runs["data"]), crop_size=64, scale=(64, 80), limit=48, batch_size=16,
                          epochs=1, device="cpu", progress=False, output=str(out)))
    cls, loc = weights_of(loc_runs["cls"], "best.safetensors"), weights_of(out)
    conv = [k for k in cls if k.startswith("features.")]
    assert conv and all(torch.equal(cls[k], loc[k]) for k in conv)  # BN statistics included
    assert not torch.equal(cls["classifier.0.weight"], loc["classifier.0.weight"])


def test_resume_mid_epoch_is_bitwise_equal(loc_runs, tmp_path, monkeypatch):
    kw = dict(task="localization", head="pcr", init_from=str(loc_runs["cls"]), data=str(loc_runs["data"]),
              crop_size=64, scale=(64, 96), limit=64, batch_size=16, epochs=2, lr=0.002, device="cpu",
              progress=False, deterministic=True, save_every=3)
    ref = T.train(T.TrainConfig(output=str(tmp_path / "ref"), **kw))
    calls = {"n": 0}
    real = Localization.loss

    def dies(self, outputs, targets):
        calls["n"] += 1
        # Epoch 1: 4 steps and 1 val batch; call 9 is step 8 of 8, the state of step 6 is on disk.
        if calls["n"] == 9:
            raise RuntimeError("killed")
        return real(self, outputs, targets)

    monkeypatch.setattr(Localization, "loss", dies)
    with pytest.raises(RuntimeError, match="killed"):
        T.train(T.TrainConfig(output=str(tmp_path / "cut"), **kw))
    state = T.read_state(tmp_path / "cut" / "state.safetensors", tensors=False)
    assert (state["epoch"], state["step"]) == (1, 2)  # mid-way through the second epoch
    monkeypatch.setattr(Localization, "loss", real)
    T.train(T.resume_config(tmp_path / "cut"), resume=True)
    a, b = weights_of(ref.output), weights_of(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    keys = ("train_loss", "train_loc_accuracy", "val_loss", "val_loc_accuracy")
    assert [[e[k] for k in keys] for e in epochs_of(ref.output)] == \
        [[e[k] for k in keys] for e in epochs_of(tmp_path / "cut")]


def test_bad_annotations_are_skipped_by_name_or_refused_with_strict(loc_runs, tmp_path, capsys):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(loc_runs["data"], folder)
    csv = folder / "train" / "boxes.csv"
    lines = csv.read_text().splitlines()
    name, *_ = lines[1].split(",")  # the first image: among those --limit keeps
    lines[1] = f"{name},10,10,80,30"  # outside the 64x64 image
    csv.write_text("\n".join(lines) + "\n")
    args = ["train", "--task", "localization", "--init-from", str(loc_runs["cls"]), "--data", str(folder),
            "--crop-size", "64", "--scale", "64", "--limit", "32", "--batch-size", "16", "--epochs", "1",
            "--device", "cpu", "--no-progress"]
    assert cli.main([*args, "--output", str(tmp_path / "skip")]) == 0
    out = capsys.readouterr().out
    assert f"{csv}:2" in out and "outside the 64x64 image" in out
    assert "not among the images" not in out  # --limit: the other images' boxes are no problem
    log = (tmp_path / "skip" / "log.jsonl").read_text()
    assert "skipped_files" in log and "boxes.csv:2" in log
    assert cli.main([*args, "--strict", "--output", str(tmp_path / "strict")]) == 2
    err = capsys.readouterr().err
    assert f"{csv}:2" in err and "outside" in err, err
    assert not (tmp_path / "strict" / "state.safetensors").exists()


def test_localisation_needs_data_with_boxes(loc_runs, tmp_path, capsys):
    code = cli.main(["train", "--task", "localization", "--init-from", str(loc_runs["cls"]), "--data",
                     "fashion-mnist", "--crop-size", "64", "--scale", "64", "--device", "cpu",
                     "--output", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "has no boxes" in err and "fashion-mnist-loc" in err, err


def test_box_folder_reference_is_sane(loc_runs):
    ds = data.open_box_dataset(str(loc_runs["data"]), "val")
    assert not ds.problems and ds.gt_boxes.shape[1:] == (1, 4)
    assert not math.isnan(float(ds.gt_boxes.sum())) and (ds.gt_boxes[..., 2:] <= 64).all()
    assert np.isin(ds.labels.numpy(), range(4)).all()


def test_the_test_of_a_localisation_run_is_protocol_1(loc_runs, tmp_path):
    # --test of a localisation run (its task's test): the best net on the test split, centre crop at
    # Q = S, the true class's box (Table 8). With the val split as the test split, it must give the
    # run's own best val localisation accuracy.
    import dataclasses
    import shutil

    from vgg import distributed

    folder = tmp_path / "data"
    shutil.copytree(loc_runs["data"], folder)
    shutil.copytree(folder / "val", folder / "test")
    config = dataclasses.replace(T.resume_config(loc_runs["loc"]), data=str(folder))
    record = T.task_for(config).test(config, loc_runs["loc"], distributed.Context(), None, 0)
    assert record["protocol"] == "centre" and record["gt_class"] and record["images"] == 128
    best = vgg.load_model(loc_runs["loc"]).info["val_loc_accuracy"]
    assert abs((100 - record["localization_error_gt_class"]) - best) <= 100 / 128 + 1e-9
