"""Published weights as records, the download cache and load_any, against a local HTTP server."""

import dataclasses
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import vgg
from vgg.cli import main
from vgg.models import CAFFE_NORMALIZATION, TORCHVISION_NORMALIZATION, Normalization, parse_arch
from vgg.weights import HASH_IN_NAME, PUBLISHED, imagenet_classes, load_any, published

from .references import images, keras_forward, keras_weights, tv_forward, tv_state, write_keras

# SPEC section 4: what torchvision reports for its weights (single 224 centre crop, accuracy %).
SPEC_ACCURACY = {
    "vgg11": (69.02, 88.63), "vgg13": (69.93, 89.25), "vgg16": (71.59, 90.38), "vgg19": (72.38, 90.88),
    "vgg11_bn": (70.37, 89.81), "vgg13_bn": (71.59, 90.37), "vgg16_bn": (73.36, 91.52),
    "vgg19_bn": (74.22, 91.84),
}


def publish(monkeypatch, root, server, name, state, **changes):
    """Serve ``state`` as ``<name>-<first 8 digits of its SHA-256>.pth`` and point the record of
    ``name`` at it (with ``changes``); returns the file name."""
    torch.save(state, root / "tmp.pth")
    digest = hashlib.sha256((root / "tmp.pth").read_bytes()).hexdigest()
    file = f"{name}-{digest[:8]}.pth"
    (root / "tmp.pth").rename(root / file)
    changes = {"url": server.url + file, "sha256_prefix": digest[:8], **changes}
    monkeypatch.setitem(PUBLISHED, name, dataclasses.replace(PUBLISHED[name], **changes))
    return file


# -- the records ----------------------------------------------------------------------------------------

def test_records_are_torchvisions_published_files():
    assert sorted(PUBLISHED) == sorted(SPEC_ACCURACY)
    for name, w in PUBLISHED.items():
        assert w.name == name and w.arch == name and parse_arch(w.arch)
        # The hash is the file name's: torch.hub's check_hash reads the same digits.
        m = HASH_IN_NAME.search(w.file_name)
        assert m and m.group(1) == w.sha256_prefix and w.file_name == f"{name}-{w.sha256_prefix}.pth"
        assert w.url == "https://download.pytorch.org/models/" + w.file_name
        assert (w.top1, w.top5) == SPEC_ACCURACY[name]
        assert w.source == "torchvision" and "224" in w.protocol and "256" in w.protocol
        assert w.normalization == TORCHVISION_NORMALIZATION and w.classes == "imagenet-1k"
        assert w.size_mib is None or 400 < w.size_mib < 600
    assert PUBLISHED["vgg16"].class_names() == imagenet_classes()
    assert imagenet_classes()[281] == "tabby"
    assert published(" VGG16_bn ") is PUBLISHED["vgg16_bn"]
    with pytest.raises(ValueError, match="'vgg16_c'; published: vgg11, vgg11_bn, .*, vgg19_bn"):
        published("vgg16_c")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PUBLISHED["vgg16"].top1 = 99.0


def test_cli_weights_lists_every_record(capsys):
    assert main(["weights"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[2:] if line.split()[0] in PUBLISHED}
    assert list(rows) == list(PUBLISHED) and len(rows) == 8
    for name, w in PUBLISHED.items():
        assert rows[name][1] == w.arch and rows[name][-1] == w.url
        assert rows[name][3:5] == [f"{v:.2f}" for v in SPEC_ACCURACY[name]]
    assert rows["vgg16_bn"][2] == "D_bn" and rows["vgg16"][5] == "527.8"
    assert "accuracy as torchvision reports it: ILSVRC-2012 val, one 224 x 224 centre crop" in lines[-1]
    assert main(["weights", "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == list(PUBLISHED)
    assert records[4]["top1"] == 71.59 and records[4]["sha256_prefix"] == "397923af"
    assert Normalization.from_dict(records[4]["normalization"]) == TORCHVISION_NORMALIZATION


def test_load_any_of_a_name_goes_through_its_record(served, monkeypatch):
    """URL, hash, architecture, preprocessing and classes all come from the record, not the file."""
    root, home, server = served
    mine = Normalization((1.0, 2.0, 3.0), (4.0, 5.0, 6.0))
    state = tv_state("vgg16", classes=1000)
    file = publish(monkeypatch, root, server, "vgg16", state, normalization=mine)
    model = load_any("vgg16", progress=False)
    assert server.requests == [f"/{file}"]
    assert model.arch == "vgg16" and model.normalization == mine and model.classes == imagenet_classes()
    assert model.info == {"source": "torchvision", "weights": "vgg16"} and not model.training
    # The record's URL itself is the record too (from the cache now).
    assert load_any(PUBLISHED["vgg16"].url, progress=False).normalization == mine
    assert server.requests == [f"/{file}"]
    # The user's class names win over the record's.
    names = [f"c{i}" for i in range(1000)]
    assert load_any("vgg16", classes=names, progress=False).classes == names
    with pytest.raises(ValueError, match="vgg16 names torchvision's weights, not keras weights"):
        load_any("vgg16", source="keras", progress=False)
    # The record's architecture is the one the file must fit.
    monkeypatch.setitem(PUBLISHED, "vgg16", dataclasses.replace(PUBLISHED["vgg16"], arch="vgg13"))
    with pytest.raises(ValueError, match="does not fit vgg13"):
        load_any("vgg16", progress=False)
    # The record's hash is checked, also against the cached file; nothing else is kept.
    monkeypatch.setitem(PUBLISHED, "vgg16", dataclasses.replace(PUBLISHED["vgg16"], arch="vgg16",
                                                                 sha256_prefix="0000000000"))
    with pytest.warns(UserWarning, match="does not match the hash"), \
            pytest.raises(ValueError, match="does not match 0000000000"):
        load_any("vgg16", progress=False)
    assert [p.name for p in home.rglob("*") if p.is_file()] == [file]


def test_a_local_copy_of_published_weights_is_known_by_its_name_and_hash(served, monkeypatch):
    root, home, server = served
    file = publish(monkeypatch, root, server, "vgg13", tv_state("vgg13", classes=1000))
    model = load_any(root / file)  # offline: the file the record names, with the record's hash
    assert model.classes == imagenet_classes() and model.info["weights"] == str(root / file)
    assert server.requests == []
    torch.save(tv_state("vgg13", classes=1000, seed=1), root / file)  # same name, other bytes
    with pytest.warns(UserWarning, match="has the name of torchvision's vgg13 weights but not their SHA-256"):
        assert load_any(root / file).classes is None


# -- known names, URLs and the cache --------------------------------------------------------------------

def test_known_name_downloads_checks_hash_and_caches(served, monkeypatch):
    root, home, server = served
    state = tv_state("vgg11", classes=1000)  # the record names 1000 classes
    name = publish(monkeypatch, root, server, "vgg11", state)
    model = load_any("vgg11", progress=False)
    assert model.arch == "vgg11" and model.info["weights"] == "vgg11"
    x = TORCHVISION_NORMALIZATION(images())
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv_forward(state, "vgg11", False, x), rtol=1e-4, atol=1e-4)
    cached = list(home.rglob("*.pth"))
    assert [p.name for p in cached] == [name]
    load_any("vgg11", progress=False)  # from the cache: no second request
    assert server.requests == [f"/{name}"]
    with pytest.raises(ValueError, match="do not fit --arch vgg16"):
        load_any("vgg11", arch="vgg16", progress=False)


def test_hash_mismatch_is_refused_and_nothing_is_cached(served):
    root, home, server = served
    torch.save(tv_state("vgg11"), root / "vgg11-00000000.pth")
    with pytest.raises(ValueError, match="does not match 00000000"):
        load_any(server.url + "vgg11-00000000.pth", progress=False)
    assert not [p for p in home.rglob("*") if p.is_file()]


def test_truncated_download_and_http_errors_are_clear(served):
    root, home, server = served
    with pytest.raises(ValueError, match="cut short after 100 of 1000 bytes"):
        load_any(server.url + "weights.lie", progress=False)
    with pytest.raises(ValueError, match="HTTP 404"):
        load_any(server.url + "missing.pth", progress=False)
    assert not [p for p in home.rglob("*") if p.is_file()]


def test_url_without_hash_downloads_any_format(served):
    root, home, server = served
    layers = keras_weights("vgg11")
    write_keras(root / "vgg11_keras.h5", layers, "nested")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = load_any(server.url + "vgg11_keras.h5", progress=False)
    assert model.info["source"] == "keras" and model.arch == "vgg11"


def test_unknown_spec_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a run folder, nor a known name"):
        load_any(tmp_path / "nothing.pth")


def test_cli_convert_writes_our_checkpoint(tmp_path, capsys):
    layers = keras_weights("vgg16", classes=1000, k=1)
    write_keras(tmp_path / "k.h5", layers, "flat")
    out = tmp_path / "k.safetensors"
    assert main(["convert", str(tmp_path / "k.h5"), str(out), "--from", "auto"]) == 0
    printed = capsys.readouterr().out
    # A 1000-way head without a record gets no class names (issue 11).
    assert "vgg16 from keras weights" in printed and "BGR" in printed and "ImageNet names" not in printed
    model = vgg.load_model(out)
    assert model.normalization == CAFFE_NORMALIZATION and model.classes is None
    rgb = images(size=32)
    with torch.no_grad():
        ours = model(model.normalization(rgb)).double().numpy()
    reference = keras_forward(layers, rgb)[1]
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)
    assert main(["convert", str(tmp_path / "k.h5"), str(tmp_path / "x.safetensors"), "--from", "timm"]) == 2
    assert "is in keras format, not timm" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_hub_pretrained_goes_through_the_checked_download(served, monkeypatch):
    root, home, server = served
    publish(monkeypatch, root, server, "vgg13", tv_state("vgg13", classes=1000))
    repo = str(Path(__file__).resolve().parents[2])
    model = torch.hub.load(repo, "vgg13", source="local", pretrained=True, progress=False)
    assert model.arch == "vgg13" and model.info["source"] == "torchvision" and not model.training
    assert model.classes[281] == "tabby"
