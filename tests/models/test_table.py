"""Table 1 as data: the names of the configurations."""

import pytest

import vgg
from vgg.models import parse_arch


@pytest.mark.parametrize("name,expected", [
    ("vgg16", ("D", False)), ("VGG16_BN", ("D", True)), ("d", ("D", False)), ("D_bn", ("D", True)),
    ("vgg11_lrn", ("A-LRN", False)), ("A-LRN", ("A-LRN", False)), ("a_lrn_bn", ("A-LRN", True)),
    ("vgg16_c", ("C", False)), ("c", ("C", False)), ("vgg19", ("E", False)), ("B", ("B", False)),
])
def test_names(name, expected):
    assert parse_arch(name) == expected


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown architecture 'vgg17'.*vgg16_bn"):
        vgg.create_model("vgg17")
