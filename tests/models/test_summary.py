"""Table 2's numbers: parameter counts and multiply-adds of every configuration."""

import pytest

from vgg.models import layer_table

# SPEC section 1: exact counts with a 1000-class head (C_bn and A-LRN_bn follow from the others:
# BN adds 2 parameters per conv channel, LRN none).
PARAMS = {
    ("A", False): 132_863_336, ("A-LRN", False): 132_863_336, ("B", False): 133_047_848,
    ("C", False): 133_638_952, ("D", False): 138_357_544, ("E", False): 143_667_240,
    ("A", True): 132_868_840, ("A-LRN", True): 132_868_840, ("B", True): 133_053_736,
    ("C", True): 133_638_952 + 8448, ("D", True): 138_365_992, ("E", True): 143_678_248,
}
GMACS = {"A": 7.61, "B": 11.31, "D": 15.47, "E": 19.63}


@pytest.mark.parametrize("config,bn", list(PARAMS))
def test_parameter_counts(config, bn, meta_model):
    model = meta_model(config, batch_norm=bn)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[config, bn]


@pytest.mark.parametrize("config", list(GMACS))
def test_multiply_adds_at_224(config, meta_model):
    macs = sum(r["macs"] for r in layer_table(meta_model(config)))
    assert round(macs / 1e9, 2) == GMACS[config]
