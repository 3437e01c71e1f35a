"""Big CPU buffers on transparent huge pages (``THP_MEM_ALLOC_ENABLE``, set by ``import vgg``): an
activation of VGG16's size costs a few hundred page faults per call, not tens of thousands (counted
as the process's minor page faults, in a fresh process each)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
pytestmark = pytest.mark.skipif(not THP.is_file() or "[never]" in THP.read_text(),
                                reason="needs a Linux kernel with transparent huge pages")

COUNT = """
import json, resource
import vgg, torch

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(8, 64, 224, 224)  # VGG16's first activation at batch 8: 103 MB
    t.fill_(1.0)
    del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(json.dumps([faults() for _ in range(3)]))
"""
PAGES = 8 * 64 * 224 * 224 * 4 // 4096  # 4 kB pages


def faults(**env) -> list[int]:
    environ = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    run = subprocess.run([sys.executable, "-c", COUNT], capture_output=True, text=True,
                         env={**environ, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_import_vgg_puts_big_buffers_on_huge_pages():
    assert all(f < PAGES // 20 for f in faults())  # 2 MB pages: ~50 per buffer, plus the rest


def test_the_users_setting_wins():
    assert all(f > PAGES // 2 for f in faults(THP_MEM_ALLOC_ENABLE="0"))  # every 4 kB page faulted in
