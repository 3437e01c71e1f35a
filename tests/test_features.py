"""Appendix B: very deep features (dense fc7, flip-averaged, averaged or stacked over scales, L2) and
the linear SVM on them."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import vgg
from vgg.cli import main
from vgg.data import TensorDataset, open_dataset, rescale_shorter
from vgg.evaluation import caffe_pooling
from vgg.features import Features, extract_features, feature_scales, image_descriptors, linear_probe
from vgg.models import TORCHVISION_NORMALIZATION, Normalization
from vgg.weights import save_model


def tiny(in_channels=1, **kw):
    torch.manual_seed(0)
    model = vgg.create_model("A_bn", num_classes=4, crop_size=32, width=0.125, init="glorot",
                             in_channels=in_channels, **kw)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.normalization = Normalization((120.0,) * in_channels, (60.0,) * in_channels)
    return model.eval()


def reference_descriptor(model, images):
    """fc7 by hand from the weights: fc6 as a k x k conv over the map, fc7 as a 1x1 conv, ReLUs,
    global average pool; the same for the mirrored image; their mean."""
    def one(x):
        feats = model.features(model.normalization(x))
        fc6, fc7 = model.classifier[0], model.classifier[3]
        k = fc6.kernel_size
        h = F.relu(F.conv2d(feats, fc6.weight.view(fc6.out_features, -1, k, k), fc6.bias))
        h = F.relu(F.conv2d(h, fc7.weight[:, :, None, None], fc7.bias))
        return h.mean(dim=(2, 3))

    with torch.no_grad():
        return (one(images) + one(images.flip(3))) / 2


def grey_dataset(n=10, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
    return TensorDataset(images, torch.arange(n) % 3, ["x", "y", "z"], "toy", "train")


def test_paper_scales_follow_the_crop_size():
    assert feature_scales(224) == [256, 384, 512]
    assert feature_scales(32) == [37, 55, 73]
    with pytest.raises(ValueError, match=r"feature scales \[20\] must be .* >= the crop size 32"):
        feature_scales(32, [20])


def test_descriptor_is_dense_fc7_averaged_over_map_and_flip():
    model = tiny()
    x = torch.randint(0, 256, (3, 1, 70, 90), dtype=torch.uint8)  # a 2x2 fc7 map
    ours = image_descriptors(model, x)
    assert ours.shape == (3, 512)
    torch.testing.assert_close(ours, reference_descriptor(model, x), rtol=1e-5, atol=1e-6)
    # Asymmetric image: the flip matters, so the test sees it.
    direct = model.forward_head(model.forward_features(model.normalization(x)), pre_logits=True)
    assert (ours - direct).abs().max() > 1e-3 * ours.abs().max()


@pytest.mark.parametrize("stack", [False, True])
def test_features_average_or_stack_scales_then_l2_normalise(stack):
    model, data = tiny(), grey_dataset()
    scales = [32, 48]
    result = extract_features(model, data, scales=scales, stack=stack, batch_size=4, progress=False)
    with caffe_pooling(model):  # extract_features pools as Caffe: Q = 48 is not a multiple of 32
        per_scale = [reference_descriptor(model, rescale_shorter(data.images, q)) for q in scales]
    expected = torch.cat(per_scale, 1) if stack else (per_scale[0] + per_scale[1]) / 2
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert result.features.shape == (10, 1024 if stack else 512)
    torch.testing.assert_close(result.features, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(result.features.norm(dim=1), torch.ones(10))
    assert torch.equal(result.labels, data.labels) and result.classes == ["x", "y", "z"]
    assert result.info["scales"] == scales and result.info["stack"] is stack


def test_folder_images_of_different_sizes_keep_their_rows(tmp_path):
    """eval_batches groups images by size; every descriptor must land in its own image's row."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, cls in enumerate(["cat", "dog"]):
            (tmp_path / split / cls).mkdir(parents=True)
            for i in range(3):
                size = (40, 32) if (i + c) % 2 else (32, 50)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / split / cls / f"{i}.png")
    data = open_dataset(str(tmp_path), "train")
    model = tiny(in_channels=3)
    model.normalization = TORCHVISION_NORMALIZATION
    result = extract_features(model, data, scales=[32], batch_size=8, progress=False)
    for row, path in enumerate(data.paths):
        image = torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1)[None]
        with caffe_pooling(model):  # 40 and 50 are not multiples of 32
            expected = reference_descriptor(model, rescale_shorter(image, 32))
        torch.testing.assert_close(result.features[row], F.normalize(expected, dim=1)[0], rtol=1e-4,
                                   atol=1e-5)
    assert result.labels.tolist() == data.labels.tolist()


def test_colour_net_takes_grey_images():
    model = tiny(in_channels=3)
    model.normalization = TORCHVISION_NORMALIZATION
    x = torch.randint(0, 256, (2, 1, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(image_descriptors(model, x),
                               reference_descriptor(model, x.expand(-1, 3, -1, -1)))


def test_features_file_round_trip_and_errors(tmp_path):
    result = extract_features(tiny(), grey_dataset(), scales=[32], progress=False)
    loaded = Features.load(result.save(tmp_path / "f.safetensors"))
    assert torch.equal(loaded.features, result.features) and torch.equal(loaded.labels, result.labels)
    assert loaded.classes == result.classes and loaded.info == result.info
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 8)
    with pytest.raises(ValueError, match="bad.safetensors is not a readable safetensors file"):
        Features.load(tmp_path / "bad.safetensors")
    save_model(tiny(), tmp_path / "model.safetensors")
    with pytest.raises(ValueError, match="not a features file"):
        Features.load(tmp_path / "model.safetensors")


def features_of(points, labels, classes=("a", "b", "c")):
    return Features(torch.as_tensor(points, dtype=torch.float32), torch.as_tensor(labels),
                    list(classes))


def test_linear_probe_separates_separable_features_and_checks_inputs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3

    def sample(n):
        y = rng.integers(0, 3, n)
        return features_of(centres[y] + rng.normal(size=(n, 16)) * 0.3, y)

    train, test = sample(120), sample(60)
    result = linear_probe(train, test)
    assert result["test_accuracy"] == 1.0 and result["train_images"] == 120 and result["converged"]
    held = linear_probe(train)
    assert held["test_images"] == 24 and held["evaluated_on"] == "held-out 0.2"
    # Labels unrelated to the features: a linear SVM cannot predict held-out data (chance is 1/3).
    noise = features_of(rng.normal(size=(300, 16)), rng.integers(0, 3, 300))
    assert linear_probe(noise, features_of(rng.normal(size=(300, 16)), rng.integers(0, 3, 300)))[
        "test_accuracy"] < 0.5
    with pytest.raises(ValueError, match="classes .* differ"):
        linear_probe(train, features_of(test.features, test.labels, ("a", "b", "d")))
    with pytest.raises(ValueError, match="test features are 8-D, training features 16-D"):
        linear_probe(train, features_of(test.features[:, :8], test.labels))


def test_cli_features_and_linear_probe_on_fashion_mnist(tmp_path, capsys):
    ckpt = save_model(tiny(), tmp_path / "net.safetensors")
    out = tmp_path / "train.safetensors"
    assert main(["features", str(ckpt), "--data", "fashion-mnist", "--split", "test", "--limit", "60",
                 "--scales", "32", "37", "--out", str(out), "--no-progress", "--device", "cpu"]) == 0
    assert "60 images x 512 features" in capsys.readouterr().out
    assert Features.load(out).classes[0] == "T-shirt/top"
    assert main(["linear-probe", str(out), "--test", str(out)]) == 0
    assert "train accuracy" in capsys.readouterr().out
    assert main(["linear-probe", str(tmp_path / "missing.safetensors")]) == 2
    assert "features file" in capsys.readouterr().err
    assert main(["features", str(tmp_path / "nothing.pth"), "--data", "fashion-mnist", "--out",
                 str(tmp_path / "x.safetensors")]) == 2
    assert "nothing.pth is neither a file" in capsys.readouterr().err


def test_features_pool_as_caffe_unless_floor_pooling():
    model = tiny()
    data = grey_dataset(n=4, size=37)  # Q = 37 at crop 32: not a multiple of 32
    floor = extract_features(model, data, scales=[37], progress=False, ceil_mode=False)
    ceil = extract_features(model, data, scales=[37], progress=False)
    with caffe_pooling(model):
        reference = F.normalize(reference_descriptor(model, data.images), dim=1)
    assert ceil.info["pooling"] == "ceil" and floor.info["pooling"] == "floor"
    torch.testing.assert_close(ceil.features, reference, rtol=1e-5, atol=1e-6)
    assert (ceil.features - floor.features).abs().max() > 1e-3
