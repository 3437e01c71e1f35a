"""TrainConfig, recipes and the rules of resuming."""

from pathlib import Path

import pytest

from support import epochs_of, tiny_config
from vgg import cli
from vgg import training as T


def test_defaults_are_the_papers():
    c = T.TrainConfig()
    assert (c.batch_size, c.momentum, c.weight_decay, c.lr, c.epochs, c.dropout) == (256, 0.9, 5e-4, 1e-2,
                                                                                     74, 0.5)
    assert (c.lr_factor, c.lr_drops, c.crop_size, c.resolved_scale(), c.init) == (0.1, 3, 224, (256, 256),
                                                                                  "normal")
    assert T.TrainConfig(scale=[256, 512]).resolved_val_scale() == 384  # Sec. 4.1: Q = (Smin+Smax)/2
    assert T.TrainConfig(crop_size=32).resolved_scale() == (37, 37)


def test_config_collects_every_problem():
    with pytest.raises(ValueError) as e:
        T.TrainConfig(epochs=0, lr=-1.0, crop_size=40, arch="vgg99", scale=[300, 256], lr_factor=2.0)
    msg = str(e.value)
    for part in ("epochs must be at least 1", "lr must be >= 0", "unknown architecture 'vgg99'",
                 "crop_size must be a positive multiple of 32", "Smin <= Smax", "lr_factor"):
        assert part in msg
    with pytest.raises(ValueError, match="epochs must be an integer"):
        T.TrainConfig(epochs=2.5)
    with pytest.raises(ValueError, match="at most one of"):
        T.TrainConfig(init_from="a", init_from_shallow="b")
    with pytest.raises(ValueError, match="S must be at least the crop size"):
        T.TrainConfig(crop_size=224, scale=200)


def test_toml_recipe_flags_override_and_unknown_keys(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('arch = "vgg16"\nlr = 0.001\nscale = [256, 512]\nepochs = 3\nbatch-norm = true\n')
    c = T.make_config(recipe, {"lr": 0.5, "epochs": 7})
    assert (c.arch, c.lr, c.scale, c.epochs, c.batch_norm) == ("vgg16", 0.5, (256, 512), 7, True)
    bad = tmp_path / "bad.toml"
    bad.write_text("lerning_rate = 0.1\nepochs = 2\n")
    with pytest.raises(ValueError, match="unknown config key 'lerning_rate'"):
        T.make_config(bad)
    table = tmp_path / "table.toml"
    table.write_text("[optim]\nlr = 0.1\n")
    with pytest.raises(ValueError, match="tables are not supported"):
        T.make_config(table)
    # The resolved config a run writes reads back as a recipe.
    out = tmp_path / "config.toml"
    out.write_text(T.to_toml(c.to_dict()))
    assert T.make_config(out) == c


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert cli.main(["train", "--epochs", "0", "--lr", "-1", "--output", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vgg train: error: invalid training config") and "epochs" in err and "lr" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("epoch = 3\n")
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert "unknown config key 'epoch' (did you mean 'epochs'?)" in capsys.readouterr().err
    assert cli.main(["train", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["train", "--resume", "--output", str(tmp_path / "none")]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_resume_refuses_to_change_the_recipe(tmp_path):
    out = T.train(tiny_config(tmp_path)).output
    with pytest.raises(ValueError, match="cannot change lr"):
        T.run_config(None, {"lr": 0.5, "output": str(out)}, resume=True)
    c = T.run_config(None, {"epochs": 2, "output": str(out)}, resume=True)
    assert c.epochs == 2 and c.arch == "vgg11"
    r = T.train(c, resume=True)
    assert [e["epoch"] for e in epochs_of(r.output)] == [1, 2]


def test_recipes_are_valid():
    recipes = sorted(Path(__file__).parents[2].glob("recipes/*.toml"))
    assert len(recipes) >= 12
    for recipe in recipes:
        T.make_config(recipe)
