"""Reference weight files and forward passes, written here independently of vgg.models: torchvision's
and timm's state dicts, Keras' HDF5 layouts, and each format's own forward pass."""

import h5py
import numpy as np
import torch
import torch.nn.functional as F

import vgg
from vgg.models import TORCHVISION_NORMALIZATION


def small_model(arch="D_bn"):
    torch.manual_seed(0)
    model = vgg.create_model(arch, num_classes=3, crop_size=32, width=0.125)
    model.classes = ["cat", "dog", "owl"]
    model.normalization = TORCHVISION_NORMALIZATION
    model.info = {"train_scale": [32, 64]}
    return model.eval()



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

