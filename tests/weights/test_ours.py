"""Our checkpoint format: safetensors + metadata, written atomically, read safely."""

import os
import pickle

import pytest
import torch

import vgg
from vgg.models import TORCHVISION_NORMALIZATION
from vgg.weights import read_metadata, save_model, torch_load_safe

from .references import small_model


def test_round_trip(tmp_path):
    model = small_model()
    with torch.no_grad():
        model.features[1].running_mean.uniform_()
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = vgg.load_model(path)
    assert loaded.arch == "vgg16_bn" and loaded.classes == ["cat", "dog", "owl"]
    assert loaded.normalization == TORCHVISION_NORMALIZATION
    assert loaded.info == {"train_scale": [32, 64]}
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(model(x), loaded(x), rtol=0, atol=0)
    assert read_metadata(path)["model"]["width"] == 0.125


def test_run_folder_resolves_to_best(tmp_path):
    save_model(small_model("A"), tmp_path / "best.safetensors")
    assert vgg.load_model(tmp_path).arch == "vgg11"
    with pytest.raises(FileNotFoundError, match="missing.safetensors does not exist"):
        vgg.load_model(tmp_path / "missing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no best.safetensors"):
        vgg.load_model(tmp_path / "empty")


def test_failed_save_keeps_the_old_file(tmp_path):
    path = save_model(small_model("A"), tmp_path / "m.safetensors")
    before = path.read_bytes()
    bad = small_model("A")
    bad.info = {"not json": object()}
    with pytest.raises(TypeError):
        save_model(bad, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


def test_saved_files_get_ordinary_permissions(tmp_path):
    """The temporary file is private while written; the result has the mode open() would give it,
    or keeps the mode of the file it replaces."""
    umask = os.umask(0o022)
    os.umask(umask)
    path = save_model(small_model("A"), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o640)
    save_model(small_model("A"), path)
    assert path.stat().st_mode & 0o777 == 0o640


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="bad.safetensors is not a readable safetensors file"):
        vgg.load_model(path)


def test_shape_mismatch_names_the_tensors(tmp_path):
    path = save_model(small_model("A"), tmp_path / "m.safetensors")
    model = vgg.create_model("A", num_classes=5, crop_size=32, width=0.125)
    from safetensors.torch import load_file

    from vgg.weights import load_state
    with pytest.raises(ValueError, match=r"classifier\.6\.weight: expected \(5, 512\), got \(3, 512\)"):
        load_state(model, load_file(str(path)), source=str(path))


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"w": Evil()}))
    with pytest.raises(ValueError, match="refusing to load"):
        torch_load_safe(path)
    assert "pwned" not in capsys.readouterr().out
    ok = tmp_path / "ok.pth"
    torch.save({"w": torch.ones(2)}, ok)
    assert torch.equal(torch_load_safe(ok)["w"], torch.ones(2))

