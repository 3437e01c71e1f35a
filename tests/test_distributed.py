"""torchrun set-up and device choice: one GPU per process, the autocast of each device."""

import pytest
import torch

from vgg import distributed


@pytest.fixture
def two_processes(monkeypatch):
    """This process as local rank 1 of 2 under torchrun, on a machine whose GPUs are mocked (only the
    calls that ask about them); joining the group or taking a GPU is recorded, not done."""
    for key, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(key, value)
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda dev: calls.append(("set_device", dev)))
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda **kw: calls.append(("init", kw["backend"])))

    def gpus(n):
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        return calls

    return gpus


def test_more_processes_than_gpus_is_a_clear_error_before_nccl(two_processes):
    calls = two_processes(1)
    with pytest.raises(ValueError, match=r"2 processes on this machine \(local rank 1\) but 1 CUDA "
                                         r"device\(s\): NCCL needs one GPU per process.*nproc_per_node=1"):
        distributed.setup("auto")
    assert calls == []  # neither a GPU taken nor the group joined


def test_one_named_gpu_for_several_processes_is_a_clear_error(two_processes):
    calls = two_processes(2)
    with pytest.raises(ValueError, match="--device cuda:0 puts all 2 processes of this machine on one GPU"):
        distributed.setup("cuda:0")
    assert calls == []


def test_each_process_takes_the_gpu_of_its_local_rank(two_processes):
    calls = two_processes(2)
    ctx = distributed.setup("cuda")
    assert ctx.device == torch.device("cuda", 1) and (ctx.rank, ctx.world_size) == (1, 2)
    assert calls == [("set_device", torch.device("cuda", 1)), ("init", "nccl")]


def test_autocast_takes_effect_on_the_amp_devices_only(monkeypatch):
    cpu = torch.device("cpu")
    with distributed.autocast(cpu, True):  # the CPU runs float32 whatever amp says
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(distributed, "AMP_DEVICES", ("cuda", "cpu"))  # as the CPU tests of amp do
    with distributed.autocast(cpu, True):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
    with distributed.autocast(cpu, False):
        assert not torch.is_autocast_enabled("cpu")


ZEN4 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n"
ZEN3 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\nbugs\t\t: bf16_emulation_is_not_a_flag\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_native_bf16_is_read_from_the_cpu_flags():
    assert distributed.cpu_has_native_bf16(ZEN4) and distributed.cpu_has_native_bf16(GRAVITON3)
    # only the flags line counts, not another line that happens to contain the word
    assert not distributed.cpu_has_native_bf16(ZEN3)
    assert not distributed.cpu_has_native_bf16("model name\t: AMD EPYC\n")


def test_training_steps_take_bf16_on_cuda_and_on_cpus_with_native_bf16(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda native=native: native)
        assert distributed.training_amp(cpu, True) == native
        assert distributed.training_amp(cuda, True)
        assert not distributed.training_amp(cpu, False) and not distributed.training_amp(cuda, False)


def test_vgg_cpu_bf16_0_treats_the_cpu_as_one_without(monkeypatch):
    # The suite runs with it (tests/conftest.py); a given cpuinfo is read as it is.
    monkeypatch.setenv("VGG_CPU_BF16", "0")
    assert not distributed.cpu_has_native_bf16() and distributed.cpu_has_native_bf16(ZEN4)
    assert not distributed.training_amp(torch.device("cpu"), True)


def test_cpu_name_and_flags_come_from_the_first_processor(monkeypatch):
    info = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
            "model name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512f avx512_bf16\n\n"
            "processor\t: 1\ncpu family\t: 25\nmodel name\t: Other\n")
    monkeypatch.setattr(distributed, "machine_cpuinfo", lambda: info)
    assert distributed.cpu_name() == "AMD EPYC (family 26)"  # Zen 5; "AMD EPYC" alone would not say
    assert {"avx2", "avx512_bf16"} <= distributed.cpu_flags() and "Other" not in distributed.cpu_flags()
    assert distributed.cpu_has_native_bf16(info)
    monkeypatch.setattr(distributed, "machine_cpuinfo", lambda: "Features\t: fp asimd bf16\n")
    assert distributed.cpu_name() == "" and distributed.cpu_flags() == {"fp", "asimd", "bf16"}
