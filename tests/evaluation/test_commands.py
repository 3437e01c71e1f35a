"""The ``vgg evaluate`` command end to end: table, JSON, confusion matrix, errors."""

from pathlib import Path

import pytest
import torch

import vgg


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
    # The numbers agree with each other: the confusion matrix's diagonal is the top-1 accuracy and
    # each row's share its class's accuracy; the nets tell the images apart (not one class for all).
    conf = summary["confusion"]
    assert sum(map(sum, conf)) == 24 and sum(1 for col in zip(*conf) if sum(col)) >= 3
    assert 100 * sum(conf[i][i] for i in range(10)) / 24 == pytest.approx(summary["top1_accuracy"])
    for i, c in enumerate(summary["per_class"].values()):
        assert c["images"] == sum(conf[i])
        assert c["accuracy"] is None or c["accuracy"] == pytest.approx(100 * conf[i][i] / c["images"])
    assert summary["top5_accuracy"] >= summary["top1_accuracy"]
    assert (tmp_path / "out" / "confusion_test_dense+multi-crop.png").read_bytes()[:4] == b"\x89PNG"
    # several protocols: one row each, a JSON list
    assert main(["evaluate", ckpts[0], "--split", "test", "--limit", "8", "--protocol", "centre",
                 "dense", "--scales", "32", "40", "--no-flip", "--json", "two.json",
                 "--confusion", "c.png", "--no-progress"]) == 0
    rows = json.loads((tmp_path / "two.json").read_text())
    assert [r["protocol"] for r in rows] == ["centre", "dense"] and rows[1]["flip"] is False
    # each row is the library's evaluation of the same images under that protocol
    from vgg import evaluation as ev
    from vgg.data import open_dataset

    test8, net = open_dataset("fashion-mnist", "test", limit=8), vgg.load_model(ckpts[0])
    for row in rows:
        alone = ev.evaluate(net, test8, protocol=row["protocol"], scales=[32, 40], flip=False).summary()
        for key in ("top1_accuracy", "top5_accuracy"):
            assert row[key] == alone[key], (row["protocol"], key)
        assert row["confusion"] == alone["confusion"]
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
    assert "none.safetensors is neither a file nor a run folder" in capsys.readouterr().err
    assert main(["evaluate", "--no-progress"]) == 2
    assert "at least one checkpoint" in capsys.readouterr().err
    assert main(["evaluate", str(checkpoints["fixed"]), "--scales", "16", "--limit", "4",
                 "--no-progress"]) == 2
    assert "smaller than the crop size 32" in capsys.readouterr().err


def test_cli_evaluate_pools_as_caffe_unless_floor_pooling(checkpoints, tmp_path, capsys):
    import json

    from vgg.cli import main

    rows = {}
    for flags in ([], ["--floor-pooling"], ["--ceil-pooling"]):  # the old flag still works: the default
        path = tmp_path / f"{len(flags)}{''.join(flags)}.json"
        assert main(["evaluate", str(checkpoints["fixed"]), "--split", "test", "--limit", "16",
                     "--scales", "37", "--no-flip", "--json", str(path), "--confusion",
                     str(tmp_path / "c.png"), "--no-progress", "--device", "cpu", *flags]) == 0
        rows[tuple(flags)] = json.loads(path.read_text())
    assert rows[()]["ceil_pooling"] is True and rows[("--floor-pooling",)]["ceil_pooling"] is False
    assert rows[("--ceil-pooling",)]["per_class"] == rows[()]["per_class"]
    assert rows[()]["confusion"] != rows[("--floor-pooling",)]["confusion"]  # Q = 37: the pooling matters


def test_cli_evaluate_bf16_runs_the_engine_in_bf16_with_about_the_same_numbers(checkpoints, tmp_path,
                                                                                monkeypatch, capsys):
    import json

    from vgg import distributed
    from vgg.cli import main
    from vgg.evaluation import commands

    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: True)  # any machine runs the test
    loaded = []
    real = commands.load_nets
    monkeypatch.setattr(commands, "load_nets", lambda *a, **k: loaded.append(real(*a, **k)) or loaded[-1])
    rows = {}
    for flags in ([], ["--bf16"]):
        path = tmp_path / f"{len(flags)}.json"
        assert main(["evaluate", str(checkpoints["fixed"]), "--split", "test", "--limit", "48", "--scales",
                     "32", "37", "--json", str(path), "--confusion", str(tmp_path / "c.png"),
                     "--no-progress", "--device", "cpu", *flags]) == 0
        rows[tuple(flags)] = json.loads(path.read_text())
    assert [nets[0].features.dtype for nets in loaded] == [torch.float32, torch.bfloat16]
    fp32, bf16 = rows[()], rows[("--bf16",)]
    assert abs(fp32["top1_accuracy"] - bf16["top1_accuracy"]) <= 100 * 2 / 48  # at most two images move
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: False)
    assert main(["evaluate", str(checkpoints["fixed"]), "--limit", "4", "--bf16", "--no-progress",
                 "--device", "cpu"]) == 2
    assert "native bfloat16" in capsys.readouterr().err
