"""attach_cpu_inference and prepare_for_inference: the engine wraps a net from outside, keeps its
parameters and state-dict keys, takes only inference calls, and steps aside where torch lacks its ops."""

import ast
import copy
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import vgg
import vgg.models
from vgg.engine import FusedFeatures, PackedLinear, attach_cpu_inference, guards, prepare_for_inference
from vgg.models import DenseLinear

needs_ops = pytest.mark.skipif(not (FusedFeatures.available() and PackedLinear.available()),
                               reason="needs torch's oneDNN CPU ops")
PACKAGE = Path(vgg.__file__).parent


def engine_imports(path: Path) -> list[str]:
    """The vgg.engine modules a file of vgg.models imports, anywhere in it (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if (node.level and module.split(".")[0] == "engine") or module.startswith("vgg.engine") \
                    or (node.level and not module and any(a.name == "engine" for a in node.names)):
                found.append(module or "engine")
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("vgg.engine")]
    return found


def code_words(path: Path) -> set[str]:
    """The names, attributes and strings of a file's code (docstrings and comments left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.add(node.id)
        elif isinstance(node, ast.Attribute):
            words.add(node.attr)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value)
    return words


def test_the_model_code_knows_nothing_of_the_engine():
    files = sorted((PACKAGE / "models").rglob("*.py"))
    assert files
    for path in files:
        assert engine_imports(path) == [], path
        words = code_words(path)
        for word in ("mkldnn", "fused", "packed", "engine", "__dict__"):
            assert not any(word in w.lower() for w in words), (path, word)
    model = vgg.create_model("vgg11", width=0.125, crop_size=32, num_classes=3)
    assert not hasattr(model, "fused_features")
    assert all(not hasattr(m, "packed") for m in model.modules())


def test_the_private_torch_ops_live_in_the_engine_alone():
    for path in sorted(PACKAGE.rglob("*.py")):
        if "engine" not in path.relative_to(PACKAGE).parts:
            text = path.read_text()
            assert "torch.ops.mkldnn" not in text and "_C._nn.mkldnn" not in text, path


@needs_ops
def test_attach_keeps_parameters_and_state_dict_keys(tiny):
    model = tiny("vgg11_bn")
    params = list(model.parameters())
    buffers = list(model.buffers())
    keys = list(model.state_dict())
    layers = list(model.features)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)  # built before: still steps the net
    attach_cpu_inference(model)
    assert isinstance(model.features, FusedFeatures) and isinstance(model.features, nn.Sequential)
    assert all(type(model.classifier[i]) is PackedLinear for i in (0, 3, 6))
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert [id(b) for b in model.buffers()] == [id(b) for b in buffers]
    assert list(model.features) == layers
    assert list(model.state_dict()) == keys
    with torch.inference_mode():
        model(torch.randn(2, 3, 32, 32))  # packs: the packed weights are no parameters nor buffers
    assert model.features._plan and model.classifier[0]._packed is not None
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert len(list(model.buffers())) == len(buffers) and list(model.state_dict()) == keys
    assert [id(p) for g in optimizer.param_groups for p in g["params"]] == [id(p) for p in params]
    assert isinstance(model.features[:3], FusedFeatures) and list(model.features[:3]) == layers[:3]


@needs_ops
def test_attach_is_idempotent(tiny):
    model = attach_cpu_inference(tiny("vgg11"))
    features, head = model.features, list(model.classifier)
    assert attach_cpu_inference(model) is model
    assert prepare_for_inference(model) is model
    assert model.features is features and list(model.classifier) == head
    assert not any(isinstance(m, FusedFeatures) for m in model.features)  # not nested
    assert sum(isinstance(m, FusedFeatures) for m in model.modules()) == 1


@needs_ops
@pytest.mark.parametrize("arch", ["vgg11_bn", "vgg11_lrn"])
def test_training_steps_after_attach_are_the_plain_modules_bitwise(arch, tiny):
    plain = tiny(arch, crop=64)
    fast = attach_cpu_inference(copy.deepcopy(plain))
    opts = [torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4) for m in (plain, fast)]
    x, y = 50 * torch.randn(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    for step in range(3):
        outs = []
        for model, opt in zip((plain, fast), opts):
            model.train()
            torch.manual_seed(step)  # the same dropout masks
            out = model(x)
            nn.functional.cross_entropy(out, y).backward()
            opt.step()
            opt.zero_grad()
            outs.append(out.detach())
        assert outs[0].abs().max() > 0.1  # order-1 logits: a bitwise check that means something
        assert torch.equal(outs[0], outs[1])
    for (name, a), b in zip(plain.state_dict().items(), fast.state_dict().values()):
        assert torch.equal(a, b), name
    for model in (plain, fast):
        model.eval()
    with torch.no_grad():  # eval mode with autograd off is an inference call: the runner, to rounding
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)
    with torch.enable_grad():  # eval mode with autograd on: the modules, bitwise
        assert torch.equal(fast(x), plain(x))


@needs_ops
def test_attached_nets_copy_and_pickle_without_their_packed_weights(tiny):
    model = prepare_for_inference(tiny("vgg11_bn"))
    x = 50 * torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out = model(x)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert other.features._plan == [] and other.classifier[0]._packed is None
        assert isinstance(other.features, FusedFeatures)
        with torch.inference_mode():
            assert torch.equal(other(x), out)


def test_without_the_oneDNN_ops_attach_warns_once_and_leaves_the_net(tiny, monkeypatch):
    monkeypatch.setattr(guards, "op_exists", lambda path: False)
    monkeypatch.setattr(guards, "_warned", False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", True)
    plain = tiny("vgg11_bn")
    model = copy.deepcopy(plain)
    with pytest.warns(RuntimeWarning, match=r"torch\.ops\.mkldnn\._convolution_pointwise.*plain modules"):
        attach_cpu_inference(model)
    assert type(model.features) is nn.Sequential
    assert all(type(m) is DenseLinear for m in model.classifier if isinstance(m, DenseLinear))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare_for_inference(model)  # once a process
    plain.to(memory_format=torch.channels_last)  # as prepare_for_inference left the other
    x = 50 * torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        assert torch.equal(model(x), plain(x))
