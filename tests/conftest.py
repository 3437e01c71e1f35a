"""Suite-wide test settings."""

import os

import pytest
import torch

# The training runs of the suite take float32 steps on every machine, also where the CPU has native
# bf16 (where `vgg train` takes bf16 autocast by default): their numbers and what they assert must not
# depend on the machine CI draws. The bf16 paths have their own tests, which simulate such a CPU
# (monkeypatching vgg.distributed.cpu_has_native_bf16). Subprocesses inherit the setting.
os.environ["VGG_CPU_BF16"] = "0"


def pytest_collection_modifyitems(config, items):
    # Tests marked `cuda` run only where there is a GPU (the GPU check runs them there).
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def loc_runs(tmp_path_factory):
    """A classifier and a localisation net trained on a folder of cluttered garments with boxes
    (tests/support.py: loc_training); shared by the localisation tests of training and evaluation."""
    from support import loc_training

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return loc_training(tmp_path_factory.mktemp("loc"))
    finally:
        torch.set_num_threads(threads)
