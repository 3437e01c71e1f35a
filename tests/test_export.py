"""Export: ONNX and TorchScript run dense evaluation at any size and agree with torch; safetensors
and torchvision files load back; torch.hub builds every network of Table 1."""

import json
import warnings
from pathlib import Path

import onnxruntime as ort
import pytest
import torch

import vgg
from support import assert_close_relative, order_one
from vgg.export import export_model, torchvision_problems
from vgg.models import CAFFE_NORMALIZATION
from vgg.weights import load_any, torch_load_safe

REPO = Path(__file__).resolve().parents[1]


def trained_like(arch="D_bn", **kw):
    """A tiny model whose weights give O(1) logits (He-scaled), with BN statistics that matter."""
    torch.manual_seed(0)
    model = vgg.create_model(arch, **{"num_classes": 5, "crop_size": 32, "width": 0.125, **kw})
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight)
                m.bias.uniform_(-0.1, 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model.classes = ["a", "b", "c", "d", "e"]
    model.normalization = CAFFE_NORMALIZATION
    return model.eval()


@pytest.mark.parametrize("arch", ["D_bn", "A-LRN"])
def test_onnx_runs_dense_evaluation_at_any_size(tmp_path, arch):
    model = trained_like(arch)
    path = export_model(model, tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["mean"]) == list(CAFFE_NORMALIZATION.mean) and json.loads(meta["bgr"]) is True
    assert json.loads(meta["classes"]) == model.classes and json.loads(meta["vgg"])["model"]["arch"] == \
        model.arch
    # The crop size (the head's matmul case in torch) and a larger, non-square image (a 2x3 map).
    for n, h, w in ((1, 32, 32), (3, 64, 100)):
        x = torch.randn(n, 3, h, w)
        logits, score_map = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref, ref_map = model(x), model.score_map(x)
        assert score_map.shape == tuple(ref_map.shape)
        torch.testing.assert_close(torch.from_numpy(logits), ref, rtol=1e-4, atol=1e-4 * ref.abs().max())
        torch.testing.assert_close(torch.from_numpy(score_map), ref_map, rtol=1e-4,
                                   atol=1e-4 * ref.abs().max())
    assert ref.abs().max() > 0.1  # the comparison is not between near-zero outputs


def test_onnx_of_a_localisation_net_gives_every_windows_box(tmp_path):
    from vgg.localization import decode, dense_windows
    from vgg.training.localization import build_localization_net

    model = build_localization_net(trained_like("A_bn"), "pcr", ["a", "b", "c", "d", "e"]).eval()
    with torch.no_grad():  # order-1 box outputs (the new layer is N(0, 0.01))
        torch.nn.init.kaiming_normal_(model.classifier[6].weight)
    session = ort.InferenceSession(str(export_model(model, tmp_path / "loc.onnx", "onnx")),
                                   providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "box_params"]
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["vgg"])["info"]["localization"]["head"] == "pcr" and "window" in meta["outputs"]
    for n, h, w in ((1, 32, 32), (2, 64, 100)):
        x = torch.randn(n, 3, h, w)
        boxes, params = session.run(None, {"images": x.numpy()})
        with torch.no_grad():
            ref = model.score_map(x)  # (n, 4K, mh, mw)
        mh, mw = ref.shape[-2:]
        # The reference decode: each window's (cx, cy, w, h) relative to it (vgg.localization.boxes).
        want = decode(ref.view(n, 5, 4, mh, mw).permute(0, 1, 3, 4, 2), dense_windows(mh, mw, 32))
        assert boxes.shape == (n, 5, 4, mh, mw)
        assert_close_relative(torch.from_numpy(params), ref)
        assert_close_relative(torch.from_numpy(boxes).permute(0, 1, 3, 4, 2), want)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_runs_at_any_size_and_keeps_metadata(tmp_path):
    model = trained_like("B")
    extra = {"vgg.json": ""}
    loaded = torch.jit.load(str(export_model(model, tmp_path / "m.pt", "torchscript")),
                            _extra_files=extra)
    assert json.loads(json.loads(extra["vgg.json"])["classes"]) == model.classes
    for size in (32, 96):
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x)[0], model(x), rtol=1e-5, atol=1e-5)


def test_safetensors_export_is_our_checkpoint(tmp_path):
    model = trained_like("A")
    loaded = load_any(export_model(model, tmp_path / "m.safetensors", "safetensors"))
    assert loaded.classes == model.classes and loaded.normalization == CAFFE_NORMALIZATION
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_torchvision_export_is_a_plain_state_dict_in_torchvision_layout(tmp_path):
    model = order_one(vgg.create_model("vgg11", num_classes=3))  # full size: torchvision's shapes
    model.normalization = CAFFE_NORMALIZATION  # e.g. converted from Keras: the .pth cannot say so
    with pytest.warns(UserWarning, match="a .pth does not carry it"):
        path = export_model(model, tmp_path / "vgg11.pth", "torchvision")
    state = torch_load_safe(path)
    # torchvision's vgg11 (cfg A): convs at these indices of features, FC layers at classifier.0/3/6.
    convs = [0, 3, 6, 8, 11, 13, 16, 18]
    expected = [f"features.{i}.{p}" for i in convs for p in ("weight", "bias")]
    expected += [f"classifier.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")]
    assert list(state) == expected
    assert state["classifier.0.weight"].shape == (4096, 25088)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v), k
    loaded = load_any(path)  # it reads back as torchvision's format, and computes the same logits
    assert loaded.arch == "vgg11"
    loaded.normalization = model.normalization
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert_close_relative(loaded.eval()(x), model(x), rtol=1e-5)


def test_torchvision_export_refuses_what_torchvision_cannot_hold(tmp_path):
    assert torchvision_problems(vgg.create_model("vgg16_c", num_classes=3, crop_size=32, width=0.125))
    with pytest.raises(ValueError, match=r"vgg11_lrn is not one of torchvision's.*width 0.125.*1x1 map"):
        export_model(trained_like("A-LRN"), tmp_path / "x.pth", "torchvision")
    assert not (tmp_path / "x.pth").exists()
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(trained_like("A"), tmp_path / "x", "tflite")


def test_torch_hub_builds_every_architecture():
    names = [a for a in vgg.arch_names() if a.startswith("vgg")]
    assert len(names) == 12
    for name in names:
        model = torch.hub.load(str(REPO), name, source="local", pretrained=False, num_classes=4,
                               crop_size=32, width=0.125)
        assert model.arch == name and model.num_classes == 4
    with torch.device("meta"):  # the default is the paper's full-size network
        full = torch.hub.load(str(REPO), "vgg16", source="local", pretrained=False)
    assert sum(p.numel() for p in full.parameters()) == 138_357_544
    with pytest.raises(ValueError, match="no pretrained weights are published for vgg16_c"):
        torch.hub.load(str(REPO), "vgg16_c", source="local", pretrained=True)


def test_cli_export_from_a_run_folder(tmp_path, capsys):
    from vgg.cli import main
    from vgg.weights import save_model
    model = trained_like("A")
    save_model(model, tmp_path / "run" / "best.safetensors")
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "m.pt"), "--format", "torchscript"]) == 0
    assert "wrote" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still works
        loaded = torch.jit.load(str(tmp_path / "m.pt"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)[0], model(x), rtol=1e-5, atol=1e-5)
    assert main(["export", str(tmp_path / "run"), str(tmp_path / "m.pth"), "--format", "torchvision"]) == 2
    assert "torchvision's VGG cannot hold this model" in capsys.readouterr().err
