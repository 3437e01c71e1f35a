"""The command line: tables, help, and one-line errors."""

import subprocess
import sys

import pytest

from vgg.cli import main


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert len(rows) == 12
    assert rows["vgg16"][1:] == ["D", "16", "138.36", "15.47"]
    assert rows["vgg19_bn"][1:] == ["E_bn", "19", "143.68", "19.63"]
    assert rows["vgg11_lrn"][1:] == ["A-LRN", "11", "132.86", "7.61"]
    assert rows["vgg16_c"][1:3] == ["C", "16"]


def test_summary_totals(capsys):
    assert main(["summary", "vgg16"]) == 0
    out = capsys.readouterr().out
    assert "138,357,544" in out and "15,470,264,320" in out
    assert "parameters: 138.36 M" in out and "multiply-adds: 15.47 G" in out
    conv5 = next(line for line in out.splitlines() if line.startswith("conv5_3"))
    assert conv5.split()[1:3] == ["512x14x14", "196"]  # the receptive field of conv5_3 is 196


def test_summary_small_and_dense(capsys):
    assert main(["summary", "A", "--batch-norm", "--width", "0.25", "--crop-size", "32",
                 "--num-classes", "10", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "vgg11_bn (width 0.25, crop 32, input 64)" in out
    assert next(line for line in out.splitlines() if line.startswith("fc8")).split()[1] == "10x2x2"


@pytest.mark.parametrize("argv,message", [
    (["summary", "vgg17"], "unknown architecture 'vgg17'"),
    (["summary", "vgg16", "--size", "100"], "size 100 is smaller than the crop size 224"),
    (["summary", "vgg16", "--crop-size", "100"], "multiple of 32"),
])
def test_errors_are_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_help_and_module_entry():
    out = subprocess.run([sys.executable, "-m", "vgg", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "models" in out.stdout and "summary" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "vgg", "summary"], capture_output=True, text=True)
    assert bad.returncode == 2 and "arch" in bad.stderr


@pytest.mark.parametrize("argv,hint", [
    (["train", "--epoch", "3"], "--epochs"),  # an abbreviation is not expanded (it would train VGG11 at 224)
    (["train", "--epohcs", "3"], "--epochs"),
    (["evaluate", "run", "--no-progres"], "--no-progress"),
    (["summary", "A", "--num-class", "10"], "--num-classes"),
])
def test_an_unknown_or_abbreviated_flag_is_an_error_naming_the_closest(argv, hint, capsys, monkeypatch):
    import vgg.cli

    ran = []  # the command must not run at all
    help_text, add_args, _ = vgg.cli.COMMANDS[argv[0]]
    monkeypatch.setitem(vgg.cli.COMMANDS, argv[0], (help_text, add_args, ran.append))
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and not ran
    assert err.startswith(f"usage: vgg {argv[0]} ")  # the subcommand's usage, not the top level's
    assert f"vgg {argv[0]}: error: unrecognized argument" in err and f"(did you mean {hint}?)" in err


def test_pooling_flags(tmp_path, capsys):
    assert main(["evaluate", "x.safetensors", "--floor-pooling", "--ceil-pooling"]) == 2
    assert "give --floor-pooling or --ceil-pooling, not both" in capsys.readouterr().err
