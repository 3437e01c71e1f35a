"""The loop's branches that CUDA takes, run on the CPU: bf16 autocast steps and validation,
torch.compile (inductor), channels_last; and what only a GPU can run (marked ``cuda``)."""

import os
import subprocess
import sys

import pytest
import torch

from support import TINY, assert_close_relative, assert_learned, epochs_of, learning_config, lively
from vgg import data, distributed
from vgg import training as T
from vgg.models import Normalization
from vgg.training import loop


@pytest.fixture
def runs(monkeypatch):
    """Every Run the loop sets up, as it set it up."""
    made, real = [], loop.set_up
    monkeypatch.setattr(loop, "set_up", lambda *a, **k: made.append(real(*a, **k)) or made[-1])
    return made


def output_dtypes(monkeypatch, layer) -> set:
    """(training mode, output dtype) of every call of ``layer(run.model)`` in the next run, filled in
    as the run goes."""
    seen: set = set()
    real_train_epoch = loop.train_epoch

    def train_epoch(run):
        if not seen:
            layer(run.model).register_forward_hook(lambda m, i, out: seen.add((m.training, out.dtype)))
        real_train_epoch(run)

    monkeypatch.setattr(loop, "train_epoch", train_epoch)
    return seen


def test_bf16_autocast_training_and_validation_on_the_cpu(tmp_path, monkeypatch, runs):
    monkeypatch.setattr(distributed, "AMP_DEVICES", ("cuda", "cpu"))  # CUDA's default, on the CPU
    seen = output_dtypes(monkeypatch, lambda model: model.features[0])
    r = T.train(learning_config(tmp_path, "amp"))
    assert runs[0].amp and seen == {(True, torch.bfloat16), (False, torch.bfloat16)}  # steps and validation
    assert_learned(r.output)
    assert all(p.dtype == torch.float32 for p in runs[0].model.parameters())  # the weights stay float32


@pytest.mark.parametrize("amp", [True, False])
def test_cpu_steps_take_bf16_where_the_cpu_has_it_and_validation_stays_float32(tmp_path, monkeypatch, runs,
                                                                               amp):
    # A CPU with native bf16 (simulated, so that any machine runs the test): the steps run under
    # autocast unless --no-amp; validation takes the float32 engine either way.
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: True)
    # fc6: a module call in the steps and in validation's engine alike
    seen = output_dtypes(monkeypatch, lambda model: model.classifier[0])
    r = T.train(learning_config(tmp_path, f"amp{amp}", amp=amp))
    steps = torch.bfloat16 if amp else torch.float32
    assert runs[0].amp == amp and seen == {(True, steps), (False, torch.float32)}
    assert_learned(r.output)


@pytest.mark.slow  # inductor compiles C++ kernels for the forward and backward (its cache serves reruns)
def test_compiled_training_on_the_cpu_learns_and_equals_eager(tmp_path, runs):
    # --compile as on CUDA, with inductor's CPU backend; skipped where inductor cannot compile.
    import torch._dynamo
    import torch._inductor.exc

    try:
        compiled = T.train(learning_config(tmp_path, "compiled", compile=True))
    except (torch._dynamo.exc.BackendCompilerFailed, torch._inductor.exc.InductorError) as e:
        pytest.skip(f"inductor cannot compile here: {type(e).__name__}: {str(e)[:300]}")
    finally:
        net = runs[0].net if runs else None
        torch._dynamo.reset()
    assert isinstance(net, torch._dynamo.eval_frame.OptimizedModule)
    assert_learned(compiled.output)
    eager = T.train(learning_config(tmp_path, "eager"))
    a, b = epochs_of(compiled.output)[0], epochs_of(eager.output)[0]
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)  # same steps, other kernels
    assert a["train_accuracy"] == b["train_accuracy"]


def test_channels_last_step_equals_the_contiguous_one(tmp_path, runs):
    g = torch.Generator().manual_seed(0)
    dataset = data.TensorDataset(torch.randint(0, 256, (16, 3, 28, 28), generator=g, dtype=torch.uint8),
                                 torch.arange(16) % 10, [str(i) for i in range(10)], "toy", "train")
    grads = {}
    for channels_last in (False, True):
        model = lively("B", num_classes=10, dropout=0.0).train()
        model.normalization = Normalization((120.0, 110.0, 100.0), (60.0, 60.0, 60.0))
        if channels_last:
            model.to(memory_format=torch.channels_last)
        images, labels = next(iter(data.train_batches(
            dataset, augment=data.Augment(32, (32, 36)), normalization=model.normalization, batch_size=16,
            seed=0, epoch=0, channels_last=channels_last)))
        assert images.is_contiguous(memory_format=torch.channels_last) == channels_last
        sums = T.forward_backward(model, T.CLASSIFICATION, images, labels, 8, False, None)
        assert sums[2] == 16
        grads[channels_last] = torch.cat([p.grad.flatten() for p in model.parameters()]) * 16  # summed loss
    assert_close_relative(grads[True], grads[False], rtol=1e-4)
    # The loop puts the net in channels_last when asked (CUDA's default, and the CPU's).
    T.train(learning_config(tmp_path, "cl", epochs=1, limit=64, channels_last=True))
    assert runs[0].channels_last and runs[0].model.features[0].weight.is_contiguous(
        memory_format=torch.channels_last)


@pytest.mark.cuda
def test_torchrun_with_more_processes_than_gpus_says_so(tmp_path):
    if torch.cuda.device_count() > 1:
        pytest.skip("needs a machine with exactly one GPU")
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "vgg", "train", *[a for a in TINY if a not in ("--device", "cpu")],
                        "--limit", "32", "--epochs", "1", "--output", str(tmp_path / "two")],
                       capture_output=True, text=True, timeout=180,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0
    assert "2 processes on this machine" in r.stderr and "NCCL needs one GPU per process" in r.stderr
