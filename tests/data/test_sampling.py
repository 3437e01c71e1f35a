"""Tests for vgg.data.sampling: the counter-based per-sample randomness."""

from __future__ import annotations

import numpy as np

from vgg import data as D


def test_sample_uniform_is_uniform_and_keyed():
    u = D.sample_uniform(0, 0, np.arange(100000), 0)
    assert 0 <= u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01
    assert np.histogram(u, 10, (0, 1))[0].min() > 9500
    for other in (D.sample_uniform(1, 0, np.arange(100000), 0), D.sample_uniform(0, 1, np.arange(100000), 0),
                  D.sample_uniform(0, 0, np.arange(100000), 1)):
        assert abs(np.corrcoef(u, other)[0, 1]) < 0.02
    z = D.sample_normal(0, 0, np.arange(100000), 0)
    assert abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
