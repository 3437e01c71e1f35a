"""torch.hub entry points for every network of Table 1.

    model = torch.hub.load("<this repo or its folder>", "vgg16", pretrained=True)   # torchvision's weights
    model = torch.hub.load(path, "vgg16_c", source="local", num_classes=10, crop_size=32, width=0.25)

Each entry builds an untrained network with :func:`vgg.create_model`'s keyword arguments, or with
``pretrained=True`` loads torchvision's published ImageNet weights (vgg11/13/16/19 and ``_bn``) via
``vgg.weights.load_any`` (SHA-256-checked, cached under $VGG_HOME).
"""

import os as _os
import sys as _sys

dependencies = ["torch", "numpy", "safetensors", "tqdm"]

# The package lives in src/; torch.hub puts only the repository root on sys.path.
_SRC = _os.path.join(_os.path.dirname(_os.path.abspath(__file__)), "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

from vgg.models import NAMES as _NAMES  # noqa: E402
from vgg.models import create_model as _create_model  # noqa: E402
from vgg.weights import PUBLISHED as _PUBLISHED  # noqa: E402
from vgg.weights import load_any as _load_any  # noqa: E402


def _entry(name: str):
    def entry(pretrained: bool = False, progress: bool = True, **kwargs):
        if not pretrained:
            return _create_model(name, **kwargs)
        if name not in _PUBLISHED:
            raise ValueError(f"no pretrained weights are published for {name}; published: "
                             f"{', '.join(_PUBLISHED)}")
        if kwargs:
            raise ValueError(f"pretrained {name} has torchvision's architecture; got {sorted(kwargs)}")
        return _load_any(name, progress=progress)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"VGG {name} (Simonyan & Zisserman, ICLR 2015, Table 1). pretrained=True loads "
                     f"torchvision's ImageNet weights{'' if name in _PUBLISHED else ' (none published)'}; "
                     "otherwise keyword arguments go to vgg.create_model (num_classes, crop_size, width, "
                     "dropout, init, in_channels).")
    return entry


for _name in [usual + bn for usual in _NAMES.values() for bn in ("", "_bn")]:
    globals()[_name] = _entry(_name)
