"""Top-1 / top-5 error, per-class accuracy and the confusion matrix."""

import pytest
import torch

from vgg import evaluation as ev


def test_topk_on_a_hand_made_set():
    probs = torch.tensor([
        [0.50, 0.20, 0.10, 0.08, 0.07, 0.05],  # label 0: top-1
        [0.05, 0.10, 0.40, 0.20, 0.15, 0.10],  # label 3: 2nd -> top-5 only
        [0.30, 0.25, 0.20, 0.12, 0.08, 0.05],  # label 5: 6th -> neither
        [0.01, 0.02, 0.03, 0.04, 0.10, 0.80],  # label 4: 2nd
        [0.30, 0.25, 0.20, 0.12, 0.08, 0.05],  # label 4: 5th -> top-5 only (not top-4)
    ])
    labels = torch.tensor([0, 3, 5, 4, 4])
    assert ev.topk_correct(probs, labels, 1).tolist() == [True, False, False, False, False]
    assert ev.topk_correct(probs, labels, 5).tolist() == [True, True, False, True, True]
    m = ev.metrics(probs, labels, list("abcdef"))
    assert m["images"] == 5
    assert m["top1_error"] == pytest.approx(80.0) and m["top5_error"] == pytest.approx(20.0)
    assert m["top1_accuracy"] == pytest.approx(20.0) and m["top5_accuracy"] == pytest.approx(80.0)
    assert m["per_class"]["a"] == {"images": 1, "accuracy": 100.0}
    assert m["per_class"]["d"] == {"images": 1, "accuracy": 0.0}
    assert m["per_class"]["b"] == {"images": 0, "accuracy": None}
    assert m["confusion"][3][2] == 1 and m["confusion"][4][5] == 1 and m["confusion"][5][0] == 1
    assert m["confusion"][4][0] == 1 and sum(map(sum, m["confusion"])) == 5
    # with fewer than five classes top-5 is every class: always right
    assert ev.topk_correct(probs[:, :3].softmax(1), torch.tensor([2, 1, 0, 2, 1]), 5).all()
