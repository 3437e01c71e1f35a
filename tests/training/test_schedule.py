"""The plateau schedule (Sec. 3.1)."""

import math

from vgg import training as T


def test_plateau_divides_by_ten_at_most_three_times():
    p = T.Plateau(patience=2, threshold=0.0, drop=0.1, max_drops=3)
    accs = [50, 60, 60, 59, 61, 61, 61, 61, 61, 61, 61, 61, 61]
    drops = [p.step(a) for a in accs]
    assert [i for i, d in enumerate(drops) if d] == [3, 6, 8]  # after 2 epochs without a gain
    assert p.drops == 3 and math.isclose(p.factor, 1e-3)
    assert not any(p.step(0) for _ in range(10))  # never a fourth time
    q = T.Plateau(patience=1, threshold=0.5)
    assert [q.step(a) for a in (80, 81, 81.3)] == [False, False, True]  # +0.3 < threshold
