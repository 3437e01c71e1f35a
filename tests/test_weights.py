"""Weight files: our checkpoint format (safetensors + metadata, atomic, safe), and every foreign
format (torchvision, timm, Keras HDF5), each checked against a reference file written here and a
reference forward pass computed here; known names and URLs against a local HTTP server."""

import functools
import hashlib
import http.server
import os
import pickle
import threading
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import vgg
from vgg import weights
from vgg.models import CAFFE_NORMALIZATION, TORCHVISION_NORMALIZATION
from vgg.weights import (
    infer_architecture,
    keras_architecture,
    keras_layers,
    load_any,
    read_metadata,
    read_weight_file,
    save_model,
    timm_state,
    torch_load_safe,
)


def small_model(arch="D_bn"):
    torch.manual_seed(0)
    model = vgg.create_model(arch, num_classes=3, crop_size=32, width=0.125)
    model.classes = ["cat", "dog", "owl"]
    model.normalization = TORCHVISION_NORMALIZATION
    model.info = {"train_scale": [32, 64]}
    return model.eval()


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


# -- foreign formats: reference files written here, reference forward passes computed here ------------


# torchvision's published cfgs (torchvision/models/vgg.py), independent of vgg.models.CONFIGS.
TV_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def tv_state(name, bn=False, div=8, classes=10, k=2, seed=0, published=True):
    """A state dict with torchvision's key names (make_layers' flat indices) and shapes, channels
    divided by ``div``, fc6 reading a k x k map; He-scaled random values so logits are O(1)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    state, i, c = {}, 0, 3
    for v in TV_CFGS[name]:
        if v == "M":
            i += 1
            continue
        out = v // div
        state[f"features.{i}.weight"] = rand(out, c, 3, 3, scale=(2 / (9 * c)) ** 0.5)
        state[f"features.{i}.bias"] = rand(out, scale=0.1)
        i += 1
        if bn:
            state[f"features.{i}.weight"] = 1 + rand(out, scale=0.1)
            state[f"features.{i}.bias"] = rand(out, scale=0.1)
            state[f"features.{i}.running_mean"] = rand(out, scale=0.1)
            state[f"features.{i}.running_var"] = 0.5 + torch.rand(out, generator=g)
            if published:
                state[f"features.{i}.num_batches_tracked"] = torch.tensor(0)
            i += 1
        i += 1  # ReLU
        c = out
    fc = 4096 // div
    state["classifier.0.weight"] = rand(fc, c * k * k, scale=(2 / (c * k * k)) ** 0.5)
    state["classifier.0.bias"] = rand(fc, scale=0.1)
    state["classifier.3.weight"] = rand(fc, fc, scale=(2 / fc) ** 0.5)
    state["classifier.3.bias"] = rand(fc, scale=0.1)
    state["classifier.6.weight"] = rand(classes, fc, scale=(1 / fc) ** 0.5)
    state["classifier.6.bias"] = rand(classes, scale=0.1)
    return state


def tv_features(state, name, bn, x):
    """torchvision's feature stack, written out functionally from the state dict."""
    i = 0
    for v in TV_CFGS[name]:
        if v == "M":
            x, i = F.max_pool2d(x, 2, 2), i + 1
            continue
        x = F.conv2d(x, state[f"features.{i}.weight"], state[f"features.{i}.bias"], padding=1)
        i += 1
        if bn:
            x = F.batch_norm(x, state[f"features.{i}.running_mean"], state[f"features.{i}.running_var"],
                             state[f"features.{i}.weight"], state[f"features.{i}.bias"], eps=1e-5)
            i += 1
        x, i = F.relu(x), i + 1
    return x


def tv_forward(state, name, bn, x):
    """torchvision's VGG at its crop size: features, flatten (C, H, W), three Linear layers."""
    x = tv_features(state, name, bn, x).flatten(1)
    x = F.relu(F.linear(x, state["classifier.0.weight"], state["classifier.0.bias"]))
    x = F.relu(F.linear(x, state["classifier.3.weight"], state["classifier.3.bias"]))
    return F.linear(x, state["classifier.6.weight"], state["classifier.6.bias"])


def to_timm(state, k):
    """timm's _filter_fn: classifier.0/3/6 -> pre_logits.fc1 (k x k conv), pre_logits.fc2, head.fc."""
    out = {key: v for key, v in state.items() if key.startswith("features.")}
    fc1 = state["classifier.0.weight"]
    out["pre_logits.fc1.weight"] = fc1.reshape(fc1.shape[0], -1, k, k).clone()
    out["pre_logits.fc1.bias"] = state["classifier.0.bias"]
    out["pre_logits.fc2.weight"] = state["classifier.3.weight"][:, :, None, None].clone()
    out["pre_logits.fc2.bias"] = state["classifier.3.bias"]
    out["head.fc.weight"] = state["classifier.6.weight"]
    out["head.fc.bias"] = state["classifier.6.bias"]
    return out


def timm_forward(state, name, x):
    """timm's VGG: features, ConvMlp (fc1 conv, fc2 1x1 conv), global average pool, Linear head."""
    x = tv_features(state, name, False, x)
    x = F.relu(F.conv2d(x, state["pre_logits.fc1.weight"], state["pre_logits.fc1.bias"]))
    x = F.relu(F.conv2d(x, state["pre_logits.fc2.weight"], state["pre_logits.fc2.bias"]))
    return F.linear(x.mean(dim=(2, 3)), state["head.fc.weight"], state["head.fc.bias"])


def images(n=2, size=64, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed),
                         dtype=torch.uint8)


@pytest.mark.parametrize("name,bn", [("vgg11", False), ("vgg16", True)])
def test_torchvision_state_dict_converts_exactly(tmp_path, name, bn):
    state = tv_state(name, bn, classes=10, k=2)
    path = tmp_path / f"{name}.pth"
    torch.save(state, path)
    assert read_weight_file(path)[0] == "torchvision"
    model = load_any(path)
    assert model.arch == name + ("_bn" if bn else "") and model.crop_size == 64
    assert model.num_classes == 10 and model.classes is None and not model.training
    assert model.normalization == TORCHVISION_NORMALIZATION
    assert model.info["source"] == "torchvision"
    x = model.normalization(images())
    with torch.no_grad():
        torch.testing.assert_close(model(x), tv_forward(state, name, bn, x), rtol=1e-4, atol=1e-4)
    assert all(p.requires_grad for p in model.parameters())  # fine-tuning trains these tensors


def test_old_batchnorm_files_without_num_batches_tracked_load(tmp_path):
    """torchvision's vgg*_bn files predate num_batches_tracked and the zip format of torch.save."""
    state = tv_state("vgg11", bn=True, published=False)
    assert not any(k.endswith("num_batches_tracked") for k in state)
    torch.save(state, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    x = TORCHVISION_NORMALIZATION(images())
    with torch.no_grad():
        torch.testing.assert_close(load_any(tmp_path / "old.pth")(x), tv_forward(state, "vgg11", True, x),
                                   rtol=1e-4, atol=1e-4)


def test_imagenet_weights_get_imagenet_class_names(tmp_path):
    torch.save(tv_state("vgg11", classes=1000, k=1), tmp_path / "in1k.pth")
    model = load_any(tmp_path / "in1k.pth")
    assert len(model.classes) == 1000
    assert (model.classes[0], model.classes[281], model.classes[999]) == ("tench", "tabby",
                                                                          "toilet tissue")
    out = save_model(model, tmp_path / "ours.safetensors")  # converted once, the names stay
    assert vgg.load_model(out).classes[281] == "tabby"


@pytest.mark.parametrize("arch", [a for a in vgg.arch_names() if a.startswith("vgg")])
def test_every_architecture_is_recognised_from_its_keys(arch):
    # A-LRN shifts every index after the LRN; C differs from D only by its 1x1 kernels.
    model = vgg.create_model(arch, num_classes=5, crop_size=64, width=0.125)
    assert infer_architecture(model.state_dict(), "test")["arch"] == arch


def test_published_full_size_layouts_are_recognised():
    """SPEC section 1: VGG16 convs at these indices; shapes only (meta tensors, no memory)."""
    def meta_state(convs, bn):
        state, c = {}, 3
        for i, out in convs:
            state[f"features.{i}.weight"] = torch.empty(out, c, 3, 3, device="meta")
            state[f"features.{i}.bias"] = torch.empty(out, device="meta")
            if bn:
                for suffix in ("weight", "bias", "running_mean", "running_var"):
                    state[f"features.{i + 1}.{suffix}"] = torch.empty(out, device="meta")
                state[f"features.{i + 1}.num_batches_tracked"] = torch.empty((), dtype=torch.long,
                                                                             device="meta")
            c = out
        for j, shape in ((0, (4096, 25088)), (3, (4096, 4096)), (6, (1000, 4096))):
            state[f"classifier.{j}.weight"] = torch.empty(shape, device="meta")
            state[f"classifier.{j}.bias"] = torch.empty(shape[0], device="meta")
        return state

    widths = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    plain = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
    with_bn = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]
    expected = {"num_classes": 1000, "crop_size": 224, "width": 1.0, "in_channels": 3}
    assert infer_architecture(meta_state(zip(plain, widths), False), "t") == {"arch": "vgg16", **expected}
    assert infer_architecture(meta_state(zip(with_bn, widths), True), "t") == {"arch": "vgg16_bn",
                                                                               **expected}
    # timm's published shapes: pre_logits.fc1 a (4096, 512, 7, 7) conv, fc2 (4096, 4096, 1, 1).
    timm = {k: v for k, v in meta_state(zip(plain, widths), False).items() if k.startswith("features")}
    timm.update({"pre_logits.fc1.weight": torch.empty(4096, 512, 7, 7, device="meta"),
                 "pre_logits.fc1.bias": torch.empty(4096, device="meta"),
                 "pre_logits.fc2.weight": torch.empty(4096, 4096, 1, 1, device="meta"),
                 "pre_logits.fc2.bias": torch.empty(4096, device="meta"),
                 "head.fc.weight": torch.empty(1000, 4096, device="meta"),
                 "head.fc.bias": torch.empty(1000, device="meta")})
    assert infer_architecture(timm_state(timm, "t"), "t") == {"arch": "vgg16", **expected}
    # Keras' published VGG16 shapes (zero-stride arrays: no memory).
    layers, c = {}, 3
    for (b, i), out in zip([(1, 1), (1, 2), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 2),
                            (4, 3), (5, 1), (5, 2), (5, 3)], widths):
        layers[f"block{b}_conv{i}"] = [np.broadcast_to(np.float32(0), (3, 3, c, out)),
                                       np.broadcast_to(np.float32(0), (out,))]
        c = out
    for name, shape in (("fc1", (25088, 4096)), ("fc2", (4096, 4096)), ("predictions", (4096, 1000))):
        layers[name] = [np.broadcast_to(np.float32(0), shape), np.broadcast_to(np.float32(0), shape[1:])]
    assert keras_architecture(*keras_layers(layers, "t"), "t") == {"arch": "vgg16", **expected}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_checkpoint_converts_exactly_also_densely(tmp_path, suffix):
    k = 2
    state = to_timm(tv_state("vgg13", classes=6, k=k), k)
    path = tmp_path / f"timm{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        from safetensors.torch import save_file
        save_file({n: t.contiguous() for n, t in state.items()}, str(path))
    assert read_weight_file(path)[0] == "timm"
    model = load_any(path)
    assert model.arch == "vgg13" and model.crop_size == 64
    assert model.normalization == TORCHVISION_NORMALIZATION
    # At the crop size and densely on a larger image: timm pools fc7 then applies head.fc, we average
    # the score map; equal because the last layer is linear.
    for size in (64, 128):
        x = model.normalization(images(size=size))
        with torch.no_grad():
            torch.testing.assert_close(model(x), timm_forward(state, "vgg13", x), rtol=1e-4, atol=1e-4)


def test_format_can_be_forced_and_must_then_match(tmp_path):
    torch.save(tv_state("vgg11"), tmp_path / "tv.pth")
    assert load_any(tmp_path / "tv.pth", source="torchvision").arch == "vgg11"
    with pytest.raises(ValueError, match="is in torchvision format, not timm"):
        load_any(tmp_path / "tv.pth", source="timm")


def test_shapes_that_do_not_fit_the_architecture_are_a_clear_error(tmp_path):
    torch.save(tv_state("vgg11"), tmp_path / "tv.pth")
    with pytest.raises(ValueError, match=r"does not fit vgg19.*missing features\.\d+\.weight"):
        load_any(tmp_path / "tv.pth", arch="vgg19")
    bad = tv_state("vgg11")
    bad["classifier.0.weight"] = bad["classifier.0.weight"][:, :-3]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"classifier\.0\.weight reads 253 inputs, not a k x k map"):
        load_any(tmp_path / "bad.pth")
    torch.save({"conv.weight": torch.ones(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match=r"neither torchvision's .* nor timm's"):
        load_any(tmp_path / "other.pth")


def test_truncated_local_files_are_a_clear_error(tmp_path):
    from safetensors.torch import save_file
    torch.save(tv_state("vgg11"), tmp_path / "tv.pth")
    save_model(small_model("A"), tmp_path / "ours.safetensors")
    save_file(tv_state("vgg11"), str(tmp_path / "tv.safetensors"))
    write_keras(tmp_path / "k.h5", keras_weights("vgg11"), "flat")
    for name in ("tv.pth", "ours.safetensors", "tv.safetensors", "k.h5"):
        data = (tmp_path / name).read_bytes()
        cut = tmp_path / f"cut_{name}"
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=f"cut_{name}"):
            load_any(cut)


class OpensAFile:
    """Unpickling this would create a file: the proof that loading ran code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_malicious_checkpoint_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    state = tv_state("vgg11")
    state["payload"] = OpensAFile(marker)
    torch.save(state, tmp_path / "evil.pth")
    assert not marker.exists()
    with pytest.raises(ValueError, match="refusing to load .*evil.pth"):
        load_any(tmp_path / "evil.pth")
    assert not marker.exists()


# -- Keras (HDF5) -------------------------------------------------------------------------------------

CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68])


def keras_weights(name, div=8, classes=7, k=2, top=True, seed=0):
    """Keras applications' VGG layers (in file order, with weightless ones) with random weights:
    conv kernels (3, 3, in, out), dense kernels (in, out), fc1 reading a (k, k, C) map."""
    rng = np.random.default_rng(seed)
    layers, c, block, index = [("input_1", [])], 3, 1, 1
    for v in TV_CFGS[name]:
        if v == "M":
            layers.append((f"block{block}_pool", []))
            block, index = block + 1, 1
            continue
        out = v // div
        layers.append((f"block{block}_conv{index}",
                       [rng.normal(0, (2 / (9 * c)) ** 0.5, (3, 3, c, out)).astype(np.float32),
                        rng.normal(0, 0.1, out).astype(np.float32)]))
        c, index = out, index + 1
    if top:
        fc = 4096 // div
        layers.append(("flatten", []))
        for lname, n_in, n_out in (("fc1", c * k * k, fc), ("fc2", fc, fc), ("predictions", fc, classes)):
            layers.append((lname, [rng.normal(0, (2 / n_in) ** 0.5, (n_in, n_out)).astype(np.float32),
                                   rng.normal(0, 0.1, n_out).astype(np.float32)]))
    return layers


def write_keras(path, layers, layout):
    """Write Keras' HDF5 layouts with h5py: 'flat' as the published vgg16_weights_tf_dim_ordering
    files (Keras 1 names, block1_conv1/block1_conv1_W_1:0), 'nested' as Keras 2 save_weights
    (block1_conv1/block1_conv1/kernel:0), 'model' a whole-model file (under model_weights/),
    'keras3' Keras 3 .weights.h5 (layers/block1_conv1/vars/0)."""
    with h5py.File(path, "w") as f:
        if layout == "keras3":
            for name, arrays in layers:
                g = f.create_group(f"layers/{name}/vars")
                for i, a in enumerate(arrays):
                    g.create_dataset(str(i), data=a)
            return
        root = f.create_group("model_weights") if layout == "model" else f
        root.attrs["layer_names"] = [n.encode() for n, _ in layers]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        for name, arrays in layers:
            g = root.create_group(name)
            if layout == "flat":
                names = [f"{name}_W_1:0", f"{name}_b_1:0"][: len(arrays)]
            else:
                names = [f"{name}/kernel:0", f"{name}/bias:0"][: len(arrays)]
            g.attrs["weight_names"] = [n.encode() for n in names]
            for n, a in zip(names, arrays):
                g.create_dataset(n, data=a)


def np_conv(x, kernel, bias):
    """3x3 'same' convolution in NHWC (Keras' layout), in float64."""
    n, h, w, _ = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = sum(np.einsum("nhwc,co->nhwo", xp[:, dy:dy + h, dx:dx + w], kernel[dy, dx].astype(np.float64))
              for dy in range(3) for dx in range(3))
    return out + bias


def keras_forward(layers, rgb_uint8_nchw, flatten="hwc"):
    """Keras' VGG in numpy: preprocess_input('caffe') = RGB->BGR minus the mean, NHWC convs, Flatten
    in (h, w, c) order. Returns (conv features NHWC, logits or None)."""
    x = rgb_uint8_nchw.numpy().transpose(0, 2, 3, 1).astype(np.float64)[..., ::-1] - CAFFE_MEAN_BGR
    weights = dict(layers)
    for name, arrays in layers:
        if "_conv" in name:
            x = np.maximum(np_conv(x, *arrays), 0)
        elif name.endswith("_pool"):
            n, h, w, c = x.shape
            x = x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))
    features = x
    if "fc1" not in weights:
        return features, None
    x = x.reshape(len(x), -1) if flatten == "hwc" else x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    x = np.maximum(x @ weights["fc1"][0] + weights["fc1"][1], 0)
    x = np.maximum(x @ weights["fc2"][0] + weights["fc2"][1], 0)
    return features, x @ weights["predictions"][0] + weights["predictions"][1]


@pytest.mark.parametrize("layout", ["flat", "nested", "model", "keras3"])
def test_keras_file_converts_exactly(tmp_path, layout):
    layers = keras_weights("vgg16", classes=7, k=2)
    write_keras(tmp_path / "k.h5", layers, layout)
    assert read_weight_file(tmp_path / "k.h5")[0] == "keras"
    model = load_any(tmp_path / "k.h5")
    assert (model.arch, model.crop_size, model.num_classes) == ("vgg16", 64, 7)
    assert model.normalization == CAFFE_NORMALIZATION and model.info["source"] == "keras"
    rgb = images(size=64)
    _, reference = keras_forward(layers, rgb, "hwc")
    with torch.no_grad():
        ours = model(model.normalization(rgb)).double().numpy()
    scale = np.abs(reference).max()
    np.testing.assert_allclose(ours, reference, atol=1e-4 * scale, rtol=0)
    # Negative control: reading Keras' fc1 as if it flattened (c, h, w) gives other logits, so the
    # comparison above can tell the two orders apart.
    _, wrong = keras_forward(layers, rgb, "chw")
    assert np.abs(ours - wrong).max() > 0.05 * scale


def test_keras_vgg19_and_imagenet_names(tmp_path):
    layers = keras_weights("vgg19", div=16, classes=1000, k=1)
    write_keras(tmp_path / "k19.h5", layers, "flat")
    model = load_any(tmp_path / "k19.h5")
    assert model.arch == "vgg19" and model.classes[281] == "tabby"
    rgb = images(size=32)
    _, reference = keras_forward(layers, rgb)
    with torch.no_grad():
        ours = model(model.normalization(rgb)).double().numpy()
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)


def test_keras_file_without_top(tmp_path):
    layers = keras_weights("vgg16", top=False)
    write_keras(tmp_path / "notop.h5", layers, "flat")
    with pytest.warns(UserWarning, match="has no top"):
        model = load_any(tmp_path / "notop.h5")
    assert model.arch == "vgg16" and model.classes is None and model.crop_size == 224
    rgb = images(size=64)
    reference, _ = keras_forward(layers, rgb)
    with torch.no_grad():
        ours = model.features(model.normalization(rgb)).double().numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, reference, atol=1e-4 * np.abs(reference).max(), rtol=0)


def test_keras_theano_kernels_and_foreign_hdf5_are_clear_errors(tmp_path):
    layers = keras_weights("vgg11")
    th = [(n, [a[0].transpose(3, 2, 0, 1), a[1]] if "_conv" in n else a) for n, a in layers]
    write_keras(tmp_path / "th.h5", th, "flat")
    with pytest.raises(ValueError, match=r"block1_conv1 kernel has shape .*\(k, k, in, out\)"):
        load_any(tmp_path / "th.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="not Keras weights"):
        load_any(tmp_path / "other.h5")
    with pytest.raises(ValueError, match="Keras' VGG has no batch norm"):
        write_keras(tmp_path / "k.h5", layers, "flat")
        load_any(tmp_path / "k.h5", arch="vgg11_bn")


# -- known names, URLs and the cache, against a local HTTP server -------------------------------------

class Server:
    """An http.server on 127.0.0.1 serving a folder; ``lie`` files announce more bytes than they send."""

    def __init__(self, root):
        self.requests = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                if self.path.endswith(".lie"):
                    body = b"x" * 100
                    self.send_response(200)
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                super().do_GET()

            def log_message(self, *args):
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path, monkeypatch):
    root, home = tmp_path / "www", tmp_path / "home"
    root.mkdir()
    monkeypatch.setenv("VGG_HOME", str(home))
    with Server(root) as server:
        yield root, home, server


def test_known_name_downloads_checks_hash_and_caches(served, monkeypatch):
    root, home, server = served
    state = tv_state("vgg11", classes=4)
    torch.save(state, root / "tmp.pth")
    digest = hashlib.sha256((root / "tmp.pth").read_bytes()).hexdigest()
    name = f"vgg11-{digest[:8]}.pth"
    (root / "tmp.pth").rename(root / name)
    monkeypatch.setattr(weights, "TORCHVISION_URL", server.url)
    monkeypatch.setitem(weights.TORCHVISION_WEIGHTS, "vgg11", name)
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
    with pytest.raises(ValueError, match="does not start with 00000000"):
        load_any(server.url + "vgg11-00000000.pth", progress=False)
    assert not [p for p in home.rglob("*") if p.is_file()]


def test_truncated_download_and_http_errors_are_clear(served):
    root, home, server = served
    with pytest.raises(ValueError, match="truncated after 100 of 1000 bytes"):
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
    with pytest.raises(FileNotFoundError, match="neither a file or run folder, nor a known name"):
        load_any(tmp_path / "nothing.pth")


def test_cli_convert_writes_our_checkpoint(tmp_path, capsys):
    from vgg.cli import main
    layers = keras_weights("vgg16", classes=1000, k=1)
    write_keras(tmp_path / "k.h5", layers, "flat")
    out = tmp_path / "k.safetensors"
    assert main(["convert", str(tmp_path / "k.h5"), str(out), "--from", "auto"]) == 0
    printed = capsys.readouterr().out
    assert "vgg16 from keras weights" in printed and "BGR" in printed and "ImageNet names" in printed
    model = vgg.load_model(out)
    assert model.normalization == CAFFE_NORMALIZATION and model.classes[281] == "tabby"
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
    torch.save(tv_state("vgg13", classes=3), root / "tmp.pth")
    name = f"vgg13-{hashlib.sha256((root / 'tmp.pth').read_bytes()).hexdigest()[:8]}.pth"
    (root / "tmp.pth").rename(root / name)
    monkeypatch.setattr(weights, "TORCHVISION_URL", server.url)
    monkeypatch.setitem(weights.TORCHVISION_WEIGHTS, "vgg13", name)
    repo = str(Path(__file__).resolve().parents[1])
    model = torch.hub.load(repo, "vgg13", source="local", pretrained=True, progress=False)
    assert model.arch == "vgg13" and model.info["source"] == "torchvision" and not model.training
