"""The GPU's step guard and cuDNN scope, run on the CPU: no non-finite update between two host
syncs, the net a run stops with is the net before its first non-finite step; autotuning only
while the training steps run."""

import pytest
import torch

from support import tiny_config
from vgg import data
from vgg import training as T
from vgg.training import guard, loop


def sgd_with_guard(params):
    optimizer = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "weight_decay": 0.1}],
                                lr=0.1, momentum=0.9)
    return optimizer, guard.StepGuard(optimizer, torch.device("cpu"))


def test_step_guard_skips_every_update_from_the_first_non_finite_step_on():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(3, 2))]
    optimizer, g = sgd_with_guard(params)

    def step(bad=False):
        for p in params:
            p.grad = torch.randn_like(p)
        if bad:
            params[1].grad[1, 0] = float("inf")
        g.check(optimizer)
        optimizer.step()

    step(), step()
    after_two = [p.detach().clone() for p in params]
    momentum = [optimizer.state[p]["momentum_buffer"].clone() for p in params]
    assert g.flag.item() == 0 and g.first_bad_step(2) == 2
    step(bad=True), step(), step()  # the flag stays set: the finite steps after it are skipped too
    assert all(torch.equal(p, q) for p, q in zip(params, after_two))
    assert all(torch.equal(optimizer.state[p]["momentum_buffer"], m) for p, m in zip(params, momentum))
    assert g.flag.item() == 1 and g.first_bad_step(5) == 3
    # Control: without the guard the same step spoils the net.
    optimizer.found_inf = None
    step(bad=True)
    assert not torch.isfinite(params[1]).all()


def poisoned_run(tmp_path, monkeypatch, device, **kw):
    """A 3-epoch run (8 steps an epoch, a checkpoint at global step 12) whose loss is NaN at global
    step 13 only (epoch 2, batch 5), meeting the host every 10 steps as on CUDA; returns the Run it
    stopped with and the error."""
    calls, runs = {"n": 0}, []
    real_loss, real_set_up = T.Classification.loss, loop.set_up

    def loss(self, logits, labels):
        calls["n"] += 1  # 8 steps, 1 val batch, then epoch 2: call 14 is global step 13
        out = real_loss(self, logits, labels)
        return out * float("nan") if calls["n"] == 14 else out

    monkeypatch.setattr(T.Classification, "loss", loss)
    monkeypatch.setattr(loop, "set_up", lambda *a, **k: runs.append(real_set_up(*a, **k)) or runs[-1])
    config = tiny_config(tmp_path, batch_size=8, epochs=3, save_every=12, dropout=0.0, device=device, **kw)
    g = torch.Generator().manual_seed(0)
    train, val = (data.TensorDataset(torch.randint(0, 256, (64, 1, 28, 28), generator=g, dtype=torch.uint8),
                                     torch.arange(64) % 10, [str(i) for i in range(10)], "toy", split)
                  for split in ("train", "val"))
    with pytest.raises(T.NonFiniteLoss) as e:
        T.train(config, datasets=(train, val))
    return runs[0], e.value


def assert_stopped_before_the_bad_step(run, error):
    state = T.read_state(run.out / "state.safetensors", tensors=False)
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 4, 12)
    saved = T.read_state(run.out / "state.safetensors")["tensors"]
    # No BN here: the net in memory is exactly the one saved after step 12, though steps 13 (NaN)
    # and 14-16 (finite again) ran before the host saw the NaN at the end of the epoch.
    for name, value in run.model.state_dict().items():
        assert torch.equal(value.cpu(), saved[f"model.{name}"]), name
    assert "at epoch 2, batch 5" in str(error)  # where it happened, not where the host saw it
    assert run.step_guard is not None and run.sync_every == 10


def test_a_guarded_run_stops_with_the_net_before_its_first_non_finite_step(tmp_path, monkeypatch):
    monkeypatch.setattr(guard, "sync_every", lambda device: 10)  # CUDA's cadence, on the CPU
    run, error = poisoned_run(tmp_path, monkeypatch, "cpu")
    assert_stopped_before_the_bad_step(run, error)


@pytest.mark.cuda
def test_a_cuda_run_stops_with_the_net_before_its_first_non_finite_step(tmp_path, monkeypatch):
    run, error = poisoned_run(tmp_path, monkeypatch, "cuda")
    assert_stopped_before_the_bad_step(run, error)


def test_cudnn_autotuning_is_on_for_the_training_steps_only(tmp_path, monkeypatch):
    seen = {"steps": set(), "validation": set()}
    real_fb, real_validate = loop.forward_backward, loop.validate

    def forward_backward(*a, **k):
        seen["steps"].add(torch.backends.cudnn.benchmark)
        return real_fb(*a, **k)

    def validate(*a, **k):
        seen["validation"].add(torch.backends.cudnn.benchmark)
        return real_validate(*a, **k)

    monkeypatch.setattr(loop, "forward_backward", forward_backward)
    monkeypatch.setattr(loop, "validate", validate)
    before = torch.backends.cudnn.benchmark
    T.train(tiny_config(tmp_path, limit=16, epochs=2))
    # Dense evaluation meets every image size of a data set: each would be autotuned again.
    assert seen == {"steps": {True}, "validation": {before}}
    assert torch.backends.cudnn.benchmark == before
