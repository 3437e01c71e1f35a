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


REUSE = """
import json, resource, sys
import torch
from vgg.engine import keep_freed_memory

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for value in (1.0, 2.0):  # two activations alive at once, as a conv's input and output
        t = torch.empty(8, 64, 224, 224)
        t.fill_(value)
        u = torch.empty(8, 64, 224, 224)
        u.fill_(value)
        del t, u
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

kept = keep_freed_memory()
print(json.dumps({"kept": kept, "faults": [faults() for _ in range(4)]}))
"""


def reuse(**env) -> dict:
    run = subprocess.run([sys.executable, "-c", REUSE], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_activations_are_reused_without_page_faults():
    """After the first forward's buffers are freed, the next ones are the same memory: no faults."""
    out = reuse()
    assert out["kept"]
    assert out["faults"][0] > 100  # the first forward faults its buffers in
    assert all(f < 20 for f in out["faults"][1:]), out["faults"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_the_users_opt_out_leaves_glibcs_defaults():
    out = reuse(VGG_KEEP_FREED_MEMORY="0")
    assert not out["kept"]
    assert all(f > 100 for f in out["faults"]), out["faults"]  # every buffer a fresh mmap again


def test_attaching_the_engine_keeps_freed_memory(monkeypatch):
    from vgg import engine
    from vgg.models import create_model

    calls = []
    monkeypatch.setattr(engine, "keep_freed_memory", lambda: calls.append(1) or True)
    engine.prepare_for_inference(create_model("vgg11", 10, width=0.125))
    assert calls
