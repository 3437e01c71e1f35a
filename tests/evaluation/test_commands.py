"""The ``vgg evaluate`` command end to end: table, JSON, confusion matrix, errors."""

from pathlib import Path

import pytest


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
