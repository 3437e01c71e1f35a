"""TrainConfig, recipes and the rules of resuming."""

from pathlib import Path

import pytest

import vgg
from support import LEARNS, assert_learned, epochs_of, learning_config, tiny_config
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
    out = T.train(learning_config(tmp_path, epochs=1)).output
    with pytest.raises(ValueError, match="cannot change lr"):
        T.run_config(None, {"lr": 0.5, "output": str(out)}, resume=True)
    c = T.run_config(None, {"epochs": 2, "output": str(out)}, resume=True)
    assert c.epochs == 2 and c.arch == "vgg11" and c.lr == LEARNS["lr"] and c.classes == LEARNS["classes"]
    r = T.train(c, resume=True)
    assert [e["epoch"] for e in epochs_of(r.output)] == [1, 2]
    assert_learned(r.output)  # the resumed epoch goes on learning
    recs = epochs_of(r.output)
    assert recs[1]["train_loss"] < recs[0]["train_loss"]


def test_recipes_are_valid():
    recipes = sorted(Path(__file__).parents[2].glob("recipes/*.toml"))
    assert len(recipes) >= 12
    for recipe in recipes:
        T.make_config(recipe)


def test_a_config_file_reports_every_problem_at_once(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('learning_rate = 0.1\nepochs = "3"\nbatch_size = 0\ncrop_size = 33\nwidht = 0.5\n'
                   'scale = ["a", "b"]\n')
    with pytest.raises(ValueError) as e:
        T.make_config(bad, {"lr_factor": 2.0})
    msg = str(e.value)
    for part in ("unknown config key 'learning_rate' (ours is 'lr')",  # another code base's name
                 "unknown config key 'widht' (did you mean 'width'?)",
                 "epochs must be an integer, got '3'",  # a type error hides nothing else
                 "batch_size must be at least 1, got 0", "crop_size must be a positive multiple of 32",
                 "scale must be S or [Smin, Smax], got ['a', 'b']", "lr_factor must be in (0, 1)"):
        assert part in msg, part
    # the wrong types are reported once, not again as values
    with pytest.raises(ValueError) as e:
        T.TrainConfig(crop_size="32", scale=40, val_scale=20)
    assert str(e.value) == "invalid training config: crop_size must be an integer, got '32'"
    assert cli.main(["train", "--config", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_resume_with_the_original_flags_compares_resolved_values(tmp_path):
    out = tmp_path / "run"
    T.train(tiny_config(tmp_path, batch_norm=True))
    original = {"arch": "A", "batch_norm": True, "width": 0.125, "crop_size": 32, "scale": [32, 36],
                "limit": 64, "batch_size": 8, "device": "cpu", "progress": False, "output": str(out)}
    for spelling in ({}, {"arch": "vgg11_bn"}, {"arch": "a", "batch_norm": True}, {"arch": "vgg11"}):
        c = T.run_config(None, {**original, **spelling, "epochs": 2}, resume=True)
        assert (c.arch, c.batch_norm, c.epochs, c.scale) == ("vgg11_bn", True, 2, (32, 36))
    for changed in ({"arch": "B"}, {"width": 0.25}, {"scale": [32, 40]}):
        with pytest.raises(ValueError, match=f"cannot change {next(iter(changed))}"):
            T.run_config(None, {**original, **changed}, resume=True)


def test_a_run_saved_before_ceil_pooling_resumes_with_its_floor_pooling(tmp_path, monkeypatch):
    out = T.train(tiny_config(tmp_path)).output
    assert T.resume_config(out).floor_pooling is False
    real = T.read_state

    def older(path, tensors=True):  # the state of a run saved before the setting existed
        state = real(path, tensors)
        del state["config"]["floor_pooling"], state["config"]["decay_bias_norm"]
        return state

    monkeypatch.setattr("vgg.training.recipes.read_state", older)
    c = T.resume_config(out)
    assert c.floor_pooling is True and c.decay_bias_norm is True


def test_the_a_lrn_recipe_is_table_3s_second_row():
    recipe = Path(__file__).parents[2] / "recipes" / "vgg_a_lrn_s256.toml"
    c = T.make_config(recipe)
    assert (c.arch, c.crop_size, c.scale, c.lr, c.init) == ("A-LRN", 224, (256, 256), 0.01, "normal")
    assert vgg.models.parse_arch(c.arch) == ("A-LRN", False)
