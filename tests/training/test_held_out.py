"""The test of a run's best checkpoint on the test split (``vgg train --test``)."""

import pytest

from vgg import distributed
from vgg import training as T


def test_every_process_tests_its_share_and_rank_0_reports_the_whole(tmp_path, monkeypatch):
    # Under torchrun no process waits for another's test evaluation (NCCL's timeout is 10 minutes):
    # each evaluates every world_size-th image, rank 0 merges the counts. The gather is simulated.
    from support import tiny_config

    config = tiny_config(tmp_path, limit=40, epochs=1, init="glorot")
    T.train(config)
    whole = T.run_test(config, tmp_path / "run", distributed.Context(), None, 5)
    assert whole["images"] == 40 and 0 < whole["top1_accuracy"] < 100
    parts = []
    monkeypatch.setattr(distributed, "all_gather_objects", lambda part: parts.append(part) or [part])
    for rank in (0, 1):
        out = T.run_test(config, tmp_path / "run", distributed.Context(rank=rank, world_size=2), None, 5)
        assert (out is None) == (rank == 1)
    assert [p["images"] for p in parts] == [20, 20]
    merged = T.held_out.merge_test_shares(parts)
    for key in ("images", "scales", "flip"):
        assert merged[key] == whole[key], key
    for key in ("top1_accuracy", "top5_accuracy"):
        assert merged[key] == pytest.approx(whole[key], abs=1e-9), key
