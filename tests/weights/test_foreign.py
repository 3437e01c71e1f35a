"""torchvision and timm state dicts, each checked against a reference file written here and a
reference forward pass computed here."""

import numpy as np
import pytest
import torch

import vgg
from vgg.models import TORCHVISION_NORMALIZATION
from vgg.weights import (
    infer_architecture,
    keras_architecture,
    keras_layers,
    load_any,
    read_weight_file,
    save_model,
    timm_state,
)

from .references import (
    images,
    keras_weights,
    small_model,
    timm_forward,
    to_timm,
    tv_forward,
    tv_state,
    write_keras,
)


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


def test_imagenet_class_names_come_only_when_named(tmp_path):
    """A 1000-way head is not taken to be ImageNet's (issue 11): without a record of published
    weights, a file has class names only when the user gives them."""
    torch.save(tv_state("vgg11", classes=1000, k=1), tmp_path / "in1k.pth")
    assert load_any(tmp_path / "in1k.pth").classes is None
    model = load_any(tmp_path / "in1k.pth", classes="imagenet-1k")
    assert len(model.classes) == 1000
    assert (model.classes[0], model.classes[281], model.classes[999]) == ("tench", "tabby",
                                                                          "toilet tissue")
    out = save_model(model, tmp_path / "ours.safetensors")  # converted once, the names stay
    assert vgg.load_model(out).classes[281] == "tabby"
    with pytest.raises(ValueError, match="3 class names given for .*in1k.pth, which has 1000 outputs"):
        load_any(tmp_path / "in1k.pth", classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="unknown class list 'imagenet'; known: imagenet-1k"):
        load_any(tmp_path / "in1k.pth", classes="imagenet")


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
