"""log.jsonl and TensorBoard."""

import importlib.util

import pytest

from support import epochs_of, records, tensorboard_scalars, tiny_config
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
    r = T.train(tiny_config(tmp_path, epochs=2))
    scalars = tensorboard_scalars(r.output)
    for key in ("train_loss", "val_accuracy", "lr"):
        assert scalars[key] == [(e["epoch"], pytest.approx(e[key], rel=1e-6)) for e in epochs_of(r.output)]
