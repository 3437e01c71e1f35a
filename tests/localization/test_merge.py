"""vgg.localization.merge: OverFeat's greedy merge on hand-made cases and against a brute-force
re-implementation, per-class merging, the dense collection step and the top-k guesses."""

import math

import numpy as np
import pytest
import torch

from vgg.localization import boxes as B
from vgg.localization import merge as M


def brute_force_merge(boxes, scores, threshold):
    """The procedure as written: recompute every pair's score each step, merge the best pair."""
    b = np.asarray(boxes, dtype=np.float64)
    clusters = [[i] for i in range(len(b))]

    def score(p, q):
        cp, cq = (p[:2] + p[2:]) / 2, (q[:2] + q[2:]) / 2
        size = ((p[2] - p[0] + p[3] - p[1]) / 2 + (q[2] - q[0] + q[3] - q[1]) / 2) / 2
        ix = max(0.0, min(p[2], q[2]) - max(p[0], q[0]))
        iy = max(0.0, min(p[3], q[3]) - max(p[1], q[1]))
        union = (p[2] - p[0]) * (p[3] - p[1]) + (q[2] - q[0]) * (q[3] - q[1]) - ix * iy
        return math.dist(cp, cq) / size + 1 - ix * iy / union

    while len(clusters) > 1:
        best = min((score(b[c].mean(0), b[d].mean(0)), x, y) for x, c in enumerate(clusters)
                   for y, d in enumerate(clusters) if x < y)
        if best[0] > threshold:
            break
        _, x, y = best
        clusters[x] += clusters.pop(y)
    merged = [(sum(scores[i] for i in c), b[c].mean(0)) for c in clusters]
    merged.sort(key=lambda t: -t[0])
    return np.array([m[1] for m in merged]), np.array([m[0] for m in merged])


def test_match_score_values():
    a = torch.tensor([[0.0, 0, 10, 10]])
    assert M.match_scores(a, a).item() == 0
    # Shifted by a third of the side: IoU 0.5, centres 10/3 apart, mean size 10.
    b = torch.tensor([[10 / 3, 0, 10 + 10 / 3, 10]])
    assert M.match_scores(a, b).item() == pytest.approx(1 / 3 + 0.5)
    # Scale-free: the same picture 7 times larger scores the same.
    assert M.match_scores(a * 7, b * 7).item() == pytest.approx(M.match_scores(a, b).item())
    assert M.match_scores(a, a + 100).item() > 2


def test_two_clusters_give_two_boxes_with_their_means_and_confidences():
    g = torch.Generator().manual_seed(0)
    left = torch.tensor([10.0, 10, 50, 50]) + torch.randn(5, 4, generator=g, dtype=torch.float64)
    right = torch.tensor([100.0, 80, 160, 150]) + torch.randn(4, 4, generator=g, dtype=torch.float64)
    boxes = torch.cat([right[:2], left, right[2:]])  # interleaved: order must not matter
    scores = torch.tensor([0.3, 0.9, 0.1, 0.2, 0.15, 0.25, 0.05, 0.8, 0.4], dtype=torch.float64)
    merged, conf, members = M.greedy_merge(boxes, scores)
    assert merged.shape == (2, 4)
    is_right = torch.tensor([1, 1, 0, 0, 0, 0, 0, 1, 1], dtype=torch.bool)
    # Ranked: the right cluster's scores sum to 2.4, the left's to 0.75.
    torch.testing.assert_close(conf, torch.stack([scores[is_right].sum(), scores[~is_right].sum()]))
    torch.testing.assert_close(merged[0], right.mean(0))
    torch.testing.assert_close(merged[1], left.mean(0))
    assert members.tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0]


def test_weighted_mean_and_threshold():
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 0, 12, 10]], dtype=torch.float64)
    scores = torch.tensor([3.0, 1.0], dtype=torch.float64)
    plain, conf, _ = M.greedy_merge(boxes, scores)
    torch.testing.assert_close(plain, torch.tensor([[1.0, 0, 11, 10]], dtype=torch.float64))
    assert conf.item() == 4
    weighted, _, _ = M.greedy_merge(boxes, scores, weighted=True)
    torch.testing.assert_close(weighted, torch.tensor([[0.5, 0, 10.5, 10]], dtype=torch.float64))
    pair = M.match_scores(boxes[:1], boxes[1:]).item()
    kept, conf, members = M.greedy_merge(boxes, scores, threshold=pair - 1e-9)
    assert len(kept) == 2 and conf.tolist() == [3, 1] and members.tolist() == [0, 1]
    assert len(M.greedy_merge(boxes, scores, threshold=pair)[0]) == 1
    empty = M.greedy_merge(torch.zeros(0, 4), torch.zeros(0))
    assert empty[0].shape == (0, 4) and empty[1].shape == (0,)


@pytest.mark.parametrize("seed,threshold", [(0, 1.0), (1, 0.6), (2, 1.5)])
def test_merge_matches_brute_force(seed, threshold):
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(40, 2, generator=g, dtype=torch.float64) * 200
    boxes = torch.cat([corners, corners + 10 + torch.rand(40, 2, generator=g, dtype=torch.float64) * 60], 1)
    scores = torch.rand(40, generator=g, dtype=torch.float64)
    merged, conf, members = M.greedy_merge(boxes, scores, threshold=threshold)
    want_boxes, want_conf = brute_force_merge(boxes.numpy(), scores.numpy(), threshold)
    assert 1 < len(merged) < 40
    np.testing.assert_allclose(conf.numpy(), want_conf, rtol=1e-12)
    np.testing.assert_allclose(merged.numpy(), want_boxes, rtol=1e-12)
    for k in range(len(merged)):  # each merged box is the mean of its members
        torch.testing.assert_close(boxes[members == k].mean(0), merged[k])


def test_merge_per_class_keeps_classes_apart():
    box = torch.tensor([[0.0, 0, 10, 10]])
    boxes = torch.cat([box, box + 0.5, box, box + 50])
    d = M.merge_per_class(boxes, torch.tensor([0.5, 0.25, 0.6, 0.1]), torch.tensor([3, 3, 1, 3]))
    assert d.labels.tolist() == [3, 1, 3]
    torch.testing.assert_close(d.scores, torch.tensor([0.75, 0.6, 0.1]))
    torch.testing.assert_close(d.boxes[0], torch.tensor([0.25, 0.25, 10.25, 10.25]))
    boxes_c, scores_c = M.best_per_class(d, 5)
    assert scores_c.tolist()[:2] == [float("-inf"), pytest.approx(0.6)] and scores_c[3] == 0.75
    torch.testing.assert_close(boxes_c[3], d.boxes[0])  # the best of class 3, not its last
    assert torch.isnan(boxes_c[0]).all()
    labels, chosen, s = M.top_k_predictions(scores_c, boxes_c, k=5)
    assert labels.tolist() == [3, 1]  # classes without a box are left out
    torch.testing.assert_close(chosen, torch.stack([d.boxes[0], d.boxes[1]]))


def test_top_k_predictions_per_class_and_shared_box():
    scores = torch.tensor([0.1, 0.5, 0.05, 0.3, 0.05])
    class_boxes = torch.arange(20, dtype=torch.float32).reshape(5, 4)
    labels, boxes, s = M.top_k_predictions(scores, class_boxes, k=3)
    assert labels.tolist() == [1, 3, 0]
    torch.testing.assert_close(boxes, class_boxes[[1, 3, 0]])
    torch.testing.assert_close(s, scores[[1, 3, 0]])
    labels, boxes, _ = M.top_k_predictions(scores, torch.tensor([1.0, 2, 3, 4]), k=2)  # SCR
    assert labels.tolist() == [1, 3] and (boxes == torch.tensor([1.0, 2, 3, 4])).all()


def test_dense_boxes_decode_every_window_back_to_the_original_image():
    """Build a PCR map whose every window predicts a known box (in original pixels), then collect."""
    crop, factor, num_classes = 64, (1.25, 1.5), 6
    h, w = 3, 4  # map positions
    windows = B.dense_windows(h, w, crop)  # in the rescaled input
    truth = torch.tensor([[30.0, 20, 80, 60], [10, 10, 40, 50]])  # classes 2 and 4, original pixels
    params = torch.zeros(num_classes, 4, h, w)
    for c, box in zip((2, 4), truth):
        params[c] = B.encode(B.rescale_boxes(box, factor).expand(h, w, 4), windows).permute(2, 0, 1)
    scores = torch.full((num_classes, h, w), 0.01)
    scores[2, 1, 2], scores[4, 0, 0] = 0.9, 0.5
    d = M.dense_boxes(params, scores, crop_size=crop, factor=factor, k=2)
    assert len(d.boxes) == 2 * h * w and set(d.labels.tolist()) == {2, 4}
    for c, box in zip((2, 4), truth):
        torch.testing.assert_close(d.boxes[d.labels == c], box.expand(h * w, 4), atol=1e-4, rtol=0)
    assert d.scores[(d.labels == 2)].max() == pytest.approx(0.9)
    merged = M.merge_per_class(*d)
    assert merged.labels.tolist() == [2, 4]  # every window agrees: one box per class
    torch.testing.assert_close(merged.scores, torch.tensor([0.9 + 0.11, 0.5 + 0.11]))
    # The mirrored input: the boxes come back unmirrored; SCR: one (4, H, W) map for all classes.
    width = 4 * 32 + crop - 32
    mirrored = B.hflip_boxes(B.rescale_boxes(truth[0], factor), width).expand(h, w, 4)
    scr = B.encode(mirrored, windows).permute(2, 0, 1)
    d = M.dense_boxes(scr, scores, crop_size=crop, factor=factor, k=1, flipped=True, width=width)
    assert d.labels.unique().tolist() == [2]
    torch.testing.assert_close(d.boxes, truth[0].expand(h * w, 4), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="does not fit"):
        M.dense_boxes(params[:, :, :2], scores, crop_size=crop)


def test_top_classes_by_maximum_over_positions():
    s = torch.zeros(4, 2, 2)
    s[0] = 0.2  # high everywhere but never the highest
    s[1, 0, 0] = 0.9
    s[3, 1, 1] = 0.5
    assert M.top_classes(s, 2).tolist() == [1, 3]
