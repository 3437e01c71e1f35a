"""Training tests run tiny nets: one thread is fastest for them."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny nets run fastest on one thread, and the suite shares the machine with other work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
