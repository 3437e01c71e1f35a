"""log.jsonl and TensorBoard."""

import importlib.util

import pytest

from support import assert_learned, epochs_of, learning_config, records, tensorboard_scalars
from vgg import training as T


def test_resumed_log_drops_what_came_after_the_checkpoint(tmp_path):
    log = T.RunLog(tmp_path, keep_until_step=None)
    for epoch in (1, 2, 3):
        log.write({"epoch": epoch, "step": 10 * epoch, "val_accuracy": float(epoch)})
    log.close()
    log = T.RunLog(tmp_path, keep_until_step=15)  # killed during epoch 2, after epoch 3 was logged
    for epoch in (2, 3):
        log.write({"epoch": epoch, "step": 10 * epoch, "val_accuracy": 10.0 * epoch})
    log.close()
    assert [(r["epoch"], r["val_accuracy"]) for r in records(tmp_path)] == [(1, 1.0), (2, 20.0), (3, 30.0)]
    if importlib.util.find_spec("tensorboard"):
        assert tensorboard_scalars(tmp_path)["val_accuracy"] == [(1, 1.0), (2, 20.0), (3, 30.0)]


def test_tensorboard_shows_the_log(tmp_path):
    r = T.train(learning_config(tmp_path))
    assert_learned(r.output)  # so that the curves shown are those of a net that learns
    scalars = tensorboard_scalars(r.output)
    for key in ("train_loss", "val_accuracy", "lr"):
        assert scalars[key] == [(e["epoch"], pytest.approx(e[key], rel=1e-6)) for e in epochs_of(r.output)]


def test_a_slow_cpu_epoch_is_announced_from_the_first_batches():
    from vgg.training.runlog import EpochEstimate

    def notes(crop, per_batch, batches=1000, show=True):
        now = [0.0]
        estimate = EpochEstimate(show, crop, batches, clock=lambda: now[0])
        said = []
        for _ in range(10):
            now[0] += per_batch  # a batch takes per_batch seconds
            said.append(estimate.step())
        return [n for n in said if n]

    full = notes(224, 150.0)  # the paper's crop: 1000 batches of 150 s
    assert len(full) == 1  # once
    assert "about 41 h 40 min per epoch on the CPU" in full[0] and "--crop-size 32 --width 0.25" in full[0]
    assert "about 1 min per epoch" in notes(224, 0.01)[0]  # crop 224: always told
    assert notes(32, 0.1) == []  # a small net, a 2-minute epoch: nothing to say
    assert notes(32, 10.0)  # a small net whose epoch takes hours is told too
    assert notes(224, 150.0, show=False) == []  # not on a GPU, not on the other processes
