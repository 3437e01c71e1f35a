"""Suite-wide test settings."""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # Tests marked `cuda` run only where there is a GPU (the GPU check runs them there).
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
